"""`local_cluster`: a whole cluster of processes started by the supervisor, as `podnet up` starts it, in a
temporary home on its own 127.0.X prefix so that several can run in one session; stopped in reverse order
afterwards. With what chaos tests need: kill and start a component, place pods, probe from a pod through
its node agent, and a `Prober` that records how probes fared over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from podnet.cli import cluster_cmd
from podnet.client import ApiClient, ApiError
from podnet.cluster import supervisor, topology
from podnet.cluster.readiness import node_ready
from podnet.cluster.supervisor import ClusterState
from podnet.rpc.session import RpcClient, RpcError

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.47"


def deployment(name: str, namespace: str, replicas: int, port: int) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": name, "image": AGNHOST,
                                                           "ports": [{"containerPort": port}]}]}}}}


def service(name: str, namespace: str, port: int, selector: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector or {"app": name}, "ports": [{"port": port, "protocol": "TCP"}]}}


def pod_on(name: str, namespace: str, node: str, port: int = 80) -> dict:
    """A bare pod bound to `node` (as a DaemonSet's pods are), answering on `port`."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                           "labels": {"role": name}},
            "spec": {"nodeName": node, "containers": [{"name": name, "image": AGNHOST,
                                                      "ports": [{"containerPort": port}]}]}}


def dns_query(address: str, port: int, name: str, timeout: float = 0.5) -> list[str] | None:
    """The A records for `name` (empty on NXDOMAIN), or None when the server did not answer NOERROR in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(DNSRecord.question(name, "A").pack(), (address, port))
            reply = DNSRecord.parse(sock.recv(4096))
        except OSError:
            return None
    if reply.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
        return None
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


async def eventually(check: Callable[[], Awaitable[object]], timeout: float, what: str,
                     interval: float = 0.1) -> object:
    """The first truthy value of `check()`; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ApiError, RpcError, OSError):
            value = await check()
            if value:
                return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)


async def nth_after(moments: list[float], since: float, count: int, timeout: float, what: str) -> float:
    """The `count`-th of `moments` (a list others append to, in time order) after `since`, once there."""
    async def enough() -> float | None:
        later = [t for t in moments if t > since]
        return later[count - 1] if len(later) >= count else None

    return await eventually(enough, timeout, what)  # type: ignore[return-value]


@dataclass
class Prober:
    """Runs `probe()` every `interval` seconds in the background and records (time, ok)."""

    probe: Callable[[], Awaitable[bool]]
    interval: float = 0.1
    results: list[tuple[float, bool]] = field(default_factory=list)
    _task: asyncio.Task | None = None
    # Cancelling alone may not stop the loop: on Python 3.11, asyncio.wait_for (under the RPC call) drops
    # a cancellation that arrives as its awaited answer does, and the loop would probe on for ever.
    _stopped: bool = False

    async def _loop(self) -> None:
        while not self._stopped:
            started = time.monotonic()
            try:
                ok = await self.probe()
            except (ApiError, RpcError, OSError, TimeoutError):
                ok = False
            self.results.append((started, ok))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def __aenter__(self) -> Prober:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._stopped = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def between(self, since: float, until: float | None = None) -> list[bool]:
        return [ok for t, ok in self.results if t >= since and (until is None or t < until)]

    def success(self, since: float, until: float | None = None) -> float:
        """Percentage of probes that succeeded in the window."""
        window = self.between(since, until)
        assert window, "no probe ran in the window"
        return 100.0 * sum(window) / len(window)

    def recovered_after(self, fault: float) -> float | None:
        """Seconds from `fault` to the first probe from which every later one succeeded (None: the
        last probe failed)."""
        after = [(t, ok) for t, ok in self.results if t >= fault]
        if not after or not after[-1][1]:
            return None
        first = len(after)
        while first > 0 and after[first - 1][1]:
            first -= 1
        return max(0.0, after[first][0] - fault) if first < len(after) else 0.0

    async def wait_for(self, count: int, timeout: float) -> None:
        """Until `count` more probes have run."""
        target = len(self.results) + count
        deadline = time.monotonic() + timeout
        while len(self.results) < target:
            assert time.monotonic() < deadline, f"{count} probes did not run within {timeout}s"
            await asyncio.sleep(self.interval)


def report(name: str, **figures: object) -> None:
    """One line of figures for the log, printed with -s: `chaos <name>: key=value ...`."""
    print(f"\nchaos {name}: " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in figures.items()))


