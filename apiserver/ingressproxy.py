"""`podnet ingress`: the ingress controller, an HTTP proxy on the host network in front of the cluster's pods.

It serves the Ingresses of the IngressClasses whose `spec.controller` is its own (`podnet.io/ingress`), and
those without a class while one of its classes is the default. A cluster without such a class gets one,
`podnet`, the default class, when the controller starts. Each request is routed by the pure table of
apiserver/ingressroutes.py to a Service, and from the Service's EndpointSlices to one of its ready pods,
round robin, as ingress-nginx proxies to endpoints rather than to the ClusterIP. The pod is reached the
way Kubernetes lets a process outside the pod network reach a pod's port: through the kubelet of the
pod's node (`/portForward/{namespace}/{pod}`, a WebSocket carrying one TCP connection), presenting the
controller's own kubelet client certificate. The bytes then travel the node's pipeline into the pod.

Every Ingress it serves gets `status.loadBalancer.ingress: [{ip: <its listening address>}]`. A request
no Ingress routes is a 404; one whose Service has no ready endpoint, or whose pod does not answer, a 503
or 502, as ingress-nginx answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from podnet.apiserver import ingressroutes

from podnet.client import ApiClient, ApiError, Informer, component_agent
from podnet.http1 import parse_http_response
from podnet.kubeconfig import ClientTls
from podnet.process import serve_until_triggered, start_status_server, wait_or_shutdown

log = logging.getLogger(__name__)

CONTROLLER = "podnet.io/ingress"
# The class made for it when the cluster has none of its own, the default one, as an ingress-nginx install
# makes its class: ordinary manifests name no class and are served.
DEFAULT_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                 "metadata": {"name": "podnet", "annotations": {ingressroutes.DEFAULT_CLASS_ANNOTATION: "true"}},
                 "spec": {"controller": CONTROLLER}}
UPSTREAM_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Headers that describe one hop, not the request (RFC 9110 section 7.6.1): never passed on.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "proxy-authorization", "proxy-authenticate", "host", "content-length"})
KINDS = ("ingresses", "ingressclasses", "services", "endpointslices", "nodes")


@dataclass(frozen=True, slots=True)
class IngressConfig:
    server: str
    token: str | None = None
    tls: ClientTls | None = None
    fallbacks: tuple[str, ...] = ()  # the cluster's other API servers, tried when `server` does not answer
    address: str = "127.0.0.10"  # where it listens, and what the Ingresses' status says
    port: int = 80
    kubelet_cert: str | None = None  # its certificate for the kubelets' API, and their CA
    kubelet_key: str | None = None
    kubelet_ca: str | None = None
    metrics_port: int | None = None


class UpstreamError(Exception):
    pass


def upstream_request(method: str, target: str, host: str, headers: list[tuple[str, str]], body: bytes,
                     client: str) -> bytes:
    """The request as sent to the pod: its own headers less hop-by-hop ones, the forwarding headers
    ingress-nginx adds, one request per connection."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in HOP_BY_HOP
              and not name.lower().startswith("x-forwarded-") and name.lower() != "x-real-ip"]
    lines += [f"X-Real-IP: {client}", f"X-Forwarded-For: {client}", f"X-Forwarded-Host: {host}",
              "X-Forwarded-Proto: http", f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class IngressController:
    def __init__(self, config: IngressConfig, client: ApiClient):
        self.config = config
        self.client = client
        self.informers = {kind: Informer(client, kind) for kind in KINDS}
        self._table: ingressroutes.Table | None = None
        self._turns = itertools.count()
        self._status_wanted = asyncio.Event()
        for kind in KINDS:
            self.informers[kind].add_handler(functools.partial(self._changed, kind))
        context = None
        if config.kubelet_cert:
            context = ssl.create_default_context(cafile=config.kubelet_ca)
            context.load_cert_chain(config.kubelet_cert, config.kubelet_key)
        self._kubelet_ssl = context
        self.session: aiohttp.ClientSession | None = None

    @property
    def synced(self) -> bool:
        return all(informer.synced for informer in self.informers.values())

    def _changed(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind in ("ingresses", "ingressclasses"):
            self._table = None
            self._status_wanted.set()

    def served(self) -> list[dict]:
        return ingressroutes.served(self.informers["ingresses"].store.values(),
                                    self.informers["ingressclasses"].store.values(), CONTROLLER)

    def table(self) -> ingressroutes.Table:
        if self._table is None:
            self._table = ingressroutes.build(self.served())
        return self._table

    async def ensure_class(self) -> None:
        classes = self.informers["ingressclasses"].store.values()
        if any((c.get("spec") or {}).get("controller") == CONTROLLER for c in classes):
            return
        try:
            await self.client.create(DEFAULT_CLASS)
            log.info("ingress: made the default IngressClass %s", DEFAULT_CLASS["metadata"]["name"])
        except ApiError as exc:
            if exc.code != 409:
                log.warning("ingress: IngressClass %s not made: %s", DEFAULT_CLASS["metadata"]["name"], exc)

    # --- status ---------------------------------------------------------------------------------------

    def want_statuses(self) -> None:
        self._status_wanted.set()

    async def write_statuses(self) -> None:
        """Keeps status.loadBalancer of every served Ingress naming this controller's address."""
        wanted = {"ingress": [{"ip": self.config.address}]}
        while True:
            await self._status_wanted.wait()
            self._status_wanted.clear()
            for ingress in self.served():
                if (ingress.get("status") or {}).get("loadBalancer") == wanted:
                    continue
                meta = ingress["metadata"]
                try:
                    await self.client.replace_status({**ingress, "status": {"loadBalancer": wanted}})
                except ApiError as exc:
                    log.info("ingress %s/%s: status not written (%s); trying again", meta["namespace"], meta["name"], exc)
                    asyncio.get_running_loop().call_later(1.0, self._status_wanted.set)

    # --- proxying -------------------------------------------------------------------------------------

    def _kubelet_url(self, endpoint: ingressroutes.Endpoint) -> str | None:
        node = self.informers["nodes"].store.get(endpoint.node)
        if node is None:
            return None
        status = node.get("status") or {}
        address = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not address or not port:
            return None
        scheme = "https" if self._kubelet_ssl else "http"
        return (f"{scheme}://{address}:{port}/portForward/{quote(endpoint.namespace)}/{quote(endpoint.pod)}"
                f"?port={endpoint.port}")

    async def _exchange(self, url: str, request: bytes) -> bytes:
        """One TCP connection into the pod through its kubelet: the request out, everything back."""
        assert self.session is not None
        async with self.session.ws_connect(url, ssl=self._kubelet_ssl if self._kubelet_ssl else True,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=UPSTREAM_TIMEOUT)) as ws:
            await ws.send_bytes(request)
            await ws.send_bytes(b"")  # our end of the stream: the request is whole
            received = bytearray()
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    received += message.data
                    if len(received) > MAX_RESPONSE_BYTES:
                        raise UpstreamError("response too large")
                elif message.type == aiohttp.WSMsgType.TEXT:
                    raise UpstreamError(message.data)
            return bytes(received)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        backend = ingressroutes.route(self.table(), host, request.path)
        if backend is None:
            return web.Response(status=404, text="404 Not Found\n")
        endpoints = ingressroutes.endpoints(backend, self.informers["services"].store,
                                            self.informers["endpointslices"].store.values())
        if not endpoints:
            return web.Response(status=503, text="503 Service Temporarily Unavailable\n")
        endpoint = endpoints[next(self._turns) % len(endpoints)]
        url = self._kubelet_url(endpoint)
        if url is None:
            return web.Response(status=502, text="502 Bad Gateway\n")
        body = await request.read()
        outgoing = upstream_request(request.method, request.path_qs, host, list(request.headers.items()), body,
                                    request.remote or "")
        try:
            raw = await asyncio.wait_for(self._exchange(url, outgoing), UPSTREAM_TIMEOUT)
            response = parse_http_response(raw, at_eof=True)
        except (aiohttp.ClientError, UpstreamError, TimeoutError, ValueError) as exc:
            log.info("%s %s → %s/%s (%s): %s", request.method, request.path, endpoint.namespace, endpoint.pod,
                     url, exc)
            return web.Response(status=502, text="502 Bad Gateway\n")
        if response is None:
            return web.Response(status=502, text="502 Bad Gateway\n")
        headers = [(name, value) for name, value in response.headers if name.lower() not in HOP_BY_HOP]
        return web.Response(status=response.status, reason=response.reason or None, body=response.body,
                            headers=headers)


async def serve(config: IngressConfig, *, shutdown_trigger: Callable[[], Awaitable[Any]] | None = None) -> None:
    await serve_until_triggered(functools.partial(_serve, config), shutdown_trigger)


async def _serve(config: IngressConfig, shutdown: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = ApiClient(config.server, config.token, tls=config.tls, fallbacks=config.fallbacks, user_agent=component_agent("ingress-controller"))
        stack.push_async_callback(client.close)
        controller = IngressController(config, client)
        controller.session = await stack.enter_async_context(aiohttp.ClientSession())
        if config.metrics_port is not None:
            runner, port = await start_status_server(config.address, config.metrics_port, lambda: controller.synced)
            stack.push_async_callback(runner.cleanup)
            log.info("ingress: /healthz and /metrics on %s:%d", config.address, port)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(informer.run()) for informer in controller.informers.values()]
            try:
                synced = asyncio.gather(*(i.wait_synced() for i in controller.informers.values()))
                if await wait_or_shutdown(shutdown, synced):
                    await controller.ensure_class()
                    app = web.Application()
                    app.router.add_route("*", "/{path:.*}", controller.handle)
                    runner = web.AppRunner(app, access_log=None)
                    await runner.setup()
                    stack.push_async_callback(runner.cleanup)
                    await web.TCPSite(runner, config.address, config.port).start()
                    tasks.append(group.create_task(controller.write_statuses()))
                    controller.want_statuses()
                    log.info("ingress controller %s serving HTTP on %s:%d", CONTROLLER, config.address, config.port)
                    await shutdown.wait()
            finally:
                for task in tasks:
                    task.cancel()
