"""The REST handlers: Kubernetes' verbs on Kubernetes' paths for every kind in podnet.api.kinds.

One `Resources` object serves every kind; a route's kind and scope are bound when the routes are
added. Handlers raise `ApiError` (see status.py) for every failure; app.py turns it into the response.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import copy
import datetime
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from podnet.apiserver import (
    claims,
    deletion,
    fieldvalidation,
    ingresskinds,
    noderestriction,
    protobuf,
    status,
    tables,
    yamlbody,
)
from podnet.apiserver.audit import log as audit_log
from podnet.apiserver.auth import User
from podnet.apiserver.claimstore import ClaimStore, ClaimTaken
from podnet.apiserver.codec import (
    JSON,
    MSGPACK,
    DecodeError,
    decode,
    encode,
    from_storage,
    to_storage,
)
from podnet.apiserver.config import ApiServerConfig
from podnet.apiserver.controllers.allocators import Admission, AllocationError, IpAllocations
from podnet.apiserver.customresources.registry import Registry
from podnet.apiserver.customresources.rules import (
    before_delete,
    default_object,
    served_form,
    spec_changed,
    stored_form,
    strategic_merge_refused,
    validate_object,
    validate_object_update,
)
from podnet.apiserver.limitadmission import LimitRangeAdmission
from podnet.apiserver.managedfields import manager_name, record_update, server_side_apply
from podnet.apiserver.namespaces import NamespaceLifecycle, NamespaceState
from podnet.apiserver.omitempty import omit_empty_metadata
from podnet.apiserver.patch import (
    PatchConflict,
    PatchError,
    TooManyOperations,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from podnet.apiserver.podsecurityadmission import PodSecurityAdmission
from podnet.apiserver.quotaadmission import QuotaAdmission
from podnet.apiserver.rbac import escalation
from podnet.apiserver.rbac.authorizer import Attributes, Decision
from podnet.apiserver.rbac.authorizer import authorize as rbac_authorize
from podnet.apiserver.rbac.cache import RbacCache
from podnet.apiserver.selection import Filter, make_filter
from podnet.apiserver.serviceaddresses import external_ips_denied, parse_cidrs
from podnet.apiserver.status import ApiError, Cause
from podnet.apiserver.storage.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    FutureRevision,
    Guard,
    KeyValue,
    NotFound,
    StorageError,
    Store,
    Unavailable,
)
from podnet.apiserver.tokens import admission as service_account_admission
from podnet.apiserver.validation import Limits
from podnet.apiserver.watch import (
    ADDED,
    BOOKMARK,
    DELETED,
    ERROR,
    MODIFIED,
    Change,
    Subscription,
    WatchEnded,
    WatchHub,
    encode_event,
)

from podnet.api.keys import object_key
from podnet.api.kinds import KINDS, Kind, lookup

log = logging.getLogger(__name__)
# The kinds whose registry strategy in kube-apiserver 1.31 starts metadata.generation at 1 and counts spec
# changes; Pods, Services, Nodes, Namespaces and Leases have none.
GENERATION_KINDS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "NetworkPolicy", "CronJob",
                              "Ingress", "IngressClass", "CustomResourceDefinition"})

T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
YAML = "application/yaml"

# Namespaces Kubernetes refuses to delete.
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
# generateName suffixes: Kubernetes' alphabet without vowels and look-alikes (utilrand.String).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_UPDATE_ATTEMPTS = 5

USER_KEY = web.RequestKey("user", User)
VERB_KEY = web.RequestKey("verb", str)
RESOURCE_KEY = web.RequestKey("resource", str)
# The user a request's writes are made for, for checks deep in the write path (RBAC escalation); each
# request is its own task, so this is per request.
_WRITER: contextvars.ContextVar[User | None] = contextvars.ContextVar("writer", default=None)
# The request being served, for admission steps deep in the write path that add warnings to it.
_REQUEST: contextvars.ContextVar[web.Request | None] = contextvars.ContextVar("request", default=None)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def storage_key(kind: Kind, namespace: str | None, name: str) -> str:
    if kind.namespaced:
        return f"/registry/{kind.storage_resource}/{namespace}/{name}"
    return f"/registry/{kind.storage_resource}/{name}"


def storage_prefix(kind: Kind, namespace: str | None = None) -> str:
    if kind.namespaced and namespace:
        return f"/registry/{kind.storage_resource}/{namespace}/"
    return f"/registry/{kind.storage_resource}/"


def media_type_of(header: str | None) -> str:
    return header.split(";", 1)[0].strip().lower() if header else ""


def response_media_type(request: web.Request) -> str:
    """msgpack when asked for, or when the request body was msgpack and JSON was not asked for."""
    accept = request.headers.get("Accept", "")
    if MSGPACK in accept:
        return MSGPACK
    if "json" not in accept and media_type_of(request.headers.get("Content-Type")) == MSGPACK:
        return MSGPACK
    return JSON


def respond(request: web.Request, body: object, code: int = 200) -> web.Response:
    media_type = response_media_type(request)
    return web.Response(body=encode(body, media_type), status=code, content_type=media_type)


def _encode_continue(revision: int, key: str) -> str:
    raw = json.dumps({"rv": revision, "start": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        revision, key = data["rv"], str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise status.bad_request("invalid continue token") from None
    if type(revision) is not int or not 0 <= revision <= INT64_MAX:
        raise status.bad_request("invalid continue token")
    return revision, key


def _dry_run(request: web.Request) -> bool:
    """`?dryRun=All`: every step of a write but the write itself (kubectl --dry-run=server)."""
    values = request.query.getall("dryRun", [])
    if any(v != "All" for v in values):
        raise status.bad_request(f'dryRun: Unsupported value: {values!r}: supported values: "All"')
    return bool(values)


# Kinds whose bodies may come in protobuf (typed clients send it for them: kubectl create rolebinding).
_PROTOBUF_RESOURCES = frozenset(k.plural for k in KINDS if k.kind in protobuf.KINDS)


# Revisions, limits and timeouts are int64 in Kubernetes' API (and in etcd and SQLite); a larger number is
# the client's mistake, not the store's.
INT64_MAX = 2**63 - 1


def _manager(request: web.Request, *, applying: bool = False) -> str:
    """The field manager a write records (see managedfields.py)."""
    options_kind = {"POST": "Create", "PUT": "Update"}.get(request.method, "Patch")
    return manager_name(request.query.get("fieldManager"), request.headers.get("User-Agent"), options_kind, applying=applying)


def _parse_revision(text: str, what: str = "resourceVersion") -> int:
    if not (text.isascii() and text.isdigit()):  # str.isdigit alone admits '¹', which int() refuses
        raise status.bad_request(f'invalid {what} "{text}": must be a non-negative integer')
    if len(text.lstrip("0")) > len(str(INT64_MAX)) or int(text) > INT64_MAX:
        raise status.bad_request(f'invalid {what} "{text}": value out of range')
    return int(text)


class Resources:
    def __init__(self, config: ApiServerConfig, store: Store, hub: WatchHub, watchers_gauge: Any):
        self.config = config
        self.store = store
        self.hub = hub
        self.watchers_gauge = watchers_gauge
        self.limits = Limits(config.node_port_range, config.service_cidr, config.cluster_cidr, config.api_addresses)
        self._allowed_external_ips = parse_cidrs(config.allowed_external_ip_cidrs)
        self._namespace_kind = lookup("namespaces")
        self.namespaces = NamespaceLifecycle(store, hub, self._namespace_kind, storage_prefix(self._namespace_kind))
        self.rbac = RbacCache(store, hub)
        self.crds = Registry(store, hub)
        self.pod_security = PodSecurityAdmission(self._namespace_labels, self._namespace_pods, self.allowed)
        # ClusterIPs and NodePorts are allocated on the write path, one Service write at a time, from
        # allocations rebuilt from storage when first needed (and after a write of unknown outcome).
        self._service_kind = lookup("services")
        self._service_lock = asyncio.Lock()
        self._allocations: IpAllocations | None = None
        self.claims = ClaimStore(store, self._storage)  # what several API servers on one store agree on
        # Creates between their namespace check and their write, by namespace: a namespace deletion
        # sweeps only once those have landed, so nothing is created behind the sweep.
        self.quotas = QuotaAdmission(store, self._storage, storage_prefix)
        self.limit_ranges = LimitRangeAdmission(store, self._storage, storage_prefix)

    # --- routes -------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        for kind in KINDS:
            bind = self._bind
            if kind.namespaced:
                app.router.add_get(kind.path(), bind(self.list_or_watch, kind, all_namespaces=True))
                collection = kind.path("{namespace}")
                item = kind.path("{namespace}", "{name}")
            else:
                collection = kind.path()
                item = kind.path(name="{name}")
            app.router.add_get(collection, bind(self.list_or_watch, kind))
            app.router.add_post(collection, bind(self.create, kind))
            if kind.built_in != "Namespace":  # as in Kubernetes: namespaces are deleted one by one
                app.router.add_delete(collection, bind(self.delete_collection, kind))
            app.router.add_get(item, bind(self.get, kind))
            app.router.add_put(item, bind(self.update, kind))
            app.router.add_patch(item, bind(self.patch, kind))
            app.router.add_delete(item, bind(self.delete, kind))
            if kind.has_status:
                app.router.add_get(item + "/status", bind(self.get, kind))
                app.router.add_put(item + "/status", bind(self.update, kind, subresource="status"))
                app.router.add_patch(item + "/status", bind(self.patch, kind, subresource="status"))

    @staticmethod
    def _bind(handler: Callable[..., Awaitable[web.StreamResponse]], kind: Kind, **options: Any) -> Callable:
        async def route(request: web.Request) -> web.StreamResponse:
            request[RESOURCE_KEY] = kind.plural
            return await handler(request, kind, **options)

        return route

    # --- common steps -------------------------------------------------------------------------------

    def allowed(self, user: User, attributes: Attributes) -> Decision:
        """The RBAC decision on the roles and bindings in force (no storage read)."""
        decision = rbac_authorize(user, attributes, self.rbac.policy)
        audit_log.note_authorization(user, decision.allowed, decision.reason)
        return decision

    def _authorize(self, request: web.Request, verb: str, kind: Kind, namespace: str | None) -> None:
        request[VERB_KEY] = verb
        user = request[USER_KEY]
        name = request.match_info.get("name", "")
        if kind.built_in == "Namespace" and name:
            namespace = name  # as kube-apiserver's request info: a namespace is asked about in itself
        # The subresource is what follows the name in the path (`/status`, `/scale`).
        subresource = request.path.rpartition("/")[2] if name and not request.path.endswith(f"/{name}") else ""
        attributes = Attributes(verb, namespace or "", kind.group, kind.plural, subresource, name)
        if not self.allowed(user, attributes).allowed:
            raise status.forbidden(user.name, verb, kind, namespace, request.path, name=name, subresource=subresource)
        _WRITER.set(user)
        _REQUEST.set(request)

    @staticmethod
    def _restrict_node(operation: str, kind: Kind, subresource: str, namespace: str | None, old: dict | None,
                       new: dict | None) -> None:
        """NodeRestriction (noderestriction.py): a node's agent writes only its own objects."""
        node = noderestriction.node_of(_WRITER.get())
        if node is None:
            return
        name = str((new or old or {}).get("metadata", {}).get("name") or "")
        reason = noderestriction.refusal(node, operation, kind.built_in, subresource, name, namespace, old, new)
        if reason is not None:
            raise status.admission_forbidden(kind, name, reason)

    async def _storage(self, awaitable: Awaitable[T]) -> T:
        """A storage call with the server's deadline; an unreachable store is a 503, never a 500."""
        try:
            async with asyncio.timeout(self.config.storage_timeout):
                return await awaitable
        except Unavailable as e:
            raise status.unavailable(f"storage is unavailable: {e}") from None
        except TimeoutError:
            raise status.unavailable(
                f"storage did not answer within {self.config.storage_timeout:g}s; a write may or may not have been applied"
            ) from None
        except OSError as e:
            raise status.unavailable(f"storage is unavailable: {e}") from None

    async def _read_body(self, request: web.Request, *, patch: bool = False) -> tuple[object, str]:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise status.too_large(limit)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise status.too_large(limit) from None
        if len(body) > limit:
            raise status.too_large(limit)
        media_type = media_type_of(request.headers.get("Content-Type")) or JSON
        if media_type == protobuf.MEDIA_TYPE and not patch and request.get(RESOURCE_KEY) in _PROTOBUF_RESOURCES:
            try:
                return protobuf.decode(body), media_type
            except protobuf.ProtobufError as e:
                raise status.bad_request(f"couldn't decode the body as protobuf: {e}") from None
        accepted = (JSON, MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH, APPLY_PATCH) if patch else (JSON, MSGPACK, YAML, "*/*")
        if media_type not in accepted:
            raise status.unsupported_media_type(media_type)
        if media_type in (YAML, APPLY_PATCH):
            try:
                return yamlbody.load(body, limit), media_type
            except yamlbody.TooLarge:
                raise status.too_large(limit) from None
            except DecodeError as e:
                raise status.bad_request(str(e)) from None
        try:
            return decode(body, MSGPACK if media_type == MSGPACK else JSON), media_type
        except DecodeError as e:
            raise status.bad_request(str(e)) from None

    async def _read_object(self, request: web.Request, kind: Kind) -> dict:
        body, _ = await self._read_body(request)
        if not isinstance(body, dict):
            raise status.bad_request(f"the body of a {kind.kind} must be an object")
        api_version = body.setdefault("apiVersion", kind.api_version)
        if api_version != kind.api_version:
            raise status.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({kind.api_version})"
            )
        kind_name = body.setdefault("kind", kind.kind)
        if kind_name != kind.kind:
            raise status.bad_request(f"the kind in the data ({kind_name}) does not match the expected kind ({kind.kind})")
        metadata = body.get("metadata")
        if metadata is None:
            body["metadata"] = {}
        elif not isinstance(metadata, dict):
            raise status.bad_request("metadata must be an object")
        return body

    def _place(self, obj: dict, kind: Kind, namespace: str | None) -> None:
        """Puts the object in the namespace of the URL, as kube-apiserver does."""
        metadata = obj["metadata"]
        if kind.namespaced:
            given = metadata.get("namespace")
            if given and given != namespace:
                raise status.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)

    def _check(self, kind: Kind, obj: dict) -> bytes:
        """Defaults, validates and encodes an object for storage."""
        default_object(kind, obj)
        omit_empty_metadata(obj)
        causes = validate_object(kind, obj, self.limits) + deletion.finalizer_causes(obj)
        if causes:
            raise status.invalid(kind, str(obj["metadata"].get("name") or ""), causes)
        writer = _WRITER.get()
        if writer is not None:
            escalation.check(writer, kind.built_in, obj, self.rbac.policy)
        try:
            value = to_storage(stored_form(kind, obj))
        except (TypeError, ValueError) as e:  # msgpack bytes or other values JSON cannot hold
            raise status.bad_request(f"the object cannot be stored: {e}") from None
        if len(value) > self.config.max_body_bytes:  # grown past what a body may carry, by a patch or an apply
            raise status.too_large(self.config.max_body_bytes)
        return value

    async def _namespace_pods(self, namespace: str) -> list[dict]:
        kvs, _ = await self._storage(self.store.list(storage_prefix(lookup("pods"), namespace)))
        return [json.loads(kv.value) for kv in kvs]

    async def _namespace_labels(self, name: str) -> dict | None:
        kv = await self._storage(self.store.get(storage_key(self._namespace_kind, None, name)))
        return None if kv is None else json.loads(kv.value).get("metadata", {}).get("labels") or {}

    @staticmethod
    def _read(kind: Kind, kv: KeyValue) -> dict:
        """A stored object as the kind's version serves it."""
        return served_form(kind, from_storage(kv.value, kv.mod_revision))

    async def _current(self, kind: Kind, namespace: str | None, name: str) -> KeyValue:
        kv = await self._storage(self.store.get(storage_key(kind, namespace, name)))
        if kv is None:
            raise status.not_found(kind, name)
        return kv

    # --- get, list, watch ---------------------------------------------------------------------------

    async def get(self, request: web.Request, kind: Kind) -> web.Response:
        namespace = request.match_info.get("namespace")
        name = request.match_info["name"]
        self._authorize(request, "get", kind, namespace)
        kv = await self._current(kind, namespace, name)
        return respond(request, tables.represent(request, kind, self._read(kind, kv)))

    async def list_or_watch(self, request: web.Request, kind: Kind, all_namespaces: bool = False) -> web.StreamResponse:
        namespace = None if all_namespaces else request.match_info.get("namespace")
        query = request.query
        watching = _truthy(query.get("watch"))
        self._authorize(request, "watch" if watching else "list", kind, namespace)
        try:
            selection = make_filter(query.get("labelSelector"), query.get("fieldSelector"), kind)
        except ValueError as e:
            raise status.bad_request(str(e)) from None
        if watching:
            return await self.watch(request, kind, namespace, selection)
        return respond(request, tables.represent(request, kind, await self._list(request, kind, namespace, selection)))

    async def _list(self, request: web.Request, kind: Kind, namespace: str | None, selection: Filter) -> dict:
        query = request.query
        limit = _parse_revision(query.get("limit", "0"), "limit")
        revision, start_after = 0, None
        if token := query.get("continue"):
            revision, start_after = _decode_continue(token)
        elif query.get("resourceVersionMatch") == "Exact":
            revision = _parse_revision(query.get("resourceVersion", ""))
        prefix = storage_prefix(kind, namespace)
        name = selection.name()
        if name is not None and kind.namespaced and not namespace:
            name = None  # the same name may be in several namespaces: scan
        items: list[dict] = []
        next_key = None
        batch = max(limit, 100) if limit and not selection.everything else limit
        while True:
            try:
                kvs, revision = await self._storage(
                    self.store.list(prefix, revision=revision, limit=batch, start_after=start_after)
                )
            except Compacted:
                if token:
                    raise status.expired(
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter, or use the continue token in "
                        "this response to retrieve the remainder of the results."
                    ) from None
                raise status.expired(f"too old resource version: {revision}") from None
            except FutureRevision as e:
                raise status.too_large_resource_version(e.requested, e.current) from None
            for index, kv in enumerate(kvs):
                obj = self._read(kind, kv)
                if selection.matches(obj):
                    items.append(obj)
                    if limit and len(items) == limit:
                        if index < len(kvs) - 1 or len(kvs) == batch:
                            next_key = kv.key
                        break
            else:
                if batch and len(kvs) == batch:
                    start_after = kvs[-1].key
                    continue
            break
        metadata: dict = {"resourceVersion": str(revision)}
        if next_key is not None:
            metadata["continue"] = _encode_continue(revision, next_key)
        return {"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": metadata, "items": items}

    async def watch(self, request: web.Request, kind: Kind, namespace: str | None, selection: Filter) -> web.StreamResponse:
        query = request.query
        since = query.get("resourceVersion", "")
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        # kube-apiserver ends a watch that asked for no timeout (or 0) after a random 30 to 60 minutes.
        timeout = _parse_revision(query.get("timeoutSeconds") or "0", "timeoutSeconds") or 1800 * (1 + random.random())
        prefix = storage_prefix(kind, namespace)
        name = selection.name()
        initial: list[dict] = []
        if since in ("", "0"):
            # "Start at most recent": the current state as ADDED events, then the changes after it.
            listed = await self._list_all(kind, namespace, selection)
            initial, after = listed["items"], int(listed["metadata"]["resourceVersion"])
        else:
            after = _parse_revision(since)
        try:
            identity = {"apiVersion": kind.api_version, "kind": kind.kind}
            subscription = await self._storage(self.hub.subscribe(storage_prefix(kind), after, identity))
        except Compacted:
            subscription = None
        media_type = response_media_type(request)
        as_table = tables.event_transform(request, kind)
        response = web.StreamResponse(headers={"Content-Type": media_type, "Cache-Control": "no-cache"})
        await response.prepare(request)
        request[VERB_KEY] = "watch"
        self.watchers_gauge.labels(kind.plural).inc()
        try:
            if subscription is None:
                await response.write(self._expired_event(after, media_type))
                return response
            for obj in initial:
                await response.write(encode_event(ADDED, as_table(obj) if as_table else obj, media_type))
            await self._stream(
                request, response, subscription, prefix, name, selection, bookmarks, timeout, kind, media_type, as_table
            )
        except ConnectionError:
            pass  # the watcher went away
        finally:
            self.watchers_gauge.labels(kind.plural).dec()
            if subscription is not None:
                await subscription.close()
        return response

    async def _list_all(self, kind: Kind, namespace: str | None, selection: Filter) -> dict:
        kvs, revision = await self._storage(self.store.list(storage_prefix(kind, namespace)))
        items = [obj for kv in kvs if selection.matches(obj := self._read(kind, kv))]
        return {"metadata": {"resourceVersion": str(revision)}, "items": items}

    def _expired_event(self, after: int, media_type: str) -> bytes:
        body = status.expired(f"too old resource version: {after}").status
        return encode_event(ERROR, body, media_type)

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        subscription: Subscription,
        prefix: str,
        name: str | None,
        selection: Filter,
        bookmarks: bool,
        timeout: float,
        kind: Kind,
        media_type: str,
        as_table: Callable[[dict], dict] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + self.config.bookmark_interval
        processed: int | None = None  # every change up to this revision has been considered
        while True:
            now = loop.time()
            if now >= deadline:
                return
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            # Wake at least every few seconds to notice a watcher that went away while nothing changed.
            wait = min(deadline - now, 5.0, max(next_bookmark - now, 0.0) if bookmarks else 5.0)
            try:
                change = await subscription.next(wait)
            except Compacted as e:
                await response.write(self._expired_event(e.requested, media_type))
                return
            except (WatchEnded, StorageError, OSError):
                return  # the stream ends; the watcher resumes from its last resourceVersion
            if change is not None:
                processed = change.revision
                if change.key.startswith(prefix) and (name is None or change.key.rpartition("/")[2] == name):
                    event_type = self._event_type(change, selection)
                    served = served_form(kind, change.object)
                    if event_type is not None and as_table is not None:
                        await response.write(encode_event(event_type, as_table(served), media_type))
                    elif event_type is not None and served is not change.object:
                        await response.write(encode_event(event_type, served, media_type))
                    elif event_type is not None:
                        await response.write(change.encoded(event_type, media_type))
            if bookmarks and loop.time() >= next_bookmark:
                # Also while other namespaces' changes stream past unseen, so a resume starts near the head.
                revision = subscription.bookmark_revision() or processed
                if revision is not None:
                    bookmark = {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": {"resourceVersion": str(revision)}}
                    await response.write(encode_event(BOOKMARK, bookmark, media_type))
                next_bookmark = loop.time() + self.config.bookmark_interval

    @staticmethod
    def _event_type(change: Change, selection: Filter) -> str | None:
        """What this watcher sees of a change: an object entering its selection is ADDED to it, one
        leaving it is DELETED, as kube-apiserver's cacheWatcher reports them."""
        if selection.everything:
            return change.type
        now = selection.matches(change.object)
        if change.type == DELETED:
            return DELETED if now else None
        before = change.type == MODIFIED and change.previous is not None and selection.matches(change.previous)
        if now:
            return MODIFIED if before else ADDED
        return DELETED if before else None

    # --- create -------------------------------------------------------------------------------------

    async def create(self, request: web.Request, kind: Kind) -> web.Response:
        namespace = request.match_info.get("namespace")
        self._authorize(request, "create", kind, namespace)
        obj = await fieldvalidation.decode_object(request, kind, await self._read_object(request, kind))
        self._place(obj, kind, namespace)
        record_update(kind, None, obj, _manager(request), _now())
        return await self._create(request, kind, namespace, obj)

    async def _create(self, request: web.Request, kind: Kind, namespace: str | None, obj: dict) -> web.Response:
        """Stores a new object, its managedFields already set by the caller."""
        dry_run = _dry_run(request)
        metadata = obj["metadata"]
        if not metadata.get("name") and isinstance(metadata.get("generateName"), str) and metadata["generateName"]:
            metadata["name"] = metadata["generateName"] + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = _now()
        for server_set in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            metadata.pop(server_set, None)
        if kind.kind in GENERATION_KINDS or kind.custom is not None:
            metadata["generation"] = 1
        self._restrict_node("create", kind, "", namespace, None, obj)
        self._reset_status_on_create(kind, obj)
        if kind.built_in == "Pod" and self.config.root_ca:  # in-cluster clients speak TLS, verified by that CA
            await service_account_admission.admit(
                obj, self.store, lambda account: storage_key(lookup("ServiceAccount"), namespace, account), self._storage)
        if kind.built_in == "Ingress":
            await self._default_ingress_class(obj)
        if kind.namespaced:
            await self.limit_ranges.admit(kind, str(namespace), obj)
        value = self._check(kind, obj)
        if kind.built_in == "Service":
            self._deny_external_ips(obj, None)
        await self.pod_security.admit(request, _WRITER.get(), kind, obj, None)
        if not kind.namespaced:
            return await self._store_new(request, kind, obj, value, dry_run)
        for attempt in range(_UPDATE_ATTEMPTS):
            # The namespace as found open guards the write: marked for deletion meanwhile (by any API
            # server), it refuses the write, and the next attempt finds it terminating.
            beside = await self._check_namespace_open(kind, metadata["name"], namespace, cached=attempt == 0)
            try:
                async with self.quotas.admitting(kind, str(namespace), obj):
                    return await self._store_new(request, kind, obj, value, dry_run, beside)
            except (Conflict, NotFound) as e:
                if e.args[0] != beside.key:
                    raise
        raise status.conflict(self._namespace_kind, str(namespace), "the namespace is being modified too often; "
                              "please try again")

    async def _store_new(self, request: web.Request, kind: Kind, obj: dict, value: bytes, dry_run: bool,
                         beside: Guard | None = None) -> web.Response:
        name = obj["metadata"]["name"]
        key = storage_key(kind, obj["metadata"].get("namespace"), name)
        try:
            if kind.built_in != "Service":
                if dry_run:
                    return respond(request, obj, 201)
                revision = await self._storage(self.store.create(key, value, beside=beside))
            else:
                async with self._service_lock:
                    for attempt in range(_CLAIM_ATTEMPTS):
                        admission = await self._admit_service(obj, None, dry_run=dry_run)
                        try:
                            revision = await self._allocated_write(
                                admission,
                                None if dry_run else self._storage(self.store.create(key, to_storage(admission.service),
                                                                                     beside=beside)),
                            )
                            break
                        except ClaimTaken:
                            if attempt == _CLAIM_ATTEMPTS - 1:
                                raise status.conflict(kind, name, "its ClusterIP or NodePorts were taken by another "
                                                      "API server meanwhile; please try again") from None
                    obj = admission.service
                    if revision is None:
                        return respond(request, obj, 201)
        except AlreadyExists:
            raise status.already_exists(kind, name) from None
        obj["metadata"]["resourceVersion"] = str(revision)
        return respond(request, obj, 201)

    async def _default_ingress_class(self, ingress: dict) -> None:
        """The DefaultIngressClass admission plugin: an Ingress created without a class gets the default one."""
        spec = ingress.get("spec")
        if not isinstance(spec, dict) or spec.get("ingressClassName") is not None:
            return
        kvs, _ = await self._storage(self.store.list(storage_prefix(lookup("ingressclasses"), None)))
        name = ingresskinds.default_class(from_storage(kv.value, kv.mod_revision) for kv in kvs)
        if name is not None:
            spec["ingressClassName"] = name

    @staticmethod
    def _reset_status_on_create(kind: Kind, obj: dict) -> None:
        """Status is the system's to write: a create starts it afresh, as each kind's strategy does.
        Nodes keep theirs (a node agent registers with its addresses and conditions)."""
        if kind.built_in == "Pod":
            obj["status"] = {"phase": "Pending"}
        elif kind.built_in == "Namespace":
            obj["status"] = {"phase": "Active"}
        elif kind.built_in == "Service":
            obj["status"] = {"loadBalancer": {}}
        elif kind.has_status and kind.built_in != "Node":
            obj.pop("status", None)

    async def _check_namespace_open(self, kind: Kind, name: str, namespace: str | None, *, cached: bool = True) -> Guard:
        """Refuses a create into a namespace that is gone or terminating; otherwise the namespace's key at
        the mod revision found, which the create's write depends on. `cached`: the namespace cache's word
        will do (it may lag, but a write guarded by a stale revision is refused and the caller asks again)."""
        ns_kind = self._namespace_kind
        key = storage_key(ns_kind, None, str(namespace))
        state = self.namespaces.state(str(namespace)) if cached else NamespaceState.UNKNOWN
        revision = self.namespaces.mod_revision(str(namespace))
        if state is NamespaceState.UNKNOWN:
            kv = await self._storage(self.store.get(key))
            if kv is None:
                raise status.not_found(ns_kind, str(namespace))
            revision = kv.mod_revision
            if json.loads(kv.value).get("metadata", {}).get("deletionTimestamp"):
                state = NamespaceState.TERMINATING
        if state is NamespaceState.TERMINATING:
            raise status.namespace_terminating(kind, name, str(namespace))
        return Guard(key, revision)

    # --- update and patch ---------------------------------------------------------------------------

    async def update(self, request: web.Request, kind: Kind, subresource: str | None = None) -> web.Response:
        namespace = request.match_info.get("namespace")
        name = request.match_info["name"]
        self._authorize(request, "update", kind, namespace)
        obj = await fieldvalidation.decode_object(request, kind, await self._read_object(request, kind))
        self._place(obj, kind, namespace)
        if obj["metadata"].get("name", name) != name:
            raise status.bad_request(
                f"the name of the object ({obj['metadata'].get('name')}) does not match the name on the URL ({name})"
            )
        obj["metadata"]["name"] = name
        expected = obj["metadata"].get("resourceVersion")
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._current(kind, namespace, name)
            if expected not in (None, ""):
                if not isinstance(expected, str) or _parse_revision(expected) != current.mod_revision:
                    raise status.conflict(kind, name)
            try:
                result = await self._write_update(
                    kind, namespace, name, current, copy.deepcopy(obj), subresource, dry_run=_dry_run(request),
                    manager=_manager(request),
                )
            except _Raced:
                continue  # with a resourceVersion, the next read reports the conflict
            return respond(request, result)
        raise status.conflict(kind, name, "the object is being modified too often; please try again")

    async def patch(self, request: web.Request, kind: Kind, subresource: str | None = None) -> web.Response:
        namespace = request.match_info.get("namespace")
        name = request.match_info["name"]
        self._authorize(request, "patch", kind, namespace)
        body, media_type = await self._read_body(request, patch=True)
        if media_type == JSON:
            raise status.unsupported_media_type(media_type)
        if media_type == STRATEGIC_PATCH and strategic_merge_refused(kind):
            raise status.ApiError(status.status(415, "UnsupportedMediaType", (
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")))
        applying = media_type == APPLY_PATCH
        manager = _manager(request, applying=applying)
        for _ in range(_UPDATE_ATTEMPTS):
            if applying:
                current = await self._storage(self.store.get(storage_key(kind, namespace, name)))
                if current is None:
                    created = await self._create_by_apply(request, kind, namespace, name, body, manager, subresource)
                    if created is None:
                        continue  # created meanwhile: apply to it
                    return created
                live = self._read(kind, current)
                force = _truthy(request.query.get("force"))
                patched = server_side_apply(kind, live, body, name, manager, _now(), force=force, subresource=subresource or "",
                                            namespace=namespace)
                self._place(patched, kind, namespace)
            else:
                current = await self._current(kind, namespace, name)
                patched = self._patched(kind, self._read(kind, current), body, media_type)
            metadata = patched["metadata"]
            if metadata.get("name") != name or (kind.namespaced and metadata.get("namespace") != namespace):
                raise status.bad_request("a patch may not change the object's name or namespace")
            expected = metadata.get("resourceVersion")
            if expected not in (None, "") and expected != str(current.mod_revision):
                # The patch named a resourceVersion: it is a precondition, as on update.
                raise status.conflict(kind, name)
            patched = await fieldvalidation.decode_patched(request, kind, body, media_type, patched)
            try:
                result = await self._write_update(
                    kind, namespace, name, current, patched, subresource, dry_run=_dry_run(request),
                    manager=None if applying else manager,  # an apply has set managedFields itself
                )
            except _Raced:
                continue
            return respond(request, result)
        raise status.conflict(kind, name, "the object is being modified too often; please try again")

    @staticmethod
    def _patched(kind: Kind, obj: dict, body: object, media_type: str) -> dict:
        try:
            if media_type == JSON_PATCH:
                patched = json_patch(obj, body)
            elif media_type == STRATEGIC_PATCH:
                patched = strategic_merge_patch(obj, body, kind.kind)
            else:
                if not isinstance(body, dict):
                    raise PatchError("a merge patch must be a JSON object")
                patched = merge_patch(obj, body)
        except TooManyOperations as e:
            raise status.entity_too_large(str(e)) from None
        except PatchError as e:
            raise status.bad_request(str(e)) from None
        except PatchConflict as e:
            raise status.unprocessable(f"the patch cannot be applied: {e}") from None
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise status.bad_request("the patched object is not an object with metadata")
        if patched.get("kind") != kind.kind or patched.get("apiVersion") != kind.api_version:
            raise status.bad_request("a patch may not change apiVersion or kind")
        return patched

    async def _create_by_apply(
        self, request: web.Request, kind: Kind, namespace: str | None, name: str, config: object, manager: str,
        subresource: str | None,
    ) -> web.Response | None:
        """An apply to an object that does not exist creates it, which takes the right to create, as on
        Kubernetes; None when someone else created it meanwhile."""
        if subresource is not None:
            raise status.not_found(kind, name)
        self._authorize(request, "create", kind, namespace)
        obj = server_side_apply(kind, None, config, name, manager, _now(), force=_truthy(request.query.get("force")),
                                namespace=namespace)
        self._place(obj, kind, namespace)
        obj = await fieldvalidation.decode_patched(request, kind, config, APPLY_PATCH, obj)
        try:
            return await self._create(request, kind, namespace, obj)
        except ApiError as e:
            if e.status.get("reason") == "AlreadyExists":
                return None
            raise

    async def _write_update(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        current: KeyValue,
        new: dict,
        subresource: str | None,
        *,
        dry_run: bool,
        manager: str | None = None,
    ) -> dict:
        """Writes `new` over `current`; `manager` is the writer whose fields the write records (None:
        the caller has set managedFields, as an apply does)."""
        old = self._read(kind, current)
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif kind.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        default_object(kind, new)  # before the generation is judged: a default left out is no change
        self._restrict_node("update", kind, subresource or "", namespace, old, new)
        self._keep_server_fields(kind, old, new)
        if deletion.removed_by_update(old, new):
            return await self._remove_finalized(kind, name, current, dry_run=dry_run)
        if manager is not None:
            record_update(kind, old, new, manager, _now(), subresource or "")
        if kind.built_in != "Service" or subresource == "status":
            return await self._finish_update(kind, name, current, old, new, None, dry_run=dry_run)
        async with self.quotas.admitting(kind, str(namespace), new, old), self._service_lock:
            admission = await self._admit_service(new, old, dry_run=dry_run)
            try:
                return await self._finish_update(kind, name, current, old, admission.service, admission, dry_run=dry_run)
            except ClaimTaken:
                raise _Raced() from None

    async def _finish_update(
        self, kind: Kind, name: str, current: KeyValue, old: dict, new: dict, admission: Admission | None, *, dry_run: bool
    ) -> dict:
        try:
            value = self._check(kind, new)
            self._check_immutable(kind, old, new)
            if admission is not None:  # a Service's own write, not its status
                self._deny_external_ips(new, old)
            await self.pod_security.admit(_REQUEST.get(), _WRITER.get(), kind, new, old)
        except BaseException:
            if admission is not None:
                await self._allocated_write(admission, None)
            raise
        unchanged = value == current.value
        write = None if unchanged or dry_run else self._storage(self.store.update(current.key, value, current.mod_revision))
        try:
            revision = await self._allocated_write(admission, write) if admission is not None else (await write if write else None)
        except NotFound:
            raise status.not_found(kind, name) from None
        except Conflict:
            raise _Raced() from None
        if unchanged:
            return old  # no change: no write, no event, the same resourceVersion (as Kubernetes)
        new["metadata"]["resourceVersion"] = str(current.mod_revision if revision is None else revision)
        return new

    # --- Service allocations ------------------------------------------------------------------------

    async def _service_allocations(self) -> IpAllocations:
        """This server's view of what is allocated: the stored Services and every server's claims."""
        if self._allocations is None:
            kvs, _ = await self._storage(self.store.list(storage_prefix(self._service_kind)))
            allocations = IpAllocations.from_services(
                (json.loads(kv.value) for kv in kvs),
                service_cidr=self.config.service_cidr,
                node_port_range=self.config.node_port_range,
            )
            claims.add_claims(allocations, await self.claims.list())
            allocations.start_scans_at(random.randrange(1 << 32), random.randrange(1 << 16))
            self._allocations = allocations
        return self._allocations

    async def repair_claims(self) -> None:
        kvs, _ = await self._storage(self.store.list(storage_prefix(self._service_kind)))
        await self.claims.repair([json.loads(kv.value) for kv in kvs], service_cidr=self.config.service_cidr,
                                 node_port_range=self.config.node_port_range)

    async def _admit_service(self, service: dict, old: dict | None, *, dry_run: bool) -> Admission:
        """Fills in and reserves the Service's ClusterIP and NodePorts; a request that cannot be met
        (an address or port taken, out of range) is 422 before anything is stored. A dry run works on
        a copy of the allocations, so that it reserves nothing and moves no allocator forward."""
        fresh = self._allocations is None
        allocations = await self._service_allocations()
        if dry_run:
            allocations = copy.deepcopy(allocations)
        try:
            try:
                return allocations.admit(service, old)
            except AllocationError:
                if fresh:
                    raise
                # Another API server may have freed what this view still counts as taken.
                self._allocations = None
                return await self._admit_service(service, old, dry_run=dry_run)
        except AllocationError as e:
            cause = Cause(e.field, "FieldValueInvalid", e.message)
            raise status.invalid(self._service_kind, str(service["metadata"].get("name") or ""), [cause]) from None

    def _deny_external_ips(self, service: dict, old: dict | None) -> None:
        """DenyServiceExternalIPs, widened by --allowed-external-ip-cidrs (serviceaddresses.py); it runs after
        validation, as a validating admission plugin does."""
        if denied := external_ips_denied(service, old, self._allowed_external_ips):
            raise status.admission_forbidden(self._service_kind, str(service["metadata"].get("name") or ""), denied)

    async def _allocated_write(self, admission: Admission, write: Awaitable[T] | None) -> T | None:
        """Runs the storage write of an admitted Service (None: nothing to write) and settles its
        reservations: committed when stored, given back when refused, rebuilt from storage when the
        outcome is unknown."""
        allocations = self._allocations
        assert allocations is not None
        if write is None:
            allocations.abort(admission)
            return None
        needed = claims.admitted_keys(admission)
        try:
            await self.claims.take(needed, admission.key)
        except BaseException as e:
            write.close()  # type: ignore[attr-defined]
            allocations.abort(admission)
            if isinstance(e, ClaimTaken):
                self._allocations = None  # stale: another server allocated meanwhile
            raise
        try:
            result = await write
        except (ApiError, asyncio.CancelledError) as e:
            if isinstance(e, asyncio.CancelledError) or e.code == 503:
                self._allocations = None  # the write may or may not have been applied; the repair settles claims
            else:
                allocations.abort(admission)
                await self.claims.give_back(needed, admission.key)
            raise
        except BaseException:
            allocations.abort(admission)
            await self.claims.give_back(needed, admission.key)
            raise
        allocations.commit(admission)
        await self.claims.give_back(claims.given_up_keys(admission), admission.key)
        return result

    async def _release_service(self, service: dict) -> None:
        async with self._service_lock:
            if self._allocations is not None:
                self._allocations.release(service)
            await self.claims.give_back(
                claims.held_keys(service, service_cidr=self.config.service_cidr,
                                 node_port_range=self.config.node_port_range),
                object_key(service))

    @staticmethod
    def _keep_server_fields(kind: Kind, old: dict, new: dict) -> None:
        old_meta, new_meta = old["metadata"], new["metadata"]
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if field in old_meta:
                new_meta[field] = old_meta[field]
            else:
                new_meta.pop(field, None)
        generation = old_meta.get("generation")
        if generation is not None:
            new_meta["generation"] = generation + 1 if spec_changed(kind, old, new) else generation

    @staticmethod
    def _check_immutable(kind: Kind, old: dict, new: dict) -> None:
        causes = validate_object_update(kind, old, new) + deletion.added_finalizer_causes(old, new)
        if causes:
            raise status.invalid(kind, new["metadata"]["name"], causes)

    # --- delete -------------------------------------------------------------------------------------

    async def delete(self, request: web.Request, kind: Kind) -> web.Response:
        namespace = request.match_info.get("namespace")
        name = request.match_info["name"]
        self._authorize(request, "delete", kind, namespace)
        options = await self._delete_options(request)
        if kind.built_in == "Namespace":
            return respond(request, await self._delete_namespace(name, dict(options.preconditions), dry_run=options.dry_run))
        answer, _, lingering = await self._delete_one(kind, namespace, name, options)
        # As kube-apiserver: 202 only for a deletion left pending after orphanDependents=false.
        return respond(request, answer, 202 if lingering and options.orphan_dependents is False else 200)

    async def _delete_one(
        self, kind: Kind, namespace: str | None, name: str, options: deletion.DeleteOptions
    ) -> tuple[dict, dict, bool]:
        """Deletes or marks for deletion (see deletion.py); returns the answer, the object as it is now
        and whether it lingers."""
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._current(kind, namespace, name)
            self._check_preconditions(kind, name, current, options.preconditions)
            obj = from_storage(current.value, current.mod_revision)
            self._restrict_node("delete", kind, "", namespace, obj, None)
            decided = deletion.plan(kind, before_delete(kind, obj, _now()), options, datetime.datetime.now(datetime.UTC))
            if decided.action == "pending":
                return deletion.gone_answer(kind, obj), obj, True
            try:
                if decided.action == "write":
                    if decided.obj != obj and not options.dry_run:
                        revision = await self._storage(
                            self.store.update(current.key, to_storage(decided.obj), current.mod_revision))
                        decided.obj["metadata"]["resourceVersion"] = str(revision)
                    return decided.obj, decided.obj, True
                if options.dry_run:
                    return deletion.gone_answer(kind, obj), obj, False
                revision, deleted = await self._storage(self.store.delete(current.key, current.mod_revision))
            except NotFound:
                raise status.not_found(kind, name) from None
            except Conflict:
                continue
            gone = from_storage(deleted.value, revision)
            if kind.built_in == "Service":
                await self._release_service(gone)
            return deletion.gone_answer(kind, gone), gone, False
        raise status.conflict(kind, name, "the object is being modified too often; please try again")

    async def _remove_finalized(self, kind: Kind, name: str, current: KeyValue, *, dry_run: bool) -> dict:
        """An update took the last finalizer off an object being deleted: it leaves storage."""
        if dry_run:
            return deletion.gone_answer(kind, from_storage(current.value, current.mod_revision))
        try:
            revision, deleted = await self._storage(self.store.delete(current.key, current.mod_revision))
        except NotFound:
            raise status.not_found(kind, name) from None
        except Conflict:
            raise _Raced() from None
        gone = from_storage(deleted.value, revision)
        if kind.built_in == "Service":
            await self._release_service(gone)
        return deletion.gone_answer(kind, gone)

    async def delete_collection(self, request: web.Request, kind: Kind) -> web.Response:
        """DELETE on a collection (kubectl delete --all, -l): deletes what the selectors select, each as a
        single delete with the same options, and answers with the objects as they are now."""
        namespace = request.match_info.get("namespace")
        self._authorize(request, "deletecollection", kind, namespace)
        try:
            selection = make_filter(request.query.get("labelSelector"), request.query.get("fieldSelector"), kind)
        except ValueError as e:
            raise status.bad_request(str(e)) from None
        options = await self._delete_options(request)
        listed = await self._list_all(kind, namespace, selection)
        deleted = []
        for obj in listed["items"]:
            metadata = obj["metadata"]
            try:
                _, now, _ = await self._delete_one(kind, metadata.get("namespace"), metadata["name"], options)
            except ApiError as e:
                if e.code == 404:
                    continue  # deleted meanwhile by someone else
                raise
            deleted.append(now)
        revision = deleted[-1]["metadata"]["resourceVersion"] if deleted else listed["metadata"]["resourceVersion"]
        return respond(
            request, {"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": {"resourceVersion": revision}, "items": deleted}
        )

    async def _delete_options(self, request: web.Request) -> deletion.DeleteOptions:
        body = None
        if request.can_read_body:
            body, _ = await self._read_body(request)
        return deletion.parse_options(body, request.query)

    @staticmethod
    def _check_preconditions(kind: Kind, name: str, current: KeyValue, preconditions: Mapping[str, str]) -> None:
        obj = json.loads(current.value)
        uid = preconditions.get("uid")
        if uid and uid != obj["metadata"].get("uid"):
            why = f"Precondition failed: UID in precondition: {uid}, UID in object meta: {obj['metadata'].get('uid')}"
            raise status.conflict(kind, name, why)
        revision = preconditions.get("resourceVersion")
        if revision and revision != str(current.mod_revision):
            why = (
                f"Precondition failed: ResourceVersion in precondition: {revision}, "
                f"ResourceVersion in object meta: {current.mod_revision}"
            )
            raise status.conflict(kind, name, why)

    async def _delete_namespace(self, name: str, preconditions: dict, *, dry_run: bool) -> dict:
        """Marks the namespace Terminating (no new content may be created in it), deletes everything
        in it, then the namespace itself; answers with the namespace as it was while terminating."""
        ns_kind = self._namespace_kind
        if name in PROTECTED_NAMESPACES:
            raise ApiError(status.status(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted'))
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._current(ns_kind, None, name)
            self._check_preconditions(ns_kind, name, current, preconditions)
            terminating = from_storage(current.value, current.mod_revision)
            if dry_run or terminating["metadata"].get("deletionTimestamp"):
                break
            terminating["metadata"]["deletionTimestamp"] = _now()
            terminating["metadata"]["deletionGracePeriodSeconds"] = 0
            terminating.setdefault("status", {})["phase"] = "Terminating"
            try:
                revision = await self._storage(self.store.update(current.key, to_storage(terminating), current.mod_revision))
            except Conflict:
                continue
            except NotFound:
                raise status.not_found(ns_kind, name) from None
            terminating["metadata"]["resourceVersion"] = str(revision)
            # Creates check the namespace cache: once it shows Terminating, no new create passes.
            await self.namespaces.wait_for(revision, self.config.storage_timeout)
            break
        else:
            raise status.conflict(ns_kind, name, "the object is being modified too often; please try again")
        if dry_run:
            return terminating
        for kind in (*KINDS, *self.crds.stored_kinds()):
            if not kind.namespaced:
                continue
            kvs, _ = await self._storage(self.store.list(storage_prefix(kind, name)))
            for kv in kvs:
                with contextlib.suppress(NotFound):
                    await self._storage(self.store.delete(kv.key))
                    if kind.built_in == "Service":
                        await self._release_service(json.loads(kv.value))
        with contextlib.suppress(NotFound):
            await self._storage(self.store.delete(storage_key(ns_kind, None, name)))
        return terminating


# A Service create whose admitted values another API server claimed first is admitted again this many times.
_CLAIM_ATTEMPTS = 10


class _Raced(Exception):
    """The object changed between our read and our write: read again and retry."""
