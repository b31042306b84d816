"""A netns pod's volumes, made on the node as the kubelet makes them, for the pod's mount namespace to bind.

Kinds: configMap, secret (`items`, `defaultMode`, `optional`), downwardAPI (labels, annotations,
metadata.name/namespace/uid), projected (configMap, secret, downwardAPI and serviceAccountToken sources),
emptyDir and hostPath. The files of the first four are written as the kubelet's atomic writer writes them:
a timestamped directory `..<time>` holding the payload, a `..data` symlink to it, and one symlink per
top-level name into `..data`; an update makes a new directory and swaps `..data` with one rename, so a
reader sees the old files or the new, never half of each. When a ConfigMap or Secret changes, the volumes
that show it are written again.

A serviceAccountToken is asked for as the kubelet asks: a TokenRequest (POST
.../serviceaccounts/<name>/token) bound to the pod, with the source's audience and expiry, and asked for
again once 80% of its lifetime has passed.

`render` is pure (the pod, its volume, the objects it refers to → file paths, bytes and modes);
`PodVolumes` is the agent's side: informer caches, the API client, the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from podnet.nodeagent.pods.netns import ContainerConfigError

from podnet.api import base64data
from podnet.client import ApiClient, ApiError, Informer

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644
DEFAULT_TOKEN_SECONDS = 3600  # a serviceAccountToken source's expirationSeconds when it names none
TOKEN_RETRY = 10.0  # seconds before asking again for a token that could not be had
DATA_LINK = "..data"
# The volume kinds whose files are written here (and that the pod sees read-only).
WRITTEN = ("configMap", "secret", "downwardAPI", "projected")


class VolumeError(ContainerConfigError):
    """A volume cannot be set up yet (its ConfigMap, Secret or token is missing): the pod waits."""


@dataclass(frozen=True, slots=True)
class File:
    data: bytes
    mode: int


Tokens = Mapping[str, str]  # "<volume>/<path>" -> a token for that serviceAccountToken source


def _values(obj: dict, what: str) -> dict[str, bytes]:
    if what == "secret":
        return {k: base64data.decode(v) for k, v in (obj.get("data") or {}).items()}
    values = {k: base64data.decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    return values | {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}


def _object_files(volume: str, source: dict, what: str, objects: Mapping[str, dict], namespace: str,
                  default_mode: int) -> dict[str, File]:
    name = source.get("secretName" if what == "secret" and "secretName" in source else "name") or ""
    obj = objects.get(f"{namespace}/{name}")
    if obj is None:
        if source.get("optional"):
            return {}
        raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {what.lower()} "{name}" not found')
    values = _values(obj, what)
    items = source.get("items")
    if not items:
        return {key: File(value, default_mode) for key, value in values.items()}
    files = {}
    for item in items:
        key = item.get("key")
        if key not in values:
            if source.get("optional"):
                continue
            kind = "configmap references non-existent config key" if what == "configMap" else "references non-existent secret key"
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {kind}: {key}')
        files[str(item.get("path") or key)] = File(values[key], int(item.get("mode", default_mode)))
    return files


def _field(pod: dict, path: str) -> str:
    meta = pod.get("metadata") or {}
    for field_name in ("labels", "annotations"):
        if path == f"metadata.{field_name}":
            pairs = sorted((meta.get(field_name) or {}).items())
            return "\n".join(f'{k}="{v}"' for k, v in pairs)
        prefix = f"metadata.{field_name}['"
        if path.startswith(prefix) and path.endswith("']"):
            return str((meta.get(field_name) or {}).get(path[len(prefix):-2], ""))
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
              "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
              "status.podIP": (pod.get("status") or {}).get("podIP"),
              "status.hostIP": (pod.get("status") or {}).get("hostIP")}
    return str(simple.get(path) or "")


def _downward_files(pod: dict, source: dict, default_mode: int) -> dict[str, File]:
    return {str(item["path"]): File(_field(pod, str((item.get("fieldRef") or {}).get("fieldPath") or "")).encode(),
                                    int(item.get("mode", default_mode)))
            for item in source.get("items") or [] if item.get("path") and item.get("fieldRef")}


def render(pod: dict, volume: dict, configmaps: Mapping[str, dict], secrets: Mapping[str, dict],
           tokens: Tokens) -> dict[str, File]:
    """The files of one written volume (relative path → content and mode); raises VolumeError."""
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    name = str(volume.get("name"))
    if "configMap" in volume:
        source = volume["configMap"]
        return _object_files(name, source, "configMap", configmaps, namespace, int(source.get("defaultMode", DEFAULT_MODE)))
    if "secret" in volume:
        source = volume["secret"]
        return _object_files(name, source, "secret", secrets, namespace, int(source.get("defaultMode", DEFAULT_MODE)))
    if "downwardAPI" in volume:
        source = volume["downwardAPI"]
        return _downward_files(pod, source, int(source.get("defaultMode", DEFAULT_MODE)))
    projected = volume.get("projected") or {}
    mode = int(projected.get("defaultMode", DEFAULT_MODE))
    files: dict[str, File] = {}
    for source in projected.get("sources") or []:
        if "configMap" in source:
            files |= _object_files(name, source["configMap"], "configMap", configmaps, namespace, mode)
        elif "secret" in source:
            files |= _object_files(name, {"secretName": source["secret"].get("name"), **source["secret"]}, "secret",
                                   secrets, namespace, mode)
        elif "downwardAPI" in source:
            files |= _downward_files(pod, source["downwardAPI"], mode)
        elif "serviceAccountToken" in source:
            path = str(source["serviceAccountToken"].get("path") or "token")
            files[path] = File(tokens[f"{name}/{path}"].encode(), mode)
    return files


def refresh_after(volume: dict) -> float | None:
    """Seconds until the volume's tokens are asked for again (80% of the shortest lifetime, as the
    kubelet's token manager); None without token sources."""
    lifetimes = [int(s.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS) for s in token_sources(volume)]
    return 0.8 * min(lifetimes) if lifetimes else None