@dataclass
class LocalCluster:
    topo: topology.Topology
    state: ClusterState
    client: ApiClient
    _agents: dict[str, RpcClient] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.topo.home

    def process(self, component: str) -> supervisor.Process:
        return self.state.process(component)

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        proc = self.process(component)
        assert supervisor.signal_process(proc, sig), f"{component} is not running"

    async def wait_dead(self, component: str, timeout: float = 15.0) -> None:
        proc = self.process(component)
        await eventually(lambda: _async(not proc.alive), timeout, f"{component} exits")

    async def start(self, component: str) -> None:
        """Starts a stopped component and waits until its health check passes."""
        proc = self.process(component)
        supervisor.launch(self.state, proc)
        await supervisor.wait_healthy(self.state, proc)

    async def agent(self, node: str) -> RpcClient:
        client = self._agents.get(node)
        if client is None or not client.connected:
            client = await RpcClient(str(self.topo.agent_socket(self.topo.node(node)))).connect()
            self._agents[node] = client
        return client

    async def rpc(self, node: str, method: str, params: object = None, timeout: float = 10.0) -> object:
        return await (await self.agent(node)).call(method, params, timeout=timeout)

    async def probe(self, src: dict, dst: str, port: int, timeout: float = 0.5) -> bool:
        """Whether pod `src` (an API object) connects to `dst:port` over TCP, from its own stack."""
        params = {"src": f"{src['metadata']['namespace']}/{src['metadata']['name']}", "dst": dst, "port": port,
                  "protocol": "TCP", "timeout": timeout}
        result = await self.rpc(src["spec"]["nodeName"], "probe", params, timeout=timeout + 5)
        return bool(result.get("ok"))

    def dns(self, name: str, timeout: float = 0.5) -> list[str] | None:
        return dns_query(self.topo.host("dns"), self.topo.dns_port, name, timeout)

    async def create(self, *objects: dict) -> None:
        for obj in objects:
            await self.client.create(obj)

    async def running_pods(self, namespace: str, label_selector: str | None = None) -> list[dict]:
        pods = (await self.client.list("pods", namespace, label_selector=label_selector)).get("items") or []
        return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                and (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")]

    async def wait_running(self, namespace: str, label_selector: str | None, count: int,
                           timeout: float = 30.0) -> list[dict]:
        async def enough() -> list[dict] | None:
            pods = await self.running_pods(namespace, label_selector)
            return pods if len(pods) == count else None

        return await eventually(enough, timeout, f"{count} Running pods {label_selector or ''} in {namespace}")

    async def made_again(self, namespace: str, label_selector: str, name: str, old: dict, timeout: float) -> dict:
        """Pod `name` Running again as a new pod (another uid than `old`'s), as its controller makes it again."""
        async def back() -> dict | None:
            return next((p for p in await self.running_pods(namespace, label_selector) if p["metadata"]["name"] == name
                         and p["metadata"]["uid"] != old["metadata"]["uid"]), None)

        return await eventually(back, timeout, f"{namespace}/{name} made again")

    async def web_and_client(self, namespace: str, port: int) -> tuple[dict, str]:
        """Deployment `web` (2 replicas on `port`) behind Service `web`, and pod `client` on node-1, once the
        Service answers it: (the client pod, web's ClusterIP)."""
        await self.create(deployment("web", namespace, 2, port), service("web", namespace, port),
                          pod_on("client", namespace, "node-1"))
        await self.wait_running(namespace, "app=web", 2)
        (client,) = await self.wait_running(namespace, "role=client", 1)
        web_ip = (await self.client.get("services", "web", namespace))["spec"]["clusterIP"]
        await eventually(lambda: self.probe(client, web_ip, port), 20, "Service web answers")
        return client, web_ip

    async def ready_endpoints(self, namespace: str, service_name: str) -> set[str]:
        slices = await self.client.list("endpointslices", namespace,
                                        label_selector=f"kubernetes.io/service-name={service_name}")
        return {address for s in slices.get("items") or [] for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready", True) for address in e.get("addresses") or []}

    async def node_ready(self, name: str) -> bool:
        return node_ready(await self.client.get("nodes", name))

    async def close(self) -> None:
        for client in self._agents.values():
            await client.close()
        self._agents.clear()


async def _async(value: object) -> object:
    return value


@pytest.fixture
async def local_cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[LocalCluster]]]:
    """`await local_cluster(prefix, nodes=2, **settings)`: a running cluster (settings as `podnet up`'s
    flags: store, node_grace_period, pod_eviction_timeout, ...), stopped in reverse order afterwards."""
    clusters: list[LocalCluster] = []
    states: list[ClusterState] = []

    async def make(prefix: str, nodes: int = 2, **settings: object) -> LocalCluster:
        home = tmp_path / f"cluster-{len(states)}"
        topo = topology.build(home, nodes, prefix=prefix, lb_pool=f"{prefix}.128/26", **settings)
        try:
            state = await cluster_cmd.bring_up(topo, timeout=60)
        finally:
            if (home / supervisor.STATE_FILE).exists():
                states.append(ClusterState.load(home))
        states[-1] = state
        cluster = LocalCluster(topo, state, ApiClient.from_kubeconfig(home / "kubeconfig"))
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            await cluster.close()
            await cluster.client.close()
        for state in states:
            if (state.home / supervisor.STATE_FILE).exists():
                # what the state file says now: a `podnet start` the test ran recorded its process only there
                state = ClusterState.load(state.home)
            await supervisor.stop_all(state)
