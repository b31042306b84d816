"""The async API client every podnet component uses, and the informer (list + watch + local cache).

JSON by default; msgpack (`encoding="msgpack"`) for node processes, which the API server answers in kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from podnet import kubeconfig
from podnet.api import kinds
from podnet.api.keys import object_key
from podnet.api.kinds import Kind
from podnet.serverlist import ServerList
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

JSON = "application/json"
MSGPACK = "application/msgpack"
PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


def podnet_home() -> Path:
    return Path(os.environ.get("PODNET_HOME") or Path.home() / ".podnet")


class ApiError(Exception):
    """The API server answered with a Status error (or could not be reached: code 0)."""

    def __init__(self, status: dict):
        self.status = status
        self.code: int = int(status.get("code") or 0)
        self.reason: str = status.get("reason") or ""
        super().__init__(status.get("message") or self.reason or f"HTTP {self.code}")


def _unreachable(server: str, exc: BaseException) -> ApiError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # A certificate the kubeconfig's CA did not sign: most often a kubeconfig from an earlier `podnet up`.
        error = exc.certificate_error
        reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or error
        message = f"cannot reach the API server at {server}: tls: failed to verify its certificate: {reason}"
    else:
        message = f"cannot reach the API server at {server}: {exc}"
    return ApiError({"kind": "Status", "status": "Failure", "code": 0, "reason": "ServiceUnavailable", "message": message})


# Methods a server may be asked again after it may have acted on them: asking another changes nothing more.
_IDEMPOTENT = ("GET", "HEAD")


def _never_sent(exc: BaseException) -> bool:
    """No connection was made, so the request reached no server and another may take it. A certificate
    the CA did not sign is not passed over: it says the kubeconfig is wrong, not that a server is down."""
    return isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(exc, aiohttp.ClientConnectorCertificateError)


def _kind(kind: str | Kind) -> Kind:
    return kind if isinstance(kind, Kind) else kinds.lookup(kind)



def component_agent(component: str) -> str:
    """The User-Agent of a Kubernetes component (`kubelet/v1.31.0 (linux/amd64) podnet`): the API server
    names the writer of an object's fields by its first word, as kube-apiserver does."""
    return f"{component}/v1.31.0 (linux/amd64) podnet"

