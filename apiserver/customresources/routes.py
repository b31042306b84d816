"""The paths of custom resources and their discovery, answered by the same handlers as the built-in kinds.

Custom paths are matched after every built-in route: `/apis/{group}/{version}[/namespaces/{namespace}]/
{plural}[/{name}[/{subresource}]]`. Each request finds its kind in the registry (established CRDs only);
a path no CRD serves is a 404 as any unknown path. While its CRD is being deleted a resource refuses
creates, with kube-apiserver's 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from podnet.apiserver import status
from podnet.apiserver.customresources.definitions import CustomResource
from podnet.apiserver.handlers import RESOURCE_KEY, Resources, respond
from podnet.apiserver.scale import ScaleRoutes

from podnet.api.kinds import Kind, by_path

_VERBS = sorted(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"])


def _resource_entries(kind: Kind) -> list[dict]:
    custom = kind.custom
    assert isinstance(custom, CustomResource)
    entry = {"name": kind.plural, "singularName": kind.singular, "namespaced": kind.namespaced, "kind": kind.kind,
             "verbs": _VERBS, "storageVersionHash": ""}
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.categories:
        entry["categories"] = list(kind.categories)
    entries = [entry]
    if kind.has_status:
        entries.append({"name": f"{kind.plural}/status", "singularName": "", "namespaced": kind.namespaced,
                        "kind": kind.kind, "verbs": ["get", "patch", "update"]})
    if custom.scale is not None:
        entries.append({"name": f"{kind.plural}/scale", "singularName": "", "namespaced": kind.namespaced,
                        "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
    return entries


def group_entry(name: str, versions: list[str]) -> dict:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def add_routes(app: web.Application, resources: Resources) -> None:
    registry = resources.crds

    def kind_for(request: web.Request, *, namespaced_path: bool) -> Kind:
        info = request.match_info
        kind = registry.lookup(info["group"], info["version"], info["plural"])
        if kind is None or (namespaced_path and not kind.namespaced) or (
                not namespaced_path and kind.namespaced and "name" in info):
            raise status.path_not_found(request.path)
        return kind

    def collection(namespaced_path: bool) -> dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]:
        async def list_or_watch(request: web.Request) -> web.StreamResponse:
            kind = kind_for(request, namespaced_path=namespaced_path)
            return await resources.list_or_watch(request, kind, all_namespaces=kind.namespaced and not namespaced_path)

        async def create(request: web.Request) -> web.StreamResponse:
            kind = kind_for(request, namespaced_path=namespaced_path)
            if kind.namespaced and not namespaced_path:
                raise status.method_not_allowed(request.method, request.path)
            if kind.custom.terminating:  # type: ignore[union-attr]
                raise status.ApiError(status.status(
                    405, "MethodNotAllowed", "create not allowed while custom resource definition is terminating",
                    {"group": kind.group, "kind": kind.plural}))
            return await resources.create(request, kind)

        async def delete_collection(request: web.Request) -> web.StreamResponse:
            return await resources.delete_collection(request, kind_for(request, namespaced_path=namespaced_path))

        return {"GET": list_or_watch, "POST": create, "DELETE": delete_collection}

    def item() -> dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]:
        def bound(handler: Callable[..., Awaitable[web.StreamResponse]]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            async def route(request: web.Request) -> web.StreamResponse:
                return await handler(request, kind_for(request, namespaced_path="namespace" in request.match_info))
            return route

        return {"GET": bound(resources.get), "PUT": bound(resources.update), "PATCH": bound(resources.patch),
                "DELETE": bound(resources.delete)}

    scale = ScaleRoutes(resources)

    def subresource() -> dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]:
        """`/status` and `/scale`, where the version's subresources enable them."""
        def bound(on_status: Callable[..., Awaitable[web.StreamResponse]],
                  on_scale: Callable[..., Awaitable[web.StreamResponse]], **options: str) -> Callable:
            async def route(request: web.Request) -> web.StreamResponse:
                kind = kind_for(request, namespaced_path="namespace" in request.match_info)
                name = request.match_info["subresource"]
                if name == "status" and kind.has_status:
                    return await on_status(request, kind, **options)
                if name == "scale" and kind.custom.scale is not None:  # type: ignore[union-attr]
                    return await on_scale(request, kind)
                raise status.path_not_found(request.path)
            return route

        return {"GET": bound(resources.get, scale.get), "PUT": bound(resources.update, scale.update, subresource="status"),
                "PATCH": bound(resources.patch, scale.patch, subresource="status")}

    def dispatch(methods: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]) -> Callable:
        """Every method goes through here, so that a path no CRD serves is a 404 whatever the method, as on
        kube-apiserver; a method a served path has not is a 405."""
        async def route(request: web.Request) -> web.StreamResponse:
            info = request.match_info
            request[RESOURCE_KEY] = info["plural"]
            handler = methods.get(request.method)
            if handler is not None:
                return await handler(request)
            if (registry.lookup(info["group"], info["version"], info["plural"]) is None
                    and by_path(info["group"], info["version"], info["plural"]) is None):
                raise status.path_not_found(request.path)
            raise status.method_not_allowed(request.method, request.path)
        return route

    base = "/apis/{group}/{version}"
    namespaced = base + "/namespaces/{namespace}/{plural}"
    for path, methods in (
        (namespaced, collection(True)),
        (namespaced + "/{name}", item()),
        (namespaced + "/{name}/{subresource}", subresource()),
        (base + "/{plural}", collection(False)),
        (base + "/{plural}/{name}", item()),
        (base + "/{plural}/{name}/{subresource}", subresource()),
    ):
        app.router.add_route("*", path, dispatch(methods))

    async def group(request: web.Request) -> web.Response:
        name = request.match_info["group"]
        versions = registry.groups().get(name)
        if versions is None:
            raise status.path_not_found(request.path)
        return respond(request, {"kind": "APIGroup", "apiVersion": "v1"} | group_entry(name, versions))

    async def group_version(request: web.Request) -> web.Response:
        name, version = request.match_info["group"], request.match_info["version"]
        kinds = registry.kinds_of(name, version)
        if not kinds:
            raise status.path_not_found(request.path)
        resources_listed = [entry for kind in kinds for entry in _resource_entries(kind)]
        return respond(request, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{name}/{version}",
                                 "resources": resources_listed})

    for path, handler in (("/apis/{group}", group), (base, group_version)):
        app.router.add_get(path, handler)
        app.router.add_get(path + "/", handler)
