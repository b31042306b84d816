"""The API server process: the aiohttp application and `serve()`.

`make_app(config, store)` builds the application over an opened store (in-process tests use it);
`serve(config)` opens the store named by the config, listens (TLS when a certificate is given), runs
the periodic compaction and the in-process controllers, and shuts down when `shutdown_trigger`
returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

import yarl
from aiohttp import web
from podnet.apiserver import (
    accessreview,
    fieldvalidation,
    flowcontrolapi,
    openapi,
    portforward,
    status,
    streams,
)
from podnet.apiserver.audit.log import AuditLog, load_policy
from podnet.apiserver.auth import MASTERS_GROUP, Authenticator, User, parse_token_file
from podnet.apiserver.claimstore import repair_periodically
from podnet.apiserver.config import ApiServerConfig, read_flag_file
from podnet.apiserver.controllers.manager import run_all
from podnet.apiserver.controllers.runner import Settings
from podnet.apiserver.customresources import routes as custom_routes
from podnet.apiserver.election import CONTROLLER_MANAGER_LEASE
from podnet.apiserver.elector import LeaderElector
from podnet.apiserver.endpointreconciler import EndpointReconciler
from podnet.apiserver.eventttl import expire_events
from podnet.apiserver.flowcontrol import FlowControl
from podnet.apiserver.handlers import RESOURCE_KEY, USER_KEY, VERB_KEY, Resources, respond
from podnet.apiserver.impersonation import GROUP_HEADER, impersonate
from podnet.apiserver.peerleases import Peer
from podnet.apiserver.rbac.authorizer import Attributes
from podnet.apiserver.scale import ScaleRoutes
from podnet.apiserver.scale import discovery as scale_discovery
from podnet.apiserver.serving import loopback_context, peer_certificate, server_context
from podnet.apiserver.status import ApiError
from podnet.apiserver.storage import open_store
from podnet.apiserver.storage.base import Store
from podnet.apiserver.tokens import service as sa_tokens
from podnet.apiserver.watch import WatchHub
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import podnet
from podnet.api.kinds import KINDS
from podnet.client import ApiClient, component_agent
from podnet.pki import load_certificates
from podnet.process import metrics_response
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Paths anyone may read, as kube-apiserver's system:public-info-viewer role allows.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/version", "/version/"})
KUBERNETES_VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0"}
# A request target longer than this is answered 414 with a Status. The HTTP parser reads request lines up to
# Go's default header limit (1 MiB), so that the answer comes from here and not as its plain-text 400.
MAX_URL_BYTES = 8192
_MAX_REQUEST_LINE_BYTES = 1 << 20


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request_total", "Requests by verb, resource and HTTP code.", ["verb", "resource", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency of non-watch requests by verb, resource and HTTP code.",
            ["verb", "resource", "code"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.watchers = Gauge("apiserver_registered_watchers", "Open watch streams by resource.", ["resource"], registry=self.registry)


def load_authenticator(config: ApiServerConfig) -> Authenticator:
    client_cas = read_flag_file(config.client_ca_file, "--client-ca-file", load_certificates) if config.client_ca_file else []
    tokens = read_flag_file(config.token_file, "--token-file", lambda data: parse_token_file(data.decode())) if config.token_file else None
    return Authenticator(tokens, client_cas)


def store_options(config: ApiServerConfig) -> dict[str, object]:
    """What open_store takes beside the URL: etcd's TLS material, when the config names it."""
    if not config.etcd_cafile:
        return {}
    from podnet.apiserver.storage.etcd import EtcdTls

    def pem(path: str | None, flag: str) -> bytes:
        return read_flag_file(str(path), flag, lambda data: data)

    return {"tls": EtcdTls(pem(config.etcd_cafile, "--etcd-cafile"), pem(config.etcd_certfile, "--etcd-certfile"),
                           pem(config.etcd_keyfile, "--etcd-keyfile"))}


def check_files(config: ApiServerConfig) -> None:
    """Reads every file the config names (TLS, client CA, root CA, tokens, etcd's TLS) as serve() will, so that a missing
    or bad one stops the command with one line (ValueError) before anything starts."""
    load_authenticator(config)
    store_options(config)
    sa_tokens.load_keys(config)
    if config.audit_policy_file:
        load_policy(config.audit_policy_file)
    if config.root_ca_file:
        read_flag_file(config.root_ca_file, "--root-ca-file", load_certificates)
    try:
        ssl_context(config)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(f"--tls-cert {config.tls_cert} / --tls-key {config.tls_key}: {reason}") from None


