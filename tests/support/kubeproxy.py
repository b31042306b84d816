"""Real kube-proxy processes (`python -m podnet.nodeagent.kubeproxy`) next to the agents of a cluster.

`KubeProxyProcess(node, agent, server, token, mode)`: `.start()` waits for /healthz to answer 200 (the
first table reached the agent), `.kill()` (SIGKILL), `.status_port`, `.metrics()`; `.spawned` and
`.healthy` are the monotonic times the process's PID existed and /healthz first answered 200,
`.cpu_seconds()` the CPU time the running process has used.
`free_port`, `curl`, `wait_curl`, `ask_udp` and `start_labelled_pod` are what the Service tests do from the
host against it. `node_with_proxy(home, name, address, *agent_args)` (a context manager): an API server with
controllers, one agent and its kube-proxy, killed on leaving; it gives the `Cluster` of that one node, on
which `web_on_node_port(cluster)` runs a pod `web` (port 8080) behind a NodePort Service `web` and
returns the nodePort once kube-proxy has opened it.
`services_cluster` (per module): `two_node_cluster` (tests/support/nodeagent.py) plus one kube-proxy per
node in iptables mode and backend pods `web-1` (node-1), `web-2` and `web-3` (node-2) labelled
app=web; `.proxies` maps node names to their kube-proxy.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from podnet.client import ApiClient
from support.apiserver import ApiServerProcess
from support.nodeagent import AgentProcess, Cluster, pod_manifest, wait_running
from support.processes import end, free_tcp_port, free_udp_port, read_log, spawn_module, wait_ready

WEB_PORTS = [
    {"containerPort": 8080, "name": "web"},
    {"containerPort": 8081, "protocol": "UDP", "name": "echo"},
]


def free_port(*addresses: str, low=30000, high=32768, kind=socket.SOCK_STREAM) -> int:
    """A port in [low, high), the NodePort range by default, free on every one of `addresses`. Requested
    rather than left to the API server, which allocates from 30000 up: other clusters on this machine
    listen on the same node addresses, and their nodePorts start there too."""
    for _ in range(100):
        port = random.randrange(low, high)
        try:
            for address in addresses:
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def curl(url: str, timeout: float = 3) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), url], capture_output=True, text=True)


def wait_curl(url: str, timeout: float = 10.0) -> str:
    """The body of the first successful `curl url` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        run = curl(url)
        if run.returncode == 0:
            return run.stdout
        assert time.monotonic() < deadline, f"{url}: {run.stderr}"
        time.sleep(0.1)


def answers_until_all(ask: Callable[[], str], expected: set[str], tries: int = 60) -> set[str]:
    """What `ask()` answers, asked until every answer in `expected` has come or `tries` run out: a Service
    picks its endpoint at random per connection, so a fixed number of asks can miss one of them."""
    seen: set[str] = set()
    for _ in range(tries):
        seen.add(ask())
        if seen >= expected:
            break
    return seen


