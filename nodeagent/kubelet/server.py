"""The kubelet API of a node agent: an HTTPS server on the node's address, at the port the Node publishes in
`status.daemonEndpoints.kubeletEndpoint.Port`, where the API server relays the streams that Kubernetes
routes through the kubelet (`exec`, `containerLogs`, `portForward`; `ROUTES` is the table to extend).

Only the API server may call it: the server speaks TLS only with clients whose certificate chains to the
cluster CA, and of those admits the API server's kubelet client (CN kube-apiserver-kubelet-client) and
cluster administrators (O system:masters), as a kubelet's webhook authorization would; anyone else gets a
403 `Status`. An agent given no certificate serves no kubelet API at all, rather than one anybody could use.

Handlers find the pod the agent runs (`Kubelet.target`), answer failures with a `Status` that the API
server passes on, and do their work through the agent's own operations.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from podnet.nodeagent.kubelet.containerlogs import container_logs
from podnet.nodeagent.kubelet.exec import exec_
from podnet.nodeagent.kubelet.node import Handler, Kubelet, KubeletError
from podnet.nodeagent.kubelet.portforward import port_forward

if TYPE_CHECKING:
    from podnet.nodeagent.agent import NodeAgent

log = logging.getLogger(__name__)

# (method, path, handler): the kubelet's paths. Another stream adds its own line here.
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/exec/{namespace}/{pod}/{container}", exec_),
    ("POST", "/exec/{namespace}/{pod}/{container}", exec_),
    ("GET", "/containerLogs/{namespace}/{pod}/{container}", container_logs),
    ("GET", "/portForward/{namespace}/{pod}", port_forward),
]


# Who may use the kubelet API: the API server's kubelet client, and cluster administrators.
ADMITTED_USERS = frozenset({"kube-apiserver-kubelet-client"})
ADMITTED_GROUPS = frozenset({"system:masters"})
# Who may only open connections into pods' ports: the ingress controller, which proxies to them.
FORWARDING_USERS = frozenset({"system:podnet:ingress"})


def client_identity(request: web.Request) -> tuple[str, frozenset[str]]:
    """(CN, Os) of the verified client certificate of the request's connection."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    fields = [field for rdn in (certificate or {}).get("subject", ()) for field in rdn]
    user = next((value for key, value in fields if key == "commonName"), "system:anonymous")
    return user, frozenset(value for key, value in fields if key == "organizationName")


def server_context(cert_file: str, key_file: str, client_ca_file: str) -> ssl.SSLContext:
    """TLS that demands a client certificate chaining to the cluster CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def make_app(kubelet: Kubelet) -> web.Application:
    @web.middleware
    async def authorize(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        user, groups = client_identity(request)
        forwarding = user in FORWARDING_USERS and request.path.startswith("/portForward/")
        if user not in ADMITTED_USERS and not groups & ADMITTED_GROUPS and not forwarding:
            verb = "create" if request.method == "POST" else "get"
            error = KubeletError(403, "Forbidden", f"Forbidden (user={user}, verb={verb}, resource=nodes, subresource=proxy)")
            return web.json_response(error.status(), status=403)
        try:
            return await handler(request)
        except KubeletError as exc:
            return web.json_response(exc.status(), status=exc.code)

    app = web.Application(middlewares=[authorize])
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, _bind(handler, kubelet))
    return app


def _bind(handler: Handler, kubelet: Kubelet) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request, kubelet)

    return route


async def start(agent: NodeAgent) -> Callable[[], Awaitable[None]] | None:
    """Serves the kubelet API for `agent` on its address and `kubelet_port` (0: any free port), recording
    the port in `agent.kubelet_port`; returns the cleanup, or None when it has no certificate."""
    config = agent.config
    if not (config.kubelet_cert_file and config.kubelet_key_file and config.kubelet_client_ca_file):
        log.info("no kubelet serving certificate and client CA: the kubelet API (exec, logs) is not served")
        return None
    context = server_context(config.kubelet_cert_file, config.kubelet_key_file, config.kubelet_client_ca_file)
    app = make_app(Kubelet(agent))
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.address, config.kubelet_port, ssl_context=context)
    await site.start()
    agent.kubelet_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    log.info("kubelet API on %s:%d", config.address, agent.kubelet_port)
    return runner.cleanup
