"""`podnet ui`'s server: one page (podnet/ui/static/), its JSON API and its event stream.

- `POST /api/login` takes a bearer token, asks the API server who it is and what it may do
  (podnet/ui/access.py) and opens a session (an HttpOnly cookie); nothing else answers without one.
- `GET /api/events` is a Server-Sent Events stream: the whole view (topology, every namespace's service
  map) each time the informers or the agents moved, at most every `push_interval` seconds.
- `GET /api/matrix`, `GET /api/explain` and `POST /api/trace` answer the matrix, a cell's explanation and
  a packet's journey with the functions the CLI uses (podnet/observe/); probing and tracing send packets
  from pods, which the API server must allow the user (`create pods/exec` in the pod's namespace).
- `/healthz` and `/metrics`, as every podnet process has.

Reads of the API go out with the session's token (one set of informers per token, shared by its
sessions), so what the page shows is what RBAC lets that user read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from podnet.client import ApiClient, ApiError
from podnet.kubeconfig import ClientTls
from podnet.observe import ObserveError, journey
from podnet.observe import policy as observe
from podnet.process import metrics_response, serve_until_triggered, wait_or_shutdown
from podnet.rpc.session import RpcError
from podnet.ui import access, model
from podnet.ui.feeds import AgentFeed, Changes, ClusterFeed

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "podnet_ui"
KEEPALIVE = 15.0  # seconds between two comments on a quiet event stream (proxies close idle streams)
SYNC_TIMEOUT = 10.0
HOUSEKEEPING = 60.0  # seconds between two sweeps of expired sessions and the informers only they used


@dataclass(frozen=True, slots=True)
class UiConfig:
    server: str  # the API server's URL
    home: Path  # the local cluster's home: its agents' sockets and its processes
    tls: ClientTls | None = None  # the API server's CA (a client certificate in it is not used)
    address: str = "127.0.0.10"
    port: int = 6446
    session_ttl: float = 8 * 3600.0
    push_interval: float = 0.3
    counters_interval: float = 2.0


_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
    409: web.HTTPConflict, 415: web.HTTPUnsupportedMediaType, 422: web.HTTPUnprocessableEntity,
    429: web.HTTPTooManyRequests}


def _status_error(status: int, message: str) -> web.HTTPException:
    """An error answer `{"message": ...}`; a status the page has no use for is the API's failure: 502."""
    return _ERRORS.get(status, web.HTTPBadGateway)(text=json.dumps({"message": message}),
                                                   content_type="application/json")


