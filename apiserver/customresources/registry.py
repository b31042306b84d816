"""The CustomResourceDefinitions in force, and the controllers kube-apiserver runs for them.

`Registry.run()` follows the CRDs in storage through the watch hub (as the RBAC cache follows roles), so
every API server serves the custom resources of every established CRD with no storage read per request;
`lookup(group, version, plural)` is what the custom resource routes ask. On each CRD it sees, it does what
apiextensions-apiserver's naming, establishing and finalizer controllers do (they run inside
kube-apiserver too): the names accepted or refused and Established set (definitions.accepted_status), and
a CRD being deleted loses every object it defined, then its cleanup finalizer, then leaves storage. Every
API server runs them; writes carry the revision they read, so two servers never undo each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time

from podnet.apiserver.codec import to_storage
from podnet.apiserver.customresources import definitions, documents
from podnet.apiserver.following import follow
from podnet.apiserver.storage.base import Conflict, NotFound, StorageError, Store
from podnet.apiserver.watch import DELETED, Change, WatchHub

from podnet.api.kinds import Kind, lookup
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)
_CLEANUP_RETRY = 0.5


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _version_priority(version: str) -> tuple:
    """kube-aware version order: GA before beta before alpha, higher numbers first, then the rest by name."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    return (stage, -int(match.group(1)), -int(match.group(3) or 0), version)