class ApiClient:
    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        encoding: str = "json",
        ssl_context: ssl.SSLContext | bool | None = None,
        tls: kubeconfig.ClientTls | None = None,
        timeout: float = 30.0,
        user_agent: str = "podnet",  # see component_agent
        fallbacks: tuple[str, ...] = (),  # the cluster's other API servers (podnet/serverlist.py)
    ):
        self._servers = ServerList([server, *fallbacks])
        # The server names the writer of a field by it (managedFields), as kube-apiserver does.
        self.user_agent = user_agent
        self.token = token
        self.content_type = MSGPACK if encoding == "msgpack" else JSON
        if ssl_context is None and tls is not None and server.startswith("https:"):
            ssl_context = tls.context()
        self.ssl = ssl_context
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | Path | None = None, **kwargs: Any) -> ApiClient:
        """Reads the current context of a standard kubeconfig (default `$PODNET_HOME/kubeconfig`)."""
        try:
            credentials = kubeconfig.load(Path(path) if path else podnet_home() / "kubeconfig")
        except kubeconfig.KubeconfigError as exc:
            raise ApiError({"code": 0, "reason": "BadConfig", "message": str(exc)}) from None
        return cls.from_credentials(credentials, **kwargs)

    @classmethod
    def from_credentials(cls, credentials: kubeconfig.Credentials, **kwargs: Any) -> ApiClient:
        return cls(credentials.server, credentials.token, tls=credentials.tls, fallbacks=credentials.fallbacks, **kwargs)

    @property
    def server(self) -> str:
        """The API server requests go to now: the one that answered last."""
        return self._servers.current

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": self.content_type, "User-Agent": self.user_agent}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=self.ssl if self.ssl is not None else True, limit=64),
            )
        return self._session

    def _encode(self, body: Any, content_type: str) -> bytes:
        if content_type == MSGPACK:
            return msgpack.packb(body, use_bin_type=True)
        return json.dumps(body).encode()

    @staticmethod
    async def _decode(response: aiohttp.ClientResponse) -> Any:
        data = await response.read()
        if response.content_type == MSGPACK:
            return msgpack.unpackb(data, raw=False)
        try:
            return json.loads(data) if data else None
        except ValueError:
            return {"message": data.decode(errors="replace")}

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict | None = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {}
        data = None
        if body is not None:
            content_type = content_type or self.content_type
            headers["Content-Type"] = content_type
            data = self._encode(body, MSGPACK if content_type == MSGPACK else JSON)
        failure: BaseException | None = None
        for server in self._servers.attempts():
            try:
                async with self.session.request(
                    method,
                    server + path,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response:
                    result = await self._decode(response)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self._servers.failed(server)
                failure = exc
                if _never_sent(exc) or method in _IDEMPOTENT:
                    continue
                raise _unreachable(server, exc) from exc
            self._servers.answered(server)
            if response.status >= 400:
                status = result if isinstance(result, dict) and result.get("kind") == "Status" else {
                    "code": response.status, "reason": response.reason,
                    "message": (result or {}).get("message") if isinstance(result, dict) else str(result)}
                status.setdefault("code", response.status)
                raise ApiError(status)
            return result
        assert failure is not None
        raise _unreachable(self.server if len(self._servers.servers) == 1 else ", ".join(self._servers.servers),
                           failure) from failure

    # The verbs.

    async def get(self, kind: str | Kind, name: str, namespace: str | None = None) -> dict:
        return await self.request("GET", _kind(kind).path(namespace, name))

    async def list(
        self,
        kind: str | Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
    ) -> dict:
        params = {"labelSelector": label_selector, "fieldSelector": field_selector,
                  "resourceVersion": resource_version}
        return await self.request("GET", _kind(kind).path(namespace), params=params)

    async def create(self, obj: dict, namespace: str | None = None) -> dict:
        kind = kinds.for_object(obj)
        namespace = namespace or (obj.get("metadata") or {}).get("namespace") or (
            "default" if kind.namespaced else None)
        return await self.request("POST", kind.path(namespace), body=obj)

    def _object_path(self, obj: dict, subresource: str | None = None) -> str:
        kind = kinds.for_object(obj)
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or ("default" if kind.namespaced else None)
        path = kind.path(namespace, meta.get("name"))
        return f"{path}/{subresource}" if subresource else path

    async def replace(self, obj: dict) -> dict:
        return await self.request("PUT", self._object_path(obj), body=obj)

    async def replace_status(self, obj: dict) -> dict:
        return await self.request("PUT", self._object_path(obj, "status"), body=obj)

    async def patch(
        self,
        kind: str | Kind,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> dict:
        path = _kind(kind).path(namespace, name)
        if subresource:
            path = f"{path}/{subresource}"
        return await self.request("PATCH", path, body=patch, content_type=PATCH_TYPES[patch_type])

    async def delete(
        self,
        kind: str | Kind,
        name: str,
        namespace: str | None = None,
        *,
        grace_period: int | None = None,
        propagation_policy: str | None = None,
        preconditions: dict | None = None,
    ) -> dict:
        """DELETE with Kubernetes' DeleteOptions: `grace_period` 0 removes a pod at once, `propagation_policy`
        is Background, Foreground or Orphan, `preconditions` {"uid": ..., "resourceVersion": ...}."""
        options = {"gracePeriodSeconds": grace_period, "propagationPolicy": propagation_policy,
                   "preconditions": preconditions}
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **{k: v for k, v in options.items() if v is not None}}
        return await self.request("DELETE", _kind(kind).path(namespace, name), body=body if len(body) > 2 else None)

    async def watch(
        self,
        kind: str | Kind,
        namespace: str | None = None,
        *,
        resource_version: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        bookmarks: bool = True,
    ) -> AsyncIterator[dict]:
        """Watch events `{"type", "object"}` until the server ends the stream. An ERROR event is raised as
        ApiError (410 when the resourceVersion is too old)."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true" if bookmarks else None,
        }
        path = _kind(kind).path(namespace)
        order = self._servers.attempts()
        for server in order:
            try:
                async with self.session.get(
                    server + path,
                    params={k: v for k, v in params.items() if v is not None},
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
                ) as response:
                    self._servers.answered(server)
                    if response.status >= 400:
                        result = await self._decode(response)
                        raise ApiError(result if isinstance(result, dict) else {"code": response.status})
                    if response.content_type == MSGPACK:
                        unpacker = msgpack.Unpacker(raw=False)
                        async for chunk in response.content.iter_any():
                            unpacker.feed(chunk)
                            for event in unpacker:
                                yield _checked_event(event)
                    else:
                        async for line in response.content:
                            if line.strip():
                                yield _checked_event(json.loads(line))
                    return
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                # A watch that broke is resumed by its caller from the last resourceVersion it saw, on the
                # next server if this one went away; one that found no server moves on at once.
                self._servers.failed(server)
                if not _never_sent(exc) or server == order[-1]:
                    raise _unreachable(server, exc) from exc


def _checked_event(event: dict) -> dict:
    if event.get("type") == "ERROR":
        raise ApiError(event.get("object") or {"code": 500, "message": "watch error"})
    return event


Handler = Callable[[str, dict | None, dict | None], None]


class Informer:
    """List, then watch from the list's resourceVersion; on a broken watch resume from the last seen
    resourceVersion with backoff; on 410 Gone relist and tell handlers what changed meanwhile."""

    def __init__(
        self,
        client: ApiClient,
        kind: str | Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        min_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ):
        self.client = client
        self.kind = _kind(kind)
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.store: dict[str, dict] = {}
        self.resource_version: str | None = None
        self.synced = False
        self._synced_event = asyncio.Event()
        self._handlers: list[Handler] = []
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self.relists = 0

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._synced_event.wait(), timeout)

    def _emit(self, event_type: str, old: dict | None, new: dict | None) -> None:
        for handler in self._handlers:
            try:
                handler(event_type, old, new)
            except Exception:
                log.exception("informer %s: handler failed on %s", self.kind.plural, event_type)

    async def _relist(self) -> None:
        result = await self.client.list(
            self.kind, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        fresh = {}
        for item in result.get("items") or []:
            item.setdefault("kind", self.kind.kind)
            item.setdefault("apiVersion", self.kind.api_version)
            fresh[object_key(item)] = item
        old_store, self.store = self.store, fresh
        for key, obj in fresh.items():
            previous = old_store.get(key)
            if previous is None:
                self._emit("ADDED", None, obj)
            elif previous.get("metadata", {}).get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", previous, obj)
        for key, obj in old_store.items():
            if key not in fresh:
                self._emit("DELETED", obj, None)
        self.resource_version = (result.get("metadata") or {}).get("resourceVersion")
        self.relists += 1
        if not self.synced:
            self.synced = True
            self._synced_event.set()

    def _apply(self, event: dict) -> None:
        obj = event.get("object") or {}
        event_type = event.get("type")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if event_type == "BOOKMARK":
            self.resource_version = rv or self.resource_version
            return
        key = object_key(obj)
        previous = self.store.get(key)
        if event_type == "DELETED":
            self.store.pop(key, None)
            self._emit("DELETED", previous or obj, None)
        elif event_type in ("ADDED", "MODIFIED"):
            self.store[key] = obj
            self._emit("ADDED" if previous is None else "MODIFIED", previous, obj)
        if rv:
            self.resource_version = rv

    async def run(self) -> None:
        backoff = self._min_backoff
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for event in self.client.watch(
                    self.kind,
                    self.namespace,
                    resource_version=self.resource_version,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    timeout_seconds=random.randint(240, 480),
                ):
                    self._apply(event)
                    backoff = self._min_backoff
                continue  # the server ended the watch (timeout): resume at once
            except ApiError as exc:
                if exc.code == 410:
                    log.info("informer %s: resourceVersion %s is gone, relisting", self.kind.plural,
                             self.resource_version)
                    need_list = True
                    continue
                log.warning("informer %s: %s; retrying in %.1fs", self.kind.plural, exc, backoff)
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, self._max_backoff)


@contextlib.asynccontextmanager
async def running(*informers: Informer, timeout: float | None = None) -> AsyncIterator[None]:
    """Runs informers for the duration of the block, after all of them have synced."""
    tasks = [asyncio.create_task(i.run()) for i in informers]
    try:
        await asyncio.gather(*(i.wait_synced(timeout) for i in informers))
        yield
    finally:
        await cancel_and_wait(*tasks)