class Ui:
    def __init__(self, config: UiConfig, shutdown: asyncio.Event):
        # Only the users' tokens speak for anyone: a client certificate in the configuration (an
        # administrator's kubeconfig) would make every user that administrator.
        if config.tls is not None:
            config = replace(config, tls=replace(config.tls, cert_pem=None, key_pem=None))
        self.config = config
        self.shutdown = shutdown
        self.sessions = access.Sessions(config.session_ttl)
        self.changes = Changes()
        self.agents = AgentFeed(config.home, self.changes, counters_interval=config.counters_interval)
        self.feeds: dict[str, ClusterFeed] = {}
        self._views: dict[str, tuple[int, bytes]] = {}  # token -> (version, the view as JSON)
        self.registry = CollectorRegistry()
        self.logins = Counter("podnet_ui_logins", "Logins by outcome.", ["result"], registry=self.registry)
        self.streams = Gauge("podnet_ui_event_streams", "Open event streams.", registry=self.registry)
        self.pushed = Counter("podnet_ui_views_pushed", "Views sent on event streams.", registry=self.registry)
        Gauge("podnet_ui_sessions", "Open sessions.", registry=self.registry).set_function(
            lambda: len(self.sessions))
        Gauge("podnet_ui_flows", "Policy verdicts held.", registry=self.registry).set_function(
            lambda: len(self.agents.flows))

    # ---- sessions -------------------------------------------------------------------------------

    def session(self, request: web.Request) -> access.Session:
        session = self.sessions.get(request.cookies.get(COOKIE), time.time())
        if session is None:
            raise _status_error(401, "not logged in")
        return session

    def feed(self, token: str) -> ClusterFeed:
        feed = self.feeds.get(token)
        if feed is None:
            feed = self.feeds[token] = ClusterFeed(self.config.server, token, self.config.tls, self.changes)
        return feed

    async def forget_unused_feeds(self) -> None:
        for token in set(self.feeds) - self.sessions.tokens():
            self._views.pop(token, None)
            await self.feeds.pop(token).close()

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            token = str(body.get("token") or "").strip()
        except (ValueError, AttributeError):
            raise _status_error(400, "the body is {\"token\": \"...\"}") from None
        async with ApiClient(self.config.server, token or None, tls=self.config.tls, user_agent="podnet-ui") as client:
            try:
                identity = await access.identify(client)
            except access.LoginRefused as exc:
                self.logins.labels("refused").inc()
                log.info("login refused", extra={"fields": {"why": str(exc)}})
                raise _status_error(401, str(exc)) from None
        self.logins.labels("ok").inc()
        log.info("login", extra={"fields": {"user": identity.user, "probes": identity.can_probe}})
        session_id = self.sessions.open(token, identity, time.time())
        self.feed(token)
        response = web.json_response(self._who(identity))
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", max_age=int(self.config.session_ttl))
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.close(request.cookies.get(COOKIE))
        await self.forget_unused_feeds()
        response = web.json_response({"loggedOut": True})
        response.del_cookie(COOKIE)
        return response

    @staticmethod
    def _who(identity: access.Identity) -> dict:
        return {"user": identity.user, "groups": list(identity.groups), "canProbe": identity.can_probe}

    async def whoami(self, request: web.Request) -> web.Response:
        return web.json_response(self._who(self.session(request).identity))

    # ---- the live view --------------------------------------------------------------------------

    def view(self, token: str) -> bytes:
        version = self.changes.version
        cached = self._views.get(token)
        if cached and cached[0] == version:
            return cached[1]
        feed = self.feed(token)
        pods, services = feed.objects("pods"), feed.objects("services")
        seen = model.connections(self.agents.records())
        namespaces = sorted(o["metadata"]["name"] for o in feed.objects("namespaces"))
        view = {
            "synced": feed.synced,
            "topology": model.topology(feed.objects("nodes"), pods, self.agents.processes, self.agents.rates,
                                       self.agents.backend.encapsulation, self.agents.bgp),
            "namespaces": namespaces,
            "maps": {ns: model.service_map(ns, pods, services, seen) for ns in namespaces},
        }
        body = json.dumps(view, separators=(",", ":")).encode()
        self._views[token] = (version, body)
        return body

    async def events(self, request: web.Request) -> web.StreamResponse:
        session_id = request.cookies.get(COOKIE)
        session = self.session(request)
        feed = self.feed(session.token)
        with contextlib.suppress(TimeoutError):
            await feed.wait_synced(SYNC_TIMEOUT)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.streams.inc()
        seen = -1
        try:
            while not self.shutdown.is_set():
                if self.sessions.get(session_id, time.time()) is None:
                    await response.write(b"event: logout\ndata: {}\n\n")
                    break
                if self.changes.version == seen:
                    await wait_or_shutdown(self.shutdown, self.changes.wait(seen, KEEPALIVE))
                    if self.changes.version == seen:
                        await response.write(b": quiet\n\n")
                        continue
                seen = self.changes.version
                await response.write(b"event: state\ndata: " + self.view(session.token) + b"\n\n")
                self.pushed.inc()
                await wait_or_shutdown(self.shutdown, asyncio.sleep(self.config.push_interval))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.dec()
        return response

    # ---- asking: matrix, explain, trace ---------------------------------------------------------

    async def _answer(self, work: Callable[[], Awaitable[dict]]) -> web.Response:
        try:
            return web.json_response(await work())
        except ObserveError as exc:
            raise _status_error(400, str(exc).removeprefix("error: ")) from None
        except ApiError as exc:
            raise _status_error(exc.code if 400 <= exc.code < 600 else 502, str(exc)) from None
        except (RpcError, OSError, TimeoutError) as exc:
            raise _status_error(502, f"a node agent did not answer: {exc}") from None

    async def _require_probe(self, client: ApiClient, namespace: str) -> None:
        if not await access.may_probe(client, namespace):
            where = f"in namespace {namespace}" if namespace else "in every namespace"
            raise _status_error(403, f"the API server does not allow you to send traffic from pods {where} "
                                     "(create pods/exec)")

    async def matrix(self, request: web.Request) -> web.Response:
        session = self.session(request)
        client = self.feed(session.token).client
        query = request.query
        namespace = query.get("namespace", "")
        try:
            ports = [int(p) for p in query.get("ports", "80").split(",") if p.strip()]
        except ValueError:
            raise _status_error(400, "ports are numbers separated by commas") from None
        protocols = [p.strip().upper() for p in query.get("protocols", "TCP").split(",") if p.strip()]
        if not ports or any(not 0 < p < 65536 for p in ports) or any(p not in ("TCP", "UDP") for p in protocols):
            raise _status_error(400, "ports 1-65535 and protocols TCP or UDP")
        probe = query.get("probe") in ("1", "true")
        if probe:
            await self._require_probe(client, namespace)

        async def work() -> dict:
            found = await observe.matrices(client, self.agents.socket_for, namespaces=[namespace] if namespace else None,
                                           ports=ports, protocols=protocols, probe=probe)
            return {**model.matrix(found.static, found.probed, found.pods), "namespace": namespace,
                    "refusedPolicies": found.refused_policies}

        return await self._answer(work)

    async def explain(self, request: web.Request) -> web.Response:
        session = self.session(request)
        client = self.feed(session.token).client
        query = request.query
        try:
            src, dst, port = query["from"], query["to"], int(query["port"])
        except (KeyError, ValueError):
            raise _status_error(400, "explain needs from, to and port") from None
        protocol = query.get("protocol", "TCP")

        async def work() -> dict:
            story = await observe.explain_connection(client, self.agents.socket_for, src, dst, port, protocol)
            answer = story.explanation

            def verdict(v: Any) -> dict:
                return {"allowed": v.allowed, "reason": v.reason, "policy": v.policy, "rule": v.rule_index}

            return {"from": answer.src, "to": answer.dst, "port": port, "protocol": answer.protocol,
                    "allowed": answer.allowed, "text": answer.text(), "egress": verdict(answer.egress),
                    "ingress": verdict(answer.ingress), "flows": [r.to_dict() for r in story.latest()],
                    "seen": len(story.records), "unreachable": story.unreachable}

        return await self._answer(work)

    async def trace(self, request: web.Request) -> web.Response:
        session = self.session(request)
        client = self.feed(session.token).client
        try:
            body = await request.json()
            src, destination = str(body["src"]), str(body["destination"])
            port_text, protocol = str(body["port"]), str(body.get("protocol") or "TCP").upper()
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _status_error(400, "trace needs src, destination and port") from None
        if protocol not in ("TCP", "UDP"):
            raise _status_error(400, f"the protocol is TCP or UDP, not {protocol!r}")
        await self._require_probe(client, journey.split_pod(src, "default")[0])

        async def work() -> dict:
            path = await journey.trace(client, self.agents.socket_for, src, destination, port_text, protocol)
            return model.journey(path.src, path.src_node, f"{path.ip}:{path.port}", protocol, path.stages,
                                 split=path.split, far=len(path.far), far_node=path.far_node, answered=path.answered)

        return await self._answer(work)

    # ---- the rest -------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        return metrics_response(self.registry)

    @web.middleware
    async def json_posts_only(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A POST must carry JSON: a form on another site cannot send that without the browser asking this
        server first (CORS), which it never allows, so no other page can log a visitor in or trace."""
        if request.method == "POST" and request.content_type != "application/json":
            raise _status_error(415, "POST bodies are application/json")
        return await handler(request)

    async def housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            if self.sessions.expire(time.time()):
                await self.forget_unused_feeds()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.json_posts_only])
        app.router.add_get("/", self.index)
        app.router.add_static("/static", STATIC)
        app.router.add_post("/api/login", self.login)
        app.router.add_post("/api/logout", self.logout)
        app.router.add_get("/api/whoami", self.whoami)
        app.router.add_get("/api/events", self.events)
        app.router.add_get("/api/matrix", self.matrix)
        app.router.add_get("/api/explain", self.explain)
        app.router.add_post("/api/trace", self.trace)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def close(self) -> None:
        await self.agents.close()
        for feed in self.feeds.values():
            await feed.close()
        self.feeds.clear()


async def serve(config: UiConfig, *, shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
                started: Callable[[int], None] | None = None) -> None:
    """Serves until `shutdown_trigger()` completes; `started(port)` is told the real port."""

    async def run(shutdown: asyncio.Event) -> None:
        ui = Ui(config, shutdown)
        runner = web.AppRunner(ui.app(), access_log=None)
        await runner.setup()
        background = [asyncio.create_task(ui.agents.run()), asyncio.create_task(ui.housekeeping())]
        try:
            site = web.TCPSite(runner, config.address, config.port, shutdown_timeout=2.0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            log.info("serving", extra={"fields": {"url": f"http://{config.address}:{port}/"}})
            if started is not None:
                started(port)
            await shutdown.wait()
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runner.cleanup()
            await ui.close()
            log.info("stopped")

    await serve_until_triggered(run, shutdown_trigger)
