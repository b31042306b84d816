"""kube-proxy, the process: informers → change trackers → a bounded-frequency runner → `rules.compute`
→ one `services.apply` to the node agent over its RPC socket.

As in Kubernetes: nothing is programmed until the Service and EndpointSlice caches have synced; the
first sync and every sync after the agent comes back (a new RPC connection) send the whole table; a
burst of changes costs one sync no sooner than `min_sync_interval` after the previous one, and a resync
runs every `max_sync_interval` regardless. The agent keeps the rules when this process dies; a restarted
kube-proxy lists, computes and sends the same table again, which the agent swaps in without touching
established connections.

For externalTrafficPolicy Local LoadBalancer Services it serves the healthCheckNodePort on the node
address, as kube-proxy's service health server does: 200 with the count of this node's ready endpoints
when there is at least one, 503 otherwise, so a load balancer sends traffic only to nodes that can keep
the client's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from podnet.nodeagent.kubeproxy import rules
from podnet.nodeagent.kubeproxy.tracker import ChangeTracker, apply_changes
from podnet.overlay.pipeline.nat import ProxyTable
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from podnet.api.keys import object_key
from podnet.backends import PROXY_MODES
from podnet.client import ApiClient, Informer
from podnet.kubeconfig import ClientTls
from podnet.process import serve_until_triggered, start_status_server, wait_or_shutdown
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcClient, RpcError
from podnet.runner import BoundedFrequencyRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    node: str
    mode: str
    server: str
    agent_socket: str
    token: str | None = None
    tls: ClientTls | None = None  # the API server's CA (and our certificate)
    fallbacks: tuple[str, ...] = ()  # the cluster's other API servers, tried when `server` does not answer
    address: str | None = None  # None: the Node's InternalIP
    metrics_port: int | None = 0  # None: no status server; 0: any free port
    service_cidr: str = "10.96.0.0/12"
    min_sync_interval: float = 0.05
    max_sync_interval: float = 30.0
    agent_retry_min: float = 0.05
    agent_retry_max: float = 0.5


class _Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.sync_duration = Histogram(
            "podnet_kubeproxy_sync_proxy_rules_duration_seconds",
            "Time to compute and apply the service table",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.programming = Histogram(
            "podnet_kubeproxy_network_programming_duration_seconds",
            "From the first change a sync carries to the table being live in the agent",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.syncs = Counter(
            "podnet_kubeproxy_syncs", "Syncs sent to the agent, by kind", ["kind"], registry=registry
        )
        self.rules = Gauge("podnet_kubeproxy_rules", "Rules in the last applied table", registry=registry)
        self.reconnects = Counter(
            "podnet_kubeproxy_agent_connects", "Connections made to the node agent", registry=registry
        )
        self.last_sync = Gauge(
            "podnet_kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "When the last sync succeeded",
            registry=registry,
        )


class Proxier:
    def __init__(self, config: ProxyConfig, client: ApiClient, registry: CollectorRegistry):
        if config.mode not in PROXY_MODES:
            raise ValueError(f"--mode must be one of {', '.join(PROXY_MODES)}, not {config.mode!r}")
        self.config = config
        self.client = client
        self.metrics = _Metrics(registry)
        self.services = Informer(client, "services")
        self.slices = Informer(client, "endpointslices")
        self.nodes = Informer(client, "nodes", field_selector=f"metadata.name={config.node}")
        self.service_changes = ChangeTracker(rules.service_info, object_key)
        self.slice_changes = ChangeTracker(rules.slice_info, object_key)
        self.service_state: dict[str, rules.ServiceInfo] = {}
        self.slice_state: dict[str, rules.SliceInfo] = {}
        self.runner = BoundedFrequencyRunner(
            "sync",
            self.sync,
            min_interval=config.min_sync_interval,
            max_interval=config.max_sync_interval,
            retry=config.agent_retry_min,
            max_retry=config.agent_retry_max,
            retry_on=(ConnectionError, OSError, TimeoutError, RpcError),
        )
        self.services.add_handler(self._on_service)
        self.slices.add_handler(self._on_slice)
        self.agent: RpcClient | None = None
        self.applied: ProxyTable | None = None  # the table the agent has, as sent on the current connection
        self.pending_since: float | None = None  # when the oldest change not yet applied arrived
        self.last_synced: float | None = None  # wall clock of the last successful sync, for /healthz
        self.health_counts: dict[
            int, tuple[str, int]
        ] = {}  # healthCheckNodePort -> (service, local endpoints)
        self.health: HealthCheckServer | None = None

    # ---- events ----------------------------------------------------------------------------------

    def _on_service(self, event: str, old: dict | None, new: dict | None) -> None:
        if self.service_changes.update(old, new):
            self._changed()

    def _on_slice(self, event: str, old: dict | None, new: dict | None) -> None:
        if self.slice_changes.update(old, new):
            self._changed()

    def _changed(self) -> None:
        if self.pending_since is None:
            self.pending_since = time.monotonic()
        self.runner.trigger()

    # ---- sync ------------------------------------------------------------------------------------

    def compute(self) -> ProxyTable:
        apply_changes(self.service_state, self.service_changes.take())
        apply_changes(self.slice_state, self.slice_changes.take())
        return rules.compute(
            self.service_state, self.slice_state.values(), self.config.node, self.config.mode
        )

    async def sync(self) -> None:
        started = time.monotonic()
        pending_since = self.pending_since
        self.pending_since = None
        table = self.compute()
        self.health_counts = rules.health_check_counts(table)
        try:
            agent = await self._agent()
            if table != self.applied:
                kind = "full" if self.applied is None else "changes"
                result = await agent.call(
                    AgentMethod.SERVICES_APPLY, {"mode": self.config.mode, "table": table.to_data()}, timeout=30.0
                )
                self.applied = table
                rule_count = int((result or {}).get("rules", 0))
                self.metrics.syncs.labels(kind).inc()
                self.metrics.rules.set(rule_count)
                if kind == "full":
                    log.info("full table of %d rules applied", rule_count)
        except BaseException:
            if pending_since is not None:  # still to be applied: keep when it started waiting
                self.pending_since = min(pending_since, self.pending_since or pending_since)
            raise
        finished = time.monotonic()
        self.metrics.sync_duration.observe(finished - started)
        if pending_since is not None:
            self.metrics.programming.observe(finished - pending_since)
        self.last_synced = time.time()
        self.metrics.last_sync.set(self.last_synced)
        if self.health is not None:
            await self.health.reconcile()

    async def _agent(self) -> RpcClient:
        """The connection to the agent; a new one means the agent may have restarted with an empty
        table, so the next apply sends the full table again."""
        if self.agent is not None and self.agent.connected:
            return self.agent
        if self.agent is not None:
            await self.agent.close()
            self.agent = None
        self.applied = None
        self.agent = await RpcClient(self.config.agent_socket).connect()
        self.metrics.reconnects.inc()
        log.info("connected to the node agent at %s", self.config.agent_socket)
        return self.agent

    async def watch_agent(self, shutdown: asyncio.Event) -> None:
        """Notices an agent restart even when nothing changes: the connection drops, and a full sync
        goes to the new agent as soon as it listens."""
        while not shutdown.is_set():
            if self.agent is not None and not self.agent.connected and self.applied is not None:
                self.runner.trigger()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), 0.1)

    def node_address(self) -> str | None:
        if self.config.address:
            return self.config.address
        node = self.nodes.store.get(self.config.node) or {}
        for address in (node.get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                return address.get("address")
        return None

    def healthy(self) -> bool:
        return self.last_synced is not None

    async def close(self) -> None:
        if self.agent is not None:
            await self.agent.close()




class HealthCheckServer:
    """kube-proxy's service health server: one listener per healthCheckNodePort on the node address."""

    def __init__(self, address: str, counts: Callable[[], dict[int, tuple[str, int]]]):
        self.address = address
        self.counts = counts
        self.sites: dict[int, web.TCPSite] = {}
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._answer)
        self.runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self.runner.setup()

    async def _answer(self, request: web.Request) -> web.Response:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        service, local = self.counts().get(sockname[1] if sockname else 0, ("", 0))
        namespace, _, name = service.partition("/")
        body = {
            "service": {"namespace": namespace, "name": name},
            "localEndpoints": local,
            "serviceProxyHealthy": True,
        }
        return web.json_response(body, status=200 if local else 503)

    async def reconcile(self) -> None:
        wanted = set(self.counts())
        for port in set(self.sites) - wanted:
            await self.sites.pop(port).stop()
        for port in wanted - set(self.sites):
            site = web.TCPSite(self.runner, self.address, port, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                log.warning("healthCheckNodePort %s:%d: %s", self.address, port, exc)
                continue
            self.sites[port] = site

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(config: ProxyConfig, *, shutdown_trigger: Callable[[], Awaitable[Any]] | None = None) -> None:
    await serve_until_triggered(functools.partial(_serve, config), shutdown_trigger)


async def _serve(config: ProxyConfig, shutdown: asyncio.Event) -> None:
    # With the two lines that follow (caches synced, full table applied), the log tells a restart's time.
    log.info("kube-proxy %s starting: listing Services, EndpointSlices and the Node", config.node)
    async with contextlib.AsyncExitStack() as stack:
        client = ApiClient(config.server, config.token, encoding="msgpack", tls=config.tls, fallbacks=config.fallbacks)
        stack.push_async_callback(client.close)
        registry = CollectorRegistry()
        proxier = Proxier(config, client, registry)
        stack.push_async_callback(proxier.close)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(i.run()) for i in (proxier.services, proxier.slices, proxier.nodes)]
            try:
                # The first full sync goes out the moment the rules' inputs are known: the Node (for the
                # address of the status and health-check servers) is not one of them.
                if not await wait_or_shutdown(
                    shutdown, asyncio.gather(proxier.services.wait_synced(), proxier.slices.wait_synced())
                ):
                    return
                log.info(
                    "Service and EndpointSlice caches synced: %d Services, %d slices",
                    len(proxier.services.store),
                    len(proxier.slices.store),
                )
                proxier.runner.trigger()
                tasks.append(group.create_task(proxier.runner.run()))
                tasks.append(group.create_task(proxier.watch_agent(shutdown)))
                if not await wait_or_shutdown(shutdown, proxier.nodes.wait_synced()):
                    return
                address = proxier.node_address()
                while address is None and not shutdown.is_set():  # the agent registers its Node first
                    await asyncio.sleep(0.1)
                    address = proxier.node_address()
                if address is None:
                    return
                if config.metrics_port is not None:
                    runner, port = await start_status_server(
                        address, config.metrics_port, proxier.healthy, registry
                    )
                    stack.push_async_callback(runner.cleanup)
                    log.info("kube-proxy %s: /healthz and /metrics on %s:%d", config.node, address, port)
                health = HealthCheckServer(address, lambda: proxier.health_counts)
                await health.start()
                stack.push_async_callback(health.close)
                proxier.health = health
                proxier.runner.trigger()  # a sync opens the healthCheckNodePorts the first one could not
                log.info(
                    "kube-proxy %s (%s mode) started, agent socket %s",
                    config.node,
                    config.mode,
                    config.agent_socket,
                )
                await shutdown.wait()
            finally:
                for task in tasks:
                    task.cancel()