def ask_udp(address: str, port: int, message: bytes = b"hostname", timeout: float = 10.0) -> tuple[bytes, tuple]:
    """Sends `message` once a second until an answer comes; returns the answer and who sent it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        deadline = time.monotonic() + timeout
        while True:
            sock.sendto(message, (address, port))
            try:
                return sock.recvfrom(2048)
            except TimeoutError:
                assert time.monotonic() < deadline, f"no UDP answer from {address}:{port}"


def start_labelled_pod(cluster: Cluster | ServicesCluster, name: str, node: str) -> None:
    """A pod `name` on `node` labelled app=`name`, serving HTTP on its port named web; waits until Running."""

    async def create(client) -> None:
        manifest = pod_manifest(name, node, ports=[{"containerPort": 8080, "name": "web"}])
        manifest["metadata"]["labels"] = {"app": name}
        await client.create(manifest)
        await wait_running(client, "default", name)

    cluster.api_call(create)


@contextlib.contextmanager
def node_with_proxy(home: Path, name: str, address: str, *agent_args: str) -> Iterator[Cluster]:
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    agent = AgentProcess(name, address, home, api.kubeconfig, free_udp_port(address), extra_args=agent_args)
    proxy = KubeProxyProcess(agent, api.kubeconfig)
    try:
        api.start()
        agent.start()
        proxy.start()
        yield Cluster(api, home, {agent.name: agent})
    finally:
        proxy.kill()
        agent.kill()
        api.kill()


def web_on_node_port(cluster: Cluster) -> int:
    [agent] = cluster.agents.values()
    node_port = free_port(agent.address)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"type": "NodePort", "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}}

    async def create(client: ApiClient) -> None:
        await client.create(pod_manifest("web", agent.name, ports=[{"containerPort": 8080, "name": "web"}]))
        await wait_running(client, "default", "web")
        await client.create(service)

    cluster.api_call(create)
    deadline = time.monotonic() + 20
    while not agent.rpc("services.get", {"service": "default/web"})["node_ports"]:
        assert time.monotonic() < deadline, agent.log()[-2000:]
        time.sleep(0.1)
    return node_port


@dataclass
class KubeProxyProcess:
    agent: AgentProcess
    kubeconfig: Path
    mode: str = "iptables"
    process: subprocess.Popen | None = None
    status_port: int | None = None
    spawned: float = 0.0
    healthy: float = 0.0

    @property
    def log_path(self):
        return self.agent.home / f"{self.agent.name}-kube-proxy.log"

    def start(self) -> None:
        self.status_port = self.status_port or free_tcp_port(self.agent.address)
        args = [
            "--node", self.agent.name, "--mode", self.mode, "--kubeconfig", str(self.kubeconfig),
            "--agent-socket", self.agent.socket, "--metrics-port", str(self.status_port),
        ]
        self.process = spawn_module("podnet.nodeagent.kubeproxy", args, self.log_path, self.agent.home)
        self.spawned = time.monotonic()
        wait_ready(self.process, self._healthy, f"kube-proxy for {self.agent.name}", self.log, interval=0.01)

    def _healthy(self) -> bool:
        if self.healthz() != 200:
            return False
        self.healthy = time.monotonic()
        return True

    def healthz(self) -> int | None:
        try:
            with urllib.request.urlopen(
                f"http://{self.agent.address}:{self.status_port}/healthz", timeout=1
            ) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://{self.agent.address}:{self.status_port}/metrics", timeout=2
        ) as r:
            return r.read().decode()

    def log(self) -> str:
        return read_log(self.log_path)

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the running process (Linux /proc)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        end(self.process, sig)
        self.process = None


@dataclass
class ServicesCluster:
    cluster: Cluster
    proxies: dict[str, KubeProxyProcess]

    def __getattr__(self, name):
        return getattr(self.cluster, name)


@pytest.fixture(scope="module")
def services_cluster(two_node_cluster: Cluster) -> Iterator[ServicesCluster]:
    proxies: dict[str, KubeProxyProcess] = {}
    try:

        async def create_backends(client) -> None:
            for name, node in (("web-1", "node-1"), ("web-2", "node-2"), ("web-3", "node-2")):
                manifest = pod_manifest(name, node, ports=WEB_PORTS)
                manifest["metadata"]["labels"] = {"app": "web"}
                await client.create(manifest)
            for name in ("web-1", "web-2", "web-3"):
                two_node_cluster.pod_ips[name] = (await wait_running(client, "default", name))["status"][
                    "podIP"
                ]

        two_node_cluster.api_call(create_backends)
        for name, agent in two_node_cluster.agents.items():
            proxies[name] = KubeProxyProcess(agent, two_node_cluster.api.kubeconfig)
            proxies[name].start()
        yield ServicesCluster(two_node_cluster, proxies)
    finally:
        for proxy in proxies.values():
            with contextlib.suppress(Exception):
                proxy.kill()


@dataclass
class CloudLbProcess:
    """`podnet cloud-lb` with its own small pool; `.start()` waits for /healthz."""

    home: Path
    kubeconfig: Path
    pool: str
    address: str = "127.0.0.10"
    process: subprocess.Popen | None = None
    status_port: int | None = None

    def start(self) -> None:
        self.status_port = self.status_port or free_tcp_port(self.address)
        args = [
            "cloud-lb", "--kubeconfig", str(self.kubeconfig), "--pool", self.pool,
            "--address", self.address, "--metrics-port", str(self.status_port), "--health-interval", "0.3",
        ]
        self.process = spawn_module("podnet", args, self.log_path)
        wait_ready(self.process, self._healthy, "cloud-lb", self.log)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}:{self.status_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    @property
    def log_path(self) -> Path:
        return self.home / "cloud-lb.log"

    def log(self) -> str:
        return read_log(self.log_path)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}:{self.status_port}/metrics", timeout=2) as r:
            return r.read().decode()

    def kill(self) -> None:
        end(self.process)
        self.process = None


@pytest.fixture(scope="module")
def cloud_lb(services_cluster: ServicesCluster) -> Iterator[CloudLbProcess]:
    """A cloud-lb over `services_cluster`, with a /29 of 127.0.1.0/24 picked at random so runs on one
    machine do not collide."""
    base = random.randrange(0, 256, 8)
    lb = CloudLbProcess(
        services_cluster.home, services_cluster.api.kubeconfig, f"127.0.1.{base}/29"
    )
    try:
        lb.start()
        yield lb
    finally:
        lb.kill()
