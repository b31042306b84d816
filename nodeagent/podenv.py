"""The environment of a pod's programs, as the kubelet builds it (pkg/kubelet/kubelet_pods.go
makeEnvironmentVariables): `envFrom` sources first, in order, each key of a ConfigMap or Secret (with its
`prefix`) that is a valid variable name; then `env`, in order, later entries overriding earlier ones, with
`valueFrom.configMapKeyRef` / `secretKeyRef` read from the pod's namespace. A reference to a ConfigMap, a
Secret or a key that does not exist, unless marked `optional`, keeps the container from starting, in the
kubelet's words (`configmap "app" not found`, `couldn't find key mode in ConfigMap default/app`).

The Services' variables (KUBERNETES_SERVICE_HOST, ...) follow, where the container sets no variable of that
name (nodeagent/serviceenv.py).

`resolve` is pure; `PodEnvironment` keeps the ConfigMaps, Secrets and Services in informer caches (so a pod's env
costs no API request) and is the agent's hook: `container_env(pod, container)` gives the variables, or
raises after recording the failure as the kubelet does (a Warning event `Failed`, `Error: ...`); the
container then waits (`CreateContainerConfigError`) until a ConfigMap or Secret of its namespace is written.
A virtual pod has no program to hand them to: `port_environments` gives each of its TCP container ports its
container's variables, which the port's agnhost-like server lists at `/env`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping

from podnet.nodeagent.pods.netns import ContainerConfigError
from podnet.nodeagent.serviceenv import with_services

from podnet.api import base64data
from podnet.client import ApiClient, Informer
from podnet.events import WARNING, EventRecorder

log = logging.getLogger(__name__)

# validation.IsEnvVarName: what a key must look like to become a variable through envFrom.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class EnvError(ContainerConfigError):
    """A reference the container's environment needs is missing (CreateContainerConfigError)."""


def _data(obj: dict, what: str) -> dict[str, str]:
    """A ConfigMap's data and binaryData, or a Secret's data decoded, as text."""
    if what == "Secret":
        return {k: base64data.decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    values = {k: base64data.decode(v).decode(errors="replace") for k, v in (obj.get("binaryData") or {}).items()}
    return {**values, **(obj.get("data") or {})}


def _source(objects: Mapping[str, dict], what: str, namespace: str, ref: dict) -> dict[str, str] | None:
    name = ref.get("name") or ""
    obj = objects.get(f"{namespace}/{name}")
    if obj is None:
        if ref.get("optional"):
            return None
        raise EnvError(f'{what.lower()} "{name}" not found')
    return _data(obj, what)


def resolve(pod: dict, container: dict, configmaps: Mapping[str, dict],
            secrets: Mapping[str, dict]) -> list[tuple[str, str]]:
    """The container's variables in the order the kubelet sets them; raises EnvError."""
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            values = _source(configmaps, "ConfigMap", namespace, source["configMapRef"])
        elif "secretRef" in source:
            values = _source(secrets, "Secret", namespace, source["secretRef"])
        else:
            continue
        prefix = source.get("prefix") or ""
        for key, value in (values or {}).items():
            if _ENV_NAME.match(prefix + key):
                env[prefix + key] = value
    for entry in container.get("env") or []:
        name = entry.get("name")
        if not name:
            continue
        value_from = entry.get("valueFrom")
        if not value_from:
            env[name] = str(entry.get("value") or "")
            continue
        for field, what, objects in (("configMapKeyRef", "ConfigMap", configmaps), ("secretKeyRef", "Secret", secrets)):
            ref = value_from.get(field)
            if ref is None:
                continue
            values = _source(objects, what, namespace, ref)
            if values is None:
                break
            key = ref.get("key") or ""
            if key in values:
                env[name] = values[key]
            elif not ref.get("optional"):
                raise EnvError(f"couldn't find key {key} in {what} {namespace}/{ref.get('name')}")
    return list(env.items())


class PodEnvironment:
    """The ConfigMaps and Secrets pods refer to, cached; the agent starts pods only once they have synced.
    `on_change(namespace)` is told when one is written, so that containers waiting for it can start."""

    def __init__(self, client: ApiClient, events: EventRecorder, on_change: Callable[[str], None]):
        self.configmaps = Informer(client, "configmaps")
        self.secrets = Informer(client, "secrets")
        self.services = Informer(client, "services")  # the Services pods find in their environment
        self.events = events
        self.on_change = on_change
        for informer in (self.configmaps, self.secrets):
            informer.add_handler(self._written)

    def _written(self, event: str, old: dict | None, new: dict | None) -> None:
        if new is not None:
            self.on_change((new.get("metadata") or {}).get("namespace") or "")

    async def run(self) -> None:
        await asyncio.gather(self.configmaps.run(), self.secrets.run(), self.services.run())

    async def after_synced(self, then: Awaitable[None]) -> None:
        """Runs `then` (the pods' informer) once the caches hold what pods may refer to."""
        await asyncio.gather(self.configmaps.wait_synced(), self.secrets.wait_synced(), self.services.wait_synced())
        await then

    def container_env(self, pod: dict, container: dict) -> tuple[tuple[str, str], ...]:
        """The container's variables; raises EnvError after recording it as the kubelet does."""
        try:
            own = resolve(pod, container, self.configmaps.store, self.secrets.store)
            return tuple(with_services(own, pod, self.services.store.values()))
        except EnvError as exc:
            meta = pod.get("metadata") or {}
            log.warning("pod %s/%s: container %s: %s", meta.get("namespace"), meta.get("name"), container.get("name"), exc)
            self.events.record(pod, WARNING, "Failed", f"Error: {exc}",
                               field_path=f"spec.containers{{{container.get('name')}}}")
            raise

    def port_environments(self, pod: dict) -> dict[int, tuple[tuple[str, str], ...]] | None:
        """Each TCP container port's variables (its container's); None, after the kubelet's event, while a
        container's references are missing, as its container would wait for them."""
        environments: dict[int, tuple[tuple[str, str], ...]] = {}
        for container in (pod.get("spec") or {}).get("containers") or []:
            ports = [p.get("containerPort") for p in container.get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
            if not ports:
                continue
            try:
                env = self.container_env(pod, container)
            except EnvError:
                return None
            environments.update(dict.fromkeys(ports, env))
        return environments
