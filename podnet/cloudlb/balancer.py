"""An emulated cloud: the service controller of a cloud-controller-manager and the load balancer it buys.

For every Service of type LoadBalancer it takes an address from the pool (127.0.1.0/24 in local mode; a
Service may ask for one of them in spec.loadBalancerIP), writes `status.loadBalancer.ingress[].ip`, and
listens on that address on each service port, TCP and UDP. Each new client goes to a healthy node's
nodePort, round robin, and starts with a PROXY protocol v2 header naming the client, so a node can hand
the real client address to the pod (externalTrafficPolicy Local); it connects to nodes from its own
`--address`, the one address whose headers the agents believe (their `--proxy-protocol-from`). Nodes are health-checked the way
cloud balancers do it for Kubernetes: for Local, HTTP on the Service's healthCheckNodePort (kube-proxy
answers 200 only where a local endpoint is ready); otherwise a TCP connect to a TCP nodePort (a Service
with UDP ports only cannot be probed that way, and every Ready node is taken). When the
Service goes, or stops being a LoadBalancer, its listeners close and its address returns to the pool.

Addresses survive a restart: the controller reads the ingress IPs Services already carry before it
hands out new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from podnet.client import ApiClient, ApiError, Informer, component_agent
from podnet.cloudlb.frontends import AddressPool, Frontend, PoolExhausted, frontend_of, ready_node_addresses
from podnet.kubeconfig import ClientTls
from podnet.overlay.wire import proxyv2
from podnet.process import serve_until_triggered, start_status_server, wait_or_shutdown
from podnet.runner import BoundedFrequencyRunner

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0
UDP_IDLE_SECONDS = 30.0
RECONCILE_RETRY = 0.5  # seconds before a failed reconcile is tried again


@dataclass(frozen=True, slots=True)
class CloudLbConfig:
    server: str
    token: str | None = None
    tls: ClientTls | None = None  # the API server's CA (and our certificate)
    fallbacks: tuple[str, ...] = ()  # the cluster's other API servers, tried when `server` does not answer
    pool: str = "127.0.1.0/24"
    address: str = "127.0.0.10"  # where /healthz and /metrics listen
    metrics_port: int | None = 0
    health_interval: float = 1.0
    health_timeout: float = 0.5
    resync_interval: float = 10.0


class _Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.balancers = Gauge(
            "podnet_cloudlb_load_balancers", "LoadBalancer Services served", registry=registry
        )
        self.connections = Counter(
            "podnet_cloudlb_connections",
            "Client connections and flows, by protocol",
            ["protocol"],
            registry=registry,
        )
        self.failures = Counter(
            "podnet_cloudlb_backend_failures",
            "Clients no healthy node could take",
            ["protocol"],
            registry=registry,
        )
        self.healthy = Gauge(
            "podnet_cloudlb_healthy_backends", "Healthy nodes, by Service", ["service"], registry=registry
        )


@dataclass(slots=True)
class _Balancer:
    frontend: Frontend
    address: str
    listeners: dict[tuple[int, str], Any] = field(default_factory=dict)
    healthy: list[str] = field(default_factory=list)
    turn: itertools.count = field(default_factory=itertools.count)

    def pick(self) -> str | None:
        if not self.healthy:
            return None
        return self.healthy[next(self.turn) % len(self.healthy)]


class _UdpFrontend(asyncio.DatagramProtocol):
    """One UDP service port: each client gets its own socket toward the node it was given."""

    def __init__(self, lb: CloudLoadBalancer, balancer: _Balancer, port: int, node_port: int):
        self.lb = lb
        self.balancer = balancer
        self.port = port
        self.node_port = node_port
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[str, int], _UdpBackend] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        client = (addr[0], addr[1])
        flow = self.flows.get(client)
        if flow is None:
            node = self.balancer.pick()
            if node is None:
                self.lb.metrics.failures.labels("UDP").inc()
                return
            flow = _UdpBackend(self, client)
            self.flows[client] = flow
            self.lb.metrics.connections.labels("UDP").inc()
            self.lb.spawn(
                asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: flow, remote_addr=(node, self.node_port), local_addr=(self.lb.config.address, 0)
                )
            )
        header = proxyv2.proxy_inet(proxyv2.Transport.DGRAM, client, (self.balancer.address, self.port))
        flow.send(header + data)

    def close(self) -> None:
        for flow in self.flows.values():
            flow.close()
        if self.transport is not None:
            self.transport.close()


class _UdpBackend(asyncio.DatagramProtocol):
    def __init__(self, frontend: _UdpFrontend, client: tuple[str, int]):
        self.frontend = frontend
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.idle = asyncio.get_running_loop().call_later(UDP_IDLE_SECONDS, self.close)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for datagram in self.pending:
            self.transport.sendto(datagram)
        self.pending.clear()

    def send(self, datagram: bytes) -> None:
        self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(UDP_IDLE_SECONDS, self.close)
        if self.transport is None:
            self.pending.append(datagram)
        else:
            self.transport.sendto(datagram)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if self.frontend.transport is not None:
            self.frontend.transport.sendto(data, self.client)

    def close(self) -> None:
        self.idle.cancel()
        self.frontend.flows.pop(self.client, None)
        if self.transport is not None:
            self.transport.close()


class CloudLoadBalancer:
    def __init__(self, config: CloudLbConfig, client: ApiClient, registry: CollectorRegistry):
        self.config = config
        self.client = client
        self.metrics = _Metrics(registry)
        self.pool = AddressPool(config.pool)
        self.services = Informer(client, "services")
        self.nodes = Informer(client, "nodes")
        self.balancers: dict[str, _Balancer] = {}
        # The service controller: a reconcile after every change, and every resync_interval anyway.
        self.controller = BoundedFrequencyRunner("cloud-lb service controller", self.reconcile, min_interval=0.0,
                                                 max_interval=config.resync_interval, retry=RECONCILE_RETRY,
                                                 max_retry=RECONCILE_RETRY)
        self._tasks: set[asyncio.Task] = set()
        self.services.add_handler(lambda *_: self.trigger())
        self.nodes.add_handler(lambda *_: self.trigger())

    def trigger(self) -> None:
        self.controller.trigger()

    def spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the service controller ------------------------------------------------------------------

    def adopt_existing(self) -> None:
        """Addresses Services already carry stay theirs across a restart of this process."""
        for service in self.services.store.values():
            frontend = frontend_of(service)
            if frontend is None:
                continue
            for ingress in ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                ip = ingress.get("ip")
                if ip in self.pool.addresses and ip not in self.pool.holders:
                    self.pool.holders[ip] = frontend.key
                    break

    async def reconcile(self) -> None:
        wanted = {}
        for service in self.services.store.values():
            frontend = frontend_of(service)
            if frontend is not None:
                wanted[frontend.key] = (frontend, service)
        for key in set(self.balancers) - set(wanted):
            self._close(self.balancers.pop(key))
            self.pool.release(key)
            log.info("%s: load balancer removed, address released", key)
        for key in set(self.pool.holders.values()) - set(wanted):
            self.pool.release(key)
        for key, (frontend, service) in sorted(wanted.items()):
            try:
                address = self.pool.take(key, frontend.wanted_address)
            except PoolExhausted as exc:
                log.warning("%s", exc)
                continue
            balancer = self.balancers.get(key)
            if balancer is not None and (
                balancer.address != address or balancer.frontend.ports != frontend.ports
            ):
                self._close(self.balancers.pop(key))
                balancer = None
            if balancer is None:
                balancer = self.balancers[key] = _Balancer(frontend, address)
                await self._listen(balancer)
                log.info("%s: load balancer on %s, ports %s", key, address, [p[:2] for p in frontend.ports])
            balancer.frontend = frontend
            await self._write_status(service, address)
        self.metrics.balancers.set(len(self.balancers))

    async def _write_status(self, service: Mapping, address: str) -> None:
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if [i.get("ip") for i in ingress] == [address]:
            return
        meta = service["metadata"]
        status = {"loadBalancer": {"ingress": [{"ip": address, "ipMode": "VIP"}]}}
        try:
            await self.client.patch(
                "services",
                meta["name"],
                {"status": status},
                namespace=meta.get("namespace"),
                subresource="status",
            )
        except ApiError as exc:
            if exc.code != 404:
                raise

    async def _listen(self, balancer: _Balancer) -> None:
        loop = asyncio.get_running_loop()
        for port, protocol, node_port in balancer.frontend.ports:
            try:
                if protocol == "TCP":
                    balancer.listeners[(port, protocol)] = await asyncio.start_server(
                        lambda r, w, port=port, node_port=node_port: self._relay_tcp(
                            balancer, port, node_port, r, w
                        ),
                        balancer.address,
                        port,
                        reuse_address=True,
                    )
                elif protocol == "UDP":
                    _, frontend = await loop.create_datagram_endpoint(
                        lambda port=port, node_port=node_port: _UdpFrontend(self, balancer, port, node_port),
                        local_addr=(balancer.address, port),
                    )
                    balancer.listeners[(port, protocol)] = frontend
            except OSError as exc:
                log.warning(
                    "%s: cannot listen on %s:%d/%s: %s",
                    balancer.frontend.key,
                    balancer.address,
                    port,
                    protocol,
                    exc,
                )

    def _close(self, balancer: _Balancer) -> None:
        for listener in balancer.listeners.values():
            listener.close()
        balancer.listeners.clear()
        with contextlib.suppress(KeyError):
            self.metrics.healthy.remove(balancer.frontend.key)

    # ---- the data path ---------------------------------------------------------------------------

    async def _relay_tcp(
        self,
        balancer: _Balancer,
        port: int,
        node_port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        client = writer.get_extra_info("peername")
        node = balancer.pick()
        try:
            if node is None:
                self.metrics.failures.labels("TCP").inc()
                return
            try:
                node_reader, node_writer = await asyncio.wait_for(
                    asyncio.open_connection(node, node_port, local_addr=(self.config.address, 0)), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                self.metrics.failures.labels("TCP").inc()
                return
            self.metrics.connections.labels("TCP").inc()
            node_writer.write(
                proxyv2.proxy_inet(proxyv2.Transport.STREAM, (client[0], client[1]), (balancer.address, port))
            )
            await asyncio.gather(_pipe(reader, node_writer), _pipe(node_reader, writer))
        finally:
            writer.close()

    # ---- health checks ---------------------------------------------------------------------------

    async def run_health_checks(self) -> None:
        while True:
            nodes = ready_node_addresses(self.nodes.store.values())
            for balancer in list(self.balancers.values()):
                checks = [self._check(balancer.frontend, node) for node in nodes]
                results = await asyncio.gather(*checks)
                balancer.healthy = [node for node, ok in zip(nodes, results, strict=True) if ok]
                self.metrics.healthy.labels(balancer.frontend.key).set(len(balancer.healthy))
            await asyncio.sleep(self.config.health_interval)

    async def _check(self, frontend: Frontend, node: str) -> bool:
        timeout = self.config.health_timeout
        try:
            if frontend.health_check_node_port:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(node, frontend.health_check_node_port), timeout
                )
                writer.write(f"GET /healthz HTTP/1.0\r\nHost: {node}\r\n\r\n".encode())
                status_line = await asyncio.wait_for(reader.readline(), timeout)
                writer.close()
                return status_line.split()[1:2] == [b"200"]
            tcp_ports = [node_port for _, protocol, node_port in frontend.ports if protocol == "TCP"]
            if not tcp_ports:
                return bool(frontend.ports)  # UDP alone cannot be probed: a Ready node is taken as healthy
            reader, writer = await asyncio.wait_for(asyncio.open_connection(node, tcp_ports[0]), timeout)
            writer.close()
            return True
        except (OSError, TimeoutError, IndexError):
            return False

    def close(self) -> None:
        for balancer in self.balancers.values():
            self._close(balancer)
        for task in self._tasks:
            task.cancel()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()


async def serve(
    config: CloudLbConfig, *, shutdown_trigger: Callable[[], Awaitable[Any]] | None = None
) -> None:
    await serve_until_triggered(functools.partial(_serve, config), shutdown_trigger)


async def _serve(config: CloudLbConfig, shutdown: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = ApiClient(config.server, config.token, tls=config.tls, fallbacks=config.fallbacks, user_agent=component_agent("cloud-controller-manager"))
        stack.push_async_callback(client.close)
        registry = CollectorRegistry()
        lb = CloudLoadBalancer(config, client, registry)
        stack.callback(lb.close)
        if config.metrics_port is not None:
            runner, port = await start_status_server(
                config.address, config.metrics_port, lambda: lb.services.synced and lb.nodes.synced, registry
            )
            stack.push_async_callback(runner.cleanup)
            log.info("cloud-lb: /healthz and /metrics on %s:%d", config.address, port)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(lb.services.run()), group.create_task(lb.nodes.run())]
            try:
                if await wait_or_shutdown(shutdown, asyncio.gather(lb.services.wait_synced(), lb.nodes.wait_synced())):
                    lb.adopt_existing()
                    lb.trigger()
                    tasks.append(group.create_task(lb.controller.run()))
                    tasks.append(group.create_task(lb.run_health_checks()))
                    log.info("cloud-lb started, pool %s", config.pool)
                    await shutdown.wait()
            finally:
                for task in tasks:
                    task.cancel()
