"""/openapi/v2 and /openapi/v3 (with its per-group-version documents), built by podnet/api/openapi/documents.py.

kube-apiserver also offers /openapi/v2 as protobuf, which client-go asks for first; podnet answers JSON
to whoever accepts it and 406 to a client that accepts protobuf only (kubectl then goes on without the
v2 document: it reads v3 for everything it needs). A `?hash=` that is not the current one is redirected
to the current link, as kube-apiserver does, so a client holding an old index gets fresh schemas.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from podnet.apiserver import status

from podnet.api.openapi import documents

_JSON = "application/json"


def _accepts_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    if not accept:
        return True
    media_types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return any(m in (_JSON, "application/*", "*/*") for m in media_types)


def _not_acceptable(request: web.Request) -> status.ApiError:
    return status.ApiError(status.status(
        406, "NotAcceptable",
        f"only the following media types are accepted: {_JSON}; got {request.headers.get('Accept', '')!r}",
    ))


async def _v2(request: web.Request) -> web.Response:
    if not _accepts_json(request):
        raise _not_acceptable(request)
    return web.Response(body=request.app[_CUSTOM_V2](), content_type=_JSON)


def _no_custom_documents() -> dict[str, tuple[bytes, str]]:
    return {}


_CUSTOM_DOCUMENTS = web.AppKey("custom_openapi_documents", Callable[[], dict[str, tuple[bytes, str]]])
_CUSTOM_V2 = web.AppKey("openapi_v2_with_custom_resources", Callable[[], bytes])


def _built_in_v2() -> bytes:
    return documents.encode(documents.v2())


async def _v3_index(request: web.Request) -> web.Response:
    custom = request.app[_CUSTOM_DOCUMENTS]()
    return web.Response(body=documents.encode(documents.v3_index(custom)), content_type=_JSON)


async def _v3_group_version(request: web.Request) -> web.Response:
    key = request.match_info["group_version"]
    encoded = documents.v3_encoded().get(key) or request.app[_CUSTOM_DOCUMENTS]().get(key)
    if encoded is None:
        raise status.path_not_found(request.path)
    body, digest = encoded
    asked = request.query.get("hash")
    if asked is not None and asked != digest:
        raise web.HTTPMovedPermanently(f"/openapi/v3/{key}?hash={digest}")
    headers = {"Etag": f'"{digest}"'}
    if asked is not None:
        headers["Cache-Control"] = "public, immutable"
    return web.Response(body=body, content_type=_JSON, headers=headers)


def add_routes(app: web.Application,
               custom_documents: Callable[[], dict[str, tuple[bytes, str]]] = _no_custom_documents,
               v2: Callable[[], bytes] = _built_in_v2) -> None:
    """`custom_documents`: the encoded v3 documents of the custom resources' group versions, as they are now;
    `v2`: the encoded v2 document, custom resources in it."""
    app[_CUSTOM_DOCUMENTS] = custom_documents
    app[_CUSTOM_V2] = v2
    app.router.add_get("/openapi/v2", _v2)
    app.router.add_get("/openapi/v3", _v3_index)
    app.router.add_get("/openapi/v3/", _v3_index)
    app.router.add_get("/openapi/v3/{group_version:apis?/.+}", _v3_group_version)