def _resource_path(path: str) -> bool:
    """Whether a path names resources (`/api/v1/pods`, `/apis/apps/v1/...`) rather than discovery or the like."""
    parts = path.strip("/").split("/")
    return (parts[0] == "api" and len(parts) >= 3) or (parts[0] == "apis" and len(parts) >= 4)


def _verb_of(method: str) -> str:
    return {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def _error_response(request: web.Request, error: ApiError) -> web.Response:
    if isinstance(error, status.PathNotFound) and error.plain:
        return web.Response(status=404, text=error.PAGE, headers={"X-Content-Type-Options": "nosniff"})
    return respond(request, error.status, error.code)


def _http_error(error: web.HTTPException, request: web.Request, body_limit: int) -> ApiError:
    if isinstance(error, web.HTTPNotFound):
        return status.path_not_found(request.path)
    if isinstance(error, web.HTTPMethodNotAllowed):
        return status.method_not_allowed(request.method, request.path)
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return status.too_large(body_limit)
    reason = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 415: "UnsupportedMediaType"}.get(error.status, "BadRequest")
    return ApiError(status.status(error.status, reason, error.text or error.reason))


def make_app(config: ApiServerConfig, store: Store, *, authenticator: Authenticator | None = None,
             audit: AuditLog | None = None) -> web.Application:
    metrics = Metrics()
    hub = WatchHub(store, config.watch_cache_events, config.max_store_watches)
    resources = Resources(config, store, hub, metrics.watchers)
    authenticator = authenticator or load_authenticator(config)
    service_account_tokens = sa_tokens.ServiceAccountTokens(sa_tokens.load_keys(config), store, config.storage_timeout)

    @web.middleware
    async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            if len(request.raw_path) > MAX_URL_BYTES:
                raise status.uri_too_long(MAX_URL_BYTES)
            response = await handler(request)
        except ApiError as e:
            response = _error_response(request, e)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = _error_response(request, _http_error(e, request, config.max_body_bytes))
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            # A bug, not the client's fault: logged here with its traceback, never sent.
            log.exception("unhandled error serving %s %s", request.method, request.path)
            error = status.internal("an internal error occurred; the server log has the details")
            response = respond(request, error.status, error.code)
        verb = request.get(VERB_KEY) or _verb_of(request.method)
        resource = request.get(RESOURCE_KEY, "")
        metrics.requests.labels(verb.upper(), resource, str(response.status)).inc()
        if verb != "watch":
            metrics.latency.labels(verb.upper(), resource, str(response.status)).observe(time.perf_counter() - started)
        return response

    @web.middleware
    async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        user = authenticator.authenticate(request.headers.get("Authorization"), peer_certificate(request))
        if user is None:
            user = await service_account_tokens.authenticate(request.headers.get("Authorization"))
        if user is None:
            raise status.unauthorized()
        if audit is not None:
            audit.authenticated(request, user)
        request[USER_KEY] = acting = impersonate(user, request.headers, request.headers.getall(GROUP_HEADER, []),
                                                 resources.rbac.policy)
        if not _resource_path(request.path):
            # Discovery, OpenAPI and /metrics: authorized by path, as RBAC's nonResourceURLs rules say.
            verb = request.method.lower()
            if not resources.allowed(acting, Attributes(verb, path=request.path)).allowed:
                raise status.forbidden(acting.name, verb, None, None, request.path)
        return await handler(request)

    flow_control = FlowControl(config.max_requests_inflight, config.max_watches_per_user, config.flow_queue_wait,
                               metrics.registry)
    app = web.Application(middlewares=[errors, authenticate, flow_control.middleware],
                          client_max_size=config.max_body_bytes, handler_args={"max_line_size": _MAX_REQUEST_LINE_BYTES})
    flow_control.install(app)
    if audit is not None:
        app.middlewares.insert(0, audit.install(app))  # outermost: it sees every answer, errors included
    resources.add_routes(app)
    ScaleRoutes(resources).add_routes(app)
    accessreview.add_routes(app, resources)
    flowcontrolapi.add_routes(app, resources)
    service_account_tokens.add_routes(app, resources)
    portforward.add_routes(app, streams.add_routes(app, resources, config))

    async def probe(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2.0):
                await store.current_revision()
        except Exception as e:  # any failure of the store makes the server unready
            # The store's error names its addresses and state: only a caller who proves who they are reads
            # it; anyone else reads "reason withheld", as kube-apiserver answers. The log always has it.
            reason = f"{type(e).__name__}: {e}"
            log.warning("%s: the store failed: %s", request.path, reason)
            if authenticator.authenticate(request.headers.get("Authorization"), peer_certificate(request)) is None:
                reason = "reason withheld"
            return web.Response(status=503, text=f"[-]etcd failed: {reason}\nhealthz check failed\n")
        if not resources.rbac.ready:  # kube-apiserver's post-start hook: no one but masters is allowed before it
            return web.Response(status=503, text="[-]poststarthook/rbac/bootstrap-roles failed: not finished\n"
                                                 "healthz check failed\n")
        return web.Response(text="ok")

    async def livez(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def version(request: web.Request) -> web.Response:
        return web.json_response(
            KUBERNETES_VERSION
            | {"gitCommit": f"podnet-{podnet.__version__}", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "", "platform": "linux/amd64"}
        )

    async def metrics_handler(request: web.Request) -> web.Response:
        return metrics_response(metrics.registry)

    for path, handler in (("/healthz", probe), ("/readyz", probe), ("/livez", livez), ("/metrics", metrics_handler)):
        app.router.add_get(path, handler)
    _add_get_with_slash(app, "/version", version)
    add_discovery_routes(app, request_host=config.host, custom_groups=resources.crds.groups)
    openapi.add_routes(app, resources.crds.openapi_documents, resources.crds.openapi_v2)
    custom_routes.add_routes(app, resources)  # after every built-in path: they match any group
    fieldvalidation.install(app)

    async def background(app: web.Application):
        tasks = [asyncio.create_task(resources.namespaces.run(), name="namespace cache"),
                 asyncio.create_task(resources.rbac.run(), name="rbac cache"),
                 asyncio.create_task(resources.crds.run(), name="custom resource definitions")]
        if config.compaction_interval > 0:
            tasks.append(asyncio.create_task(compact_periodically(store, hub, config.compaction_interval)))
        if config.allocation_repair_interval > 0:
            tasks.append(asyncio.create_task(
                repair_periodically(resources.repair_claims, config.allocation_repair_interval), name="allocation repair"))
        if config.event_ttl > 0:
            tasks.append(asyncio.create_task(expire_events(store, config.event_ttl), name="event expiry"))
        yield
        await cancel_and_wait(*tasks)
        await resources.crds.close()
        await hub.close()

    app.cleanup_ctx.append(background)

    async def end_watches(app: web.Application) -> None:
        hub.end_all()

    app.on_shutdown.append(end_watches)
    return app


async def compact_periodically(store: Store, hub: WatchHub, interval: float) -> None:
    """As kube-apiserver: each tick compacts to the revision seen at the previous tick, so every
    watcher gets at least one interval to catch up."""
    previous = 0
    while True:
        await asyncio.sleep(interval)
        try:
            current = await store.current_revision()
            if previous:
                await store.compact(previous)
                hub.forget_before(previous)
                log.debug("compacted storage at revision %d", previous)
            previous = current
        except Exception as e:  # the store may be down; compaction waits for the next tick
            log.warning("compaction failed: %s", e)


# --- discovery ----------------------------------------------------------------------------------------

_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


# Resources that are not stored kinds (answered on the spot), by group and version.
_UNSTORED: dict[tuple[str, str], list[dict]] = accessreview.DISCOVERY | flowcontrolapi.DISCOVERY


def _api_resources(group: str, version: str) -> list[dict]:
    resources = list(_UNSTORED.get((group, version), []))
    for kind in KINDS:
        if (kind.group, kind.version) != (group, version):
            continue
        resources.append(
            {
                "name": kind.plural,
                "singularName": kind.singular,
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": _VERBS if kind.kind == "Namespace" else sorted([*_VERBS, "deletecollection"]),
                "shortNames": list(kind.short_names),
                "storageVersionHash": "",
            }
            | ({"categories": list(kind.categories)} if kind.categories else {})
        )
        if kind.has_status:
            resources.append(
                {"name": f"{kind.plural}/status", "singularName": "", "namespaced": kind.namespaced, "kind": kind.kind, "verbs": ["get", "patch", "update"]}
            )
        resources.extend(scale_discovery(kind))
        resources.extend(streams.subresources(kind))
        resources.extend(portforward.subresources(kind))
        resources.extend(sa_tokens.subresources(kind))
    return resources


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for group, version in [*((kind.group, kind.version) for kind in KINDS), *_UNSTORED]:
        if group and version not in groups.setdefault(group, []):
            groups[group].append(version)
    return groups


def _group(name: str, versions: list[str]) -> dict:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def _add_get_with_slash(app: web.Application, path: str, handler: Callable[[web.Request], Awaitable[web.Response]]) -> None:
    """Discovery paths answer with and without a trailing slash (the official client asks for `/api/`)."""
    app.router.add_get(path, handler)
    app.router.add_get(path + "/", handler)


def add_discovery_routes(app: web.Application, request_host: str,
                         custom_groups: Callable[[], dict[str, list[str]]] = dict) -> None:
    core_versions = sorted({k.version for k in KINDS if not k.group})

    def reply(body: dict) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return respond(request, body)

        return handler

    _add_get_with_slash(
        app,
        "/api",
        reply({"kind": "APIVersions", "versions": core_versions, "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request_host}]}),
    )
    for version in core_versions:
        _add_get_with_slash(
            app,
            f"/api/{version}", reply({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": version, "resources": _api_resources("", version)})
        )
    groups = _groups()
    built_in = [_group(name, versions) for name, versions in groups.items()]

    async def group_list(request: web.Request) -> web.Response:
        custom = [_group(name, versions) for name, versions in custom_groups().items() if name not in groups]
        return respond(request, {"kind": "APIGroupList", "apiVersion": "v1", "groups": built_in + custom})

    _add_get_with_slash(app, "/apis", group_list)
    for name, versions in groups.items():
        _add_get_with_slash(app, f"/apis/{name}", reply({"kind": "APIGroup", "apiVersion": "v1"} | _group(name, versions)))
        for version in versions:
            _add_get_with_slash(
                app,
                f"/apis/{name}/{version}",
                reply({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{name}/{version}", "resources": _api_resources(name, version)}),
            )


# --- the process --------------------------------------------------------------------------------------


def ssl_context(config: ApiServerConfig) -> ssl.SSLContext | None:
    if not config.tls_cert or not config.tls_key:
        return None
    return server_context(config.tls_cert, config.tls_key, request_client_certs=bool(config.client_ca_file))


async def _run_controllers(config: ApiServerConfig, url: str, token: str | None) -> None:
    """Runs the controllers over HTTP to this server, as a separate controller manager would; if they stop,
    the server keeps serving."""
    client = ApiClient(url, token, ssl_context=loopback_context(config.tls_cert) if config.tls_cert else None,
                       user_agent=component_agent("kube-controller-manager"))
    try:
        settings = Settings.from_config(config, url)
        reconciler = EndpointReconciler(client, Peer(settings.api_address, settings.api_port), socket.gethostname())
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(reconciler.run(), name="kubernetes endpoints")
            if config.leader_elect:
                # Stable across restarts, unlike kube-controller-manager's hostname_uuid: one address serves one
                # API server at a time, and a server restarted after a crash resumes its lease instead of
                # waiting it out.
                identity = f"{socket.gethostname()}_{yarl.URL(url).authority}"
                elector = LeaderElector(client, CONTROLLER_MANAGER_LEASE, identity, config.leader_election)
                tasks.create_task(elector.run(lambda: run_all(client, config)), name="controllers")
            else:
                tasks.create_task(run_all(client, config), name="controllers")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the controllers stopped; the API keeps serving")
    finally:
        await client.close()


async def serve(config: ApiServerConfig, *, shutdown_trigger: Callable[[], Awaitable[object]] | None = None) -> None:
    config.validate()
    async with contextlib.AsyncExitStack() as stack:
        store = open_store(config.store, **store_options(config))
        await store.open()
        stack.push_async_callback(store.close)
        authenticator = load_authenticator(config)
        if authenticator.open:
            log.warning("neither a token file nor a client CA given: the API server is open, every request is "
                        "treated as an administrator")
        loopback_token = None
        if not authenticator.open:
            # The in-process controllers authenticate with a token that exists only in this process.
            loopback_token = secrets.token_urlsafe(32)
            authenticator.add(loopback_token, User("system:apiserver", "", (MASTERS_GROUP,)))
        audit = None
        if config.audit_policy_file and config.audit_log_path:
            audit = stack.enter_context(AuditLog.open(config.audit_policy_file, config.audit_log_path))
        app = make_app(config, store, authenticator=authenticator, audit=audit)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context(config))
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"{config.scheme}://{'127.0.0.1' if config.host in ('0.0.0.0', '') else config.host}:{port}"
        log.info("API server listening", extra={"fields": {"url": url, "store": config.store.split("://")[0]}})
        async with asyncio.TaskGroup() as tasks:
            controllers = tasks.create_task(_run_controllers(config, url, loopback_token)) if config.controllers else None
            if shutdown_trigger is None:
                await asyncio.Event().wait()
            else:
                await shutdown_trigger()
            if controllers is not None:
                controllers.cancel()
        log.info("API server stopping")
