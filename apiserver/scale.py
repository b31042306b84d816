"""The `scale` subresource of Deployments, ReplicaSets and StatefulSets, as kube-apiserver serves it.

`GET .../deployments/{name}/scale` answers an `autoscaling/v1` Scale: the object's identity, `spec.replicas`,
and `status.replicas` with `status.selector` (the label selector in its string form, which is how
autoscalers and `kubectl scale` read it). PUT takes a Scale, PATCH a patch of one (merge, strategic or
JSON patch); either writes the new `spec.replicas` into the object through the ordinary update path
(validation, generation, resourceVersion precondition when the Scale carries one) and answers the Scale
of the updated object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from podnet.apiserver import status
from podnet.apiserver.codec import JSON, from_storage
from podnet.apiserver.handlers import _UPDATE_ATTEMPTS, _dry_run, _manager, _Raced, respond
from podnet.apiserver.status import Cause

from podnet.api import selectors
from podnet.api.kinds import KINDS, Kind

if TYPE_CHECKING:
    from collections.abc import Callable

    from podnet.apiserver.handlers import Resources

SCALABLE = frozenset({"Deployment", "ReplicaSet", "StatefulSet"})
SCALE = Kind("Scale", "autoscaling", "v1", "scale", True)


def discovery(kind: Kind) -> list[dict]:
    """The discovery entry of the kind's scale subresource, if it has one."""
    if kind.kind not in SCALABLE:
        return []
    return [{"name": f"{kind.plural}/scale", "singularName": "", "namespaced": kind.namespaced,
             "group": SCALE.group, "version": SCALE.version, "kind": SCALE.kind, "verbs": ["get", "patch", "update"]}]


def _custom_paths(kind: Kind) -> dict | None:
    """A custom resource's scale paths (specReplicasPath, statusReplicasPath, labelSelectorPath)."""
    paths = getattr(kind.custom, "scale", None)
    return paths if isinstance(paths, dict) else None


def _at(obj: dict, path: str) -> object:
    value: object = obj
    for part in path.strip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _set_at(obj: dict, path: str, value: object) -> None:
    *parents, last = path.strip(".").split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[last] = value


def scale_of(obj: dict, kind: Kind | None = None) -> dict:
    """The Scale of an object; a custom resource's reads the paths its CRD names (its selector is already a
    string there)."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    paths = _custom_paths(kind) if kind is not None else None
    if paths is not None:
        replicas, status_replicas = _at(obj, paths.get("specReplicasPath", "")), _at(obj, paths.get("statusReplicasPath", ""))
        found = _at(obj, paths["labelSelectorPath"]) if paths.get("labelSelectorPath") else None
        selector = found if isinstance(found, str) else ""
    else:
        replicas, status_replicas = spec.get("replicas"), (obj.get("status") or {}).get("replicas")
        try:
            selector = selectors.to_string(selectors.from_label_selector(spec.get("selector")))
        except selectors.SelectorError:
            selector = ""
    scale_status: dict = {"replicas": status_replicas or 0}
    if selector:
        scale_status["selector"] = selector
    scale_spec = {"replicas": replicas} if replicas else {}
    return {"kind": SCALE.kind, "apiVersion": SCALE.api_version,
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": scale_spec, "status": scale_status}


def _check_scale(scale: object, name: str) -> dict:
    """ValidateScale, and the request's own sanity: a Scale of this object."""
    if not isinstance(scale, dict):
        raise status.bad_request("the body of a Scale must be an object")
    if scale.get("kind", SCALE.kind) != SCALE.kind or scale.get("apiVersion", SCALE.api_version) != SCALE.api_version:
        raise status.bad_request(f"the body must be a Scale of {SCALE.api_version}, not {scale.get('apiVersion')}/{scale.get('kind')}")
    meta = scale.get("metadata") or {}
    if not isinstance(meta, dict) or meta.get("name", name) != name:
        raise status.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
    replicas = (scale.get("spec") or {}).get("replicas", 0) if isinstance(scale.get("spec"), dict | None) else None
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise status.invalid(SCALE, name, [Cause("spec.replicas", "FieldValueInvalid",
                                                 f"Invalid value: {replicas}: must be greater than or equal to 0")])
    return scale


class ScaleRoutes:
    """The scale subresource routes over the server's `Resources` (its storage, authorization and
    update path)."""

    def __init__(self, resources: Resources):
        self.resources = resources

    def add_routes(self, app: web.Application) -> None:
        bind = self.resources._bind
        for kind in KINDS:
            if kind.kind in SCALABLE:
                path = kind.path("{namespace}", "{name}") + "/scale"
                app.router.add_get(path, bind(self.get, kind))
                app.router.add_put(path, bind(self.update, kind))
                app.router.add_patch(path, bind(self.patch, kind))

    async def get(self, request: web.Request, kind: Kind) -> web.Response:
        namespace, name = request.match_info.get("namespace"), request.match_info["name"]
        self.resources._authorize(request, "get", kind, namespace)
        current = await self.resources._current(kind, namespace, name)
        return respond(request, scale_of(from_storage(current.value, current.mod_revision), kind))

    async def update(self, request: web.Request, kind: Kind) -> web.Response:
        namespace, name = request.match_info.get("namespace"), request.match_info["name"]
        self.resources._authorize(request, "update", kind, namespace)
        body, _ = await self.resources._read_body(request)
        scale = _check_scale(body, name)
        return await self._write(request, kind, namespace, name, lambda current: scale)

    async def patch(self, request: web.Request, kind: Kind) -> web.Response:
        namespace, name = request.match_info.get("namespace"), request.match_info["name"]
        self.resources._authorize(request, "patch", kind, namespace)
        body, media_type = await self.resources._read_body(request, patch=True)
        if media_type == JSON:
            raise status.unsupported_media_type(media_type)

        def patched(current: dict) -> dict:
            return _check_scale(self.resources._patched(SCALE, current, body, media_type), name)

        return await self._write(request, kind, namespace, name, patched)

    async def _write(self, request: web.Request, kind: Kind, namespace: str | None, name: str,
                     new_scale: Callable[[dict], dict]) -> web.Response:
        """Sets spec.replicas from the Scale that `new_scale` makes of the current one."""
        dry_run = _dry_run(request)
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self.resources._current(kind, namespace, name)
            obj = from_storage(current.value, current.mod_revision)
            scale = new_scale(scale_of(obj, kind))
            expected = (scale.get("metadata") or {}).get("resourceVersion")
            if expected not in (None, "") and expected != str(current.mod_revision):
                raise status.conflict(kind, name)
            paths = _custom_paths(kind)
            _set_at(obj, paths.get("specReplicasPath", ".spec.replicas") if paths else ".spec.replicas",
                    (scale.get("spec") or {}).get("replicas", 0))
            try:
                # Recorded as a write through the scale subresource, as kube-apiserver records `kubectl scale`.
                updated = await self.resources._write_update(kind, namespace, name, current, obj, "scale", dry_run=dry_run,
                                                             manager=_manager(request))
            except _Raced:
                continue
            return respond(request, scale_of(updated, kind))
        raise status.conflict(kind, name, "the object is being modified too often; please try again")