class Registry:
    def __init__(self, store: Store, hub: WatchHub):
        self.store = store
        self.hub = hub
        self._crd_kind = lookup("customresourcedefinitions")
        self._prefix = f"/registry/{self._crd_kind.storage_resource}/"
        self.crds: dict[str, dict] = {}
        self._served: dict[tuple[str, str, str], Kind] = {}
        self._made: dict[str, tuple[str, list[Kind]]] = {}
        self._cleaning: dict[str, asyncio.Task] = {}

    # --- what the routes ask ------------------------------------------------------------------------

    def lookup(self, group: str, version: str, plural: str) -> Kind | None:
        return self._served.get((group, version, plural))

    def stored_kinds(self) -> list[Kind]:
        """One kind per CRD whose objects may be in storage (for a namespace's deletion)."""
        seen: dict[str, Kind] = {}
        for kind in self._served.values():
            seen.setdefault(kind.storage_resource, kind)
        return list(seen.values())

    def groups(self) -> dict[str, list[str]]:
        """Each custom group's served versions, preferred first."""
        versions: dict[str, set[str]] = {}
        for group, version, _ in self._served:
            versions.setdefault(group, set()).add(version)
        return {group: sorted(found, key=_version_priority) for group, found in sorted(versions.items())}

    def kinds_of(self, group: str, version: str) -> list[Kind]:
        return sorted((k for (g, v, _), k in self._served.items() if (g, v) == (group, version)), key=lambda k: k.plural)

    def openapi_documents(self) -> dict[str, tuple[bytes, str]]:
        return documents.encoded(self._served_by_group_version())

    def openapi_v2(self) -> bytes:
        return documents.v2_encoded(tuple(sorted(self._served.values(), key=lambda k: (k.group, k.version, k.plural))))

    def _served_by_group_version(self) -> dict[str, tuple[Kind, ...]]:
        grouped: dict[str, list[Kind]] = {}
        for kind in self._served.values():
            grouped.setdefault(kind.group_version_path.lstrip("/"), []).append(kind)
        return {key: tuple(sorted(kinds, key=lambda k: k.plural)) for key, kinds in grouped.items()}

    # --- following storage --------------------------------------------------------------------------

    async def run(self) -> None:
        identity = {"apiVersion": self._crd_kind.api_version, "kind": self._crd_kind.kind}
        await follow(self.store, self.hub, self._prefix, identity, "CRD registry", self._listed, self._changed)

    async def _listed(self, crds: dict[str, dict]) -> None:
        self.crds = crds
        self._refresh()
        for crd in list(self.crds.values()):
            await self._reconcile_logged(crd)

    async def _changed(self, change: Change) -> None:
        if change.type == DELETED:
            self.crds.pop(change.key, None)
        else:
            self.crds[change.key] = change.object
        self._refresh()
        if change.type != DELETED:
            await self._reconcile_logged(change.object)

    async def close(self) -> None:
        await cancel_and_wait(*self._cleaning.values())

    def _refresh(self) -> None:
        """The kinds served, each CRD's made again only when it changed (its printers and documents are
        cached by identity)."""
        served: dict[tuple[str, str, str], Kind] = {}
        made: dict[str, tuple[str, list[Kind]]] = {}
        for key, crd in self.crds.items():
            revision = str(crd["metadata"].get("resourceVersion"))
            previous = self._made.get(key)
            kinds = previous[1] if previous is not None and previous[0] == revision else definitions.served_kinds(crd)
            made[key] = (revision, kinds)
            for kind in kinds:
                served.setdefault((kind.group, kind.version, kind.plural), kind)
        self._made = made
        self._served = served

    # --- the controllers ----------------------------------------------------------------------------

    def _key(self, crd: dict) -> str:
        return self._prefix + str(crd["metadata"]["name"])

    async def _reconcile_logged(self, crd: dict) -> None:
        """A CRD the controllers cannot handle is logged and left as it is; the others go on."""
        try:
            await self._reconcile(crd)
        except (StorageError, OSError, TimeoutError):
            raise  # the follower relists
        except Exception:
            log.exception("cannot reconcile CRD %s", (crd.get("metadata") or {}).get("name"))

    async def _reconcile(self, crd: dict) -> None:
        name = str(crd["metadata"].get("name"))
        if crd["metadata"].get("deletionTimestamp"):
            if name not in self._cleaning or self._cleaning[name].done():
                self._cleaning[name] = asyncio.create_task(self._clean_up(name), name=f"CRD cleanup {name}")
            return
        others = [other for other in self.crds.values() if other is not crd]
        status = definitions.accepted_status(crd, others, _now())
        if status != crd.get("status"):
            await self._write(crd | {"status": status})

    async def _write(self, crd: dict) -> None:
        revision = int(crd["metadata"]["resourceVersion"])
        with contextlib.suppress(Conflict, NotFound):  # a newer state is on its way through the watch
            await self.store.update(self._key(crd), to_storage(crd), revision)

    async def _clean_up(self, name: str) -> None:
        """The finalizer controller: deletes every object of the CRD, then lets the CRD go."""
        while True:
            crd = self.crds.get(self._prefix + name)
            if crd is None or definitions.CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
                return
            try:
                remaining = await self._delete_objects(crd)
                if remaining:
                    await asyncio.sleep(_CLEANUP_RETRY)
                    continue
                await self._release(crd)
                return
            except (StorageError, OSError, TimeoutError) as e:
                log.warning("cleanup of CRD %s failed, retrying: %s", name, e)
                await asyncio.sleep(_CLEANUP_RETRY)

    async def _delete_objects(self, crd: dict) -> int:
        """Deletes the CRD's objects; those with finalizers are marked deleted and counted as remaining."""
        spec = definitions.spec_of(crd)
        prefix = f"/registry/{spec.get('group')}/{(spec.get('names') or {}).get('plural')}/"
        kvs, _ = await self.store.list(prefix)
        remaining = 0
        for kv in kvs:
            obj = json.loads(kv.value)
            metadata = obj.get("metadata") or {}
            if metadata.get("finalizers"):
                remaining += 1
                if not metadata.get("deletionTimestamp"):
                    metadata["deletionTimestamp"] = _now()
                    with contextlib.suppress(Conflict, NotFound):
                        await self.store.update(kv.key, to_storage(obj), kv.mod_revision)
                continue
            with contextlib.suppress(Conflict, NotFound):
                await self.store.delete(kv.key, kv.mod_revision)
        return remaining

    async def _release(self, crd: dict) -> None:
        finalizers = [f for f in crd["metadata"].get("finalizers") or [] if f != definitions.CLEANUP_FINALIZER]
        revision = int(crd["metadata"]["resourceVersion"])
        with contextlib.suppress(Conflict, NotFound):
            if finalizers:
                released = json.loads(json.dumps(crd))
                released["metadata"]["finalizers"] = finalizers
                await self.store.update(self._key(crd), to_storage(released), revision)
            else:
                await self.store.delete(self._key(crd), revision)
