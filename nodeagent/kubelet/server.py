"""The kubelet API of a node agent: an HTTP server on the node's address, at the port the Node publishes in
`status.daemonEndpoints.kubeletEndpoint.Port`, where the API server relays the streams that Kubernetes
routes through the kubelet (`exec`, `containerLogs`, `portForward`; `ROUTES` is the table to extend).

Only the API server may call it: every request carries the kubelet client token (a file readable only by
its owner, given to both the API server and the agents) as a bearer token. An agent given no token file
serves no kubelet API at all, rather than one anybody could use.

Handlers find the pod the agent runs (`Kubelet.pod`), answer failures with a `Status` that the API
server passes on, and do their work through the agent's own operations.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
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


def read_token(path: str | Path) -> str:
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"kubelet token file {path} is empty")
    return token


def make_app(kubelet: Kubelet, token: str) -> web.Application:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return web.json_response(KubeletError(401, "Unauthorized", "Unauthorized").status(), status=401)
        try:
            return await handler(request)
        except KubeletError as exc:
            return web.json_response(exc.status(), status=exc.code)

    app = web.Application(middlewares=[authenticate])
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, _bind(handler, kubelet))
    return app


def _bind(handler: Handler, kubelet: Kubelet) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request, kubelet)

    return route


async def start(agent: NodeAgent) -> Callable[[], Awaitable[None]] | None:
    """Serves the kubelet API for `agent` on its address and `kubelet_port` (0: any free port), recording
    the port in `agent.kubelet_port`; returns the cleanup, or None when no token file is configured."""
    config = agent.config
    if not config.kubelet_token_file:
        log.info("no kubelet token file: the kubelet API (exec, logs) is not served")
        return None
    app = make_app(Kubelet(agent), read_token(config.kubelet_token_file))
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.address, config.kubelet_port)
    await site.start()
    agent.kubelet_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    log.info("kubelet API on %s:%d", config.address, agent.kubelet_port)
    return runner.cleanup