def token_sources(volume: dict) -> list[dict]:
    return [s["serviceAccountToken"] for s in (volume.get("projected") or {}).get("sources") or []
            if isinstance(s, dict) and "serviceAccountToken" in s]


def write_atomically(directory: Path, files: Mapping[str, File], group: int | None, now: datetime.datetime) -> None:
    """Writes `files` under `directory` as the kubelet's atomic writer does; `group` (fsGroup) owns them and
    may read them."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = f"..{now:%Y_%m_%d_%H_%M_%S.%f}"
    data_dir = directory / stamp
    data_dir.mkdir(mode=0o755)
    for relative, file in files.items():
        path = data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_bytes(file.data)
        mode = file.mode
        if group is not None:
            os.chown(path, 0, group)
            mode |= 0o440
        os.chmod(path, mode)
    if group is not None:
        os.chown(data_dir, 0, group)
    temporary = directory / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(stamp)
    previous = os.readlink(directory / DATA_LINK) if (directory / DATA_LINK).is_symlink() else None
    temporary.replace(directory / DATA_LINK)
    top = {Path(relative).parts[0] for relative in files}
    for name in top:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{name}")
    if previous is not None and previous != stamp:
        shutil.rmtree(directory / previous, ignore_errors=True)
    for entry in directory.iterdir():  # names no longer in the payload
        if not entry.name.startswith("..") and entry.name not in top:
            entry.unlink()


class PodVolumes:
    """The volumes of the agent's netns pods. `configmaps` and `secrets` are the informers the pods'
    environments already use (a write to one refreshes the volumes that show it); `client` asks for
    tokens."""

    def __init__(self, configmaps: Informer, secrets: Informer, client: ApiClient,
                 now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)):
        self._configmaps = configmaps
        self._secrets = secrets
        self.client = client
        self.now = now
        self._pods: dict[Path, dict] = {}  # a pod's volumes directory -> the pod, for refreshes
        self._rotations: dict[Path, list[asyncio.Task]] = {}  # its volumes' token renewals
        for informer in (configmaps, secrets):
            informer.add_handler(self._written)

    @property
    def configmaps(self) -> Mapping[str, dict]:
        return self._configmaps.store  # replaced whole on a relist: never kept

    @property
    def secrets(self) -> Mapping[str, dict]:
        return self._secrets.store

    def _written(self, event: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        self.refresh((obj.get("metadata") or {}).get("namespace") or "")

    async def prepare(self, pod: dict, directory: Path) -> dict[str, Path]:
        """Makes every volume of the pod under `directory`; their paths by name. Raises VolumeError."""
        spec = pod.get("spec") or {}
        paths = {}
        written = []
        for volume in spec.get("volumes") or []:
            name = str(volume.get("name"))
            path = directory / name
            if any(kind in volume for kind in WRITTEN):
                tokens = await self._tokens(pod, volume)
                written.append((path, render(pod, volume, self.configmaps, self.secrets, tokens)))
            elif "emptyDir" in volume:
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)
            elif "hostPath" in volume:
                source = volume["hostPath"]
                path = Path(str(source.get("path")))
                if source.get("type") == "DirectoryOrCreate":
                    path.mkdir(parents=True, exist_ok=True)
                elif not path.exists():
                    raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: '
                                      f"{path} does not exist")
            else:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : volume type not supported by podnet')
            paths[name] = path
        group = (spec.get("securityContext") or {}).get("fsGroup")
        for path, files in written:
            write_atomically(path, files, group, self.now())
        self._pods[directory] = pod
        for task in self._rotations.pop(directory, []):
            task.cancel()
        self._rotations[directory] = [asyncio.ensure_future(self._renew_tokens(pod, volume, directory, group))
                                      for volume in spec.get("volumes") or [] if refresh_after(volume) is not None]
        return paths

    async def _renew_tokens(self, pod: dict, volume: dict, directory: Path, group: int | None) -> None:
        """Writes the volume again with fresh tokens each time its tokens near their end, until the pod's
        volumes are gone."""
        wait = refresh_after(volume) or DEFAULT_TOKEN_SECONDS
        path = directory / str(volume.get("name"))
        while True:
            await asyncio.sleep(wait)
            if not path.exists():
                return
            try:
                files = render(pod, volume, self.configmaps, self.secrets, await self._tokens(pod, volume))
            except VolumeError as exc:
                log.warning("volume %s of %s/%s: %s", volume.get("name"), pod["metadata"].get("namespace"),
                            pod["metadata"].get("name"), exc)
                wait = TOKEN_RETRY
                continue
            write_atomically(path, files, group, self.now())
            wait = refresh_after(volume) or DEFAULT_TOKEN_SECONDS

    async def _tokens(self, pod: dict, volume: dict) -> dict[str, str]:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        tokens = {}
        for source in token_sources(volume):
            request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": int(source.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name"), "uid": meta.get("uid")}}}
            path = f"/api/v1/namespaces/{meta.get('namespace')}/serviceaccounts/{account}/token"
            try:
                answer = await self.client.request("POST", path, body=request, content_type="application/json")
            except ApiError as exc:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{volume.get("name")}" : failed to fetch token: '
                                  f"{exc}") from None
            tokens[f"{volume.get('name')}/{source.get('path') or 'token'}"] = str((answer.get("status") or {}).get("token"))
        return tokens

    def refresh(self, namespace: str) -> None:
        """A ConfigMap or Secret of `namespace` changed: the written volumes of its pods are written again
        (token sources keep the token they have)."""
        for directory, pod in list(self._pods.items()):
            if not directory.exists():  # the pod was deleted
                del self._pods[directory]
                for task in self._rotations.pop(directory, []):
                    task.cancel()
                continue
            if (pod.get("metadata") or {}).get("namespace") != namespace:
                continue
            group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                if not any(kind in volume for kind in WRITTEN):
                    continue
                path = directory / str(volume.get("name"))
                tokens = {f"{volume.get('name')}/{s.get('path') or 'token'}":
                          (path / DATA_LINK / str(s.get("path") or "token")).read_text() for s in token_sources(volume)}
                try:
                    files = render(pod, volume, self.configmaps, self.secrets, tokens)
                except VolumeError as exc:  # deleted meanwhile: the kubelet keeps the last files
                    log.info("volume %s of %s/%s: %s", volume.get("name"), namespace, pod["metadata"].get("name"), exc)
                    continue
                write_atomically(path, files, group, self.now())
