"""Real kube-proxy processes (`python -m podnet.nodeagent.kubeproxy`) next to the agents of a cluster.

`KubeProxyProcess(node, agent, server, token, mode)`: `.start()` waits for /healthz to answer 200 (the
first table reached the agent), `.kill()` (SIGKILL), `.status_port`, `.metrics()`; `.spawned` and
`.healthy` are the monotonic times the process's PID existed and /healthz first answered 200,
`.cpu_seconds()` the CPU time the running process has used.
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
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.nodeagent import REPO, AgentProcess, Cluster, pod_manifest, wait_running

START_TIMEOUT = 20.0
WEB_PORTS = [
    {"containerPort": 8080, "name": "web"},
    {"containerPort": 8081, "protocol": "UDP", "name": "echo"},
]


def free_tcp_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass
class KubeProxyProcess:
    agent: AgentProcess
    server: str
    token: str
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
            sys.executable,
            "-m",
            "podnet.nodeagent.kubeproxy",
            "--node",
            self.agent.name,
            "--mode",
            self.mode,
            "--server",
            self.server,
            "--token",
            self.token,
            "--agent-socket",
            self.agent.socket,
            "--metrics-port",
            str(self.status_port),
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO), PODNET_HOME=str(self.agent.home))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.spawned = time.monotonic()
        deadline = self.spawned + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kube-proxy exited with {self.process.returncode}: {self.log()[-3000:]}")
            if self.healthz() == 200:
                self.healthy = time.monotonic()
                return
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(
            f"kube-proxy for {self.agent.name} not healthy within {START_TIMEOUT}s: {self.log()[-3000:]}"
        )

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
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the running process (Linux /proc)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
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
            proxies[name] = KubeProxyProcess(agent, two_node_cluster.api.url, two_node_cluster.api.token)
            proxies[name].start()
        yield ServicesCluster(two_node_cluster, proxies)
    finally:
        for proxy in proxies.values():
            with contextlib.suppress(Exception):
                proxy.kill()


@dataclass
class CloudLbProcess:
    """`podnet cloud-lb` with its own small pool; `.start()` waits for /healthz."""

    home: object
    server: str
    token: str
    pool: str
    address: str = "127.0.0.10"
    process: subprocess.Popen | None = None
    status_port: int | None = None

    def start(self) -> None:
        self.status_port = self.status_port or free_tcp_port(self.address)
        args = [
            sys.executable,
            "-m",
            "podnet",
            "cloud-lb",
            "--server",
            self.server,
            "--token",
            self.token,
            "--pool",
            self.pool,
            "--address",
            self.address,
            "--metrics-port",
            str(self.status_port),
            "--health-interval",
            "0.3",
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.home / "cloud-lb.log", "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cloud-lb exited with {self.process.returncode}: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://{self.address}:{self.status_port}/healthz", timeout=1
                ) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"cloud-lb not healthy within {START_TIMEOUT}s: {self.log()[-3000:]}")

    def log(self) -> str:
        path = self.home / "cloud-lb.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}:{self.status_port}/metrics", timeout=2) as r:
            return r.read().decode()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def cloud_lb(services_cluster: ServicesCluster) -> Iterator[CloudLbProcess]:
    """A cloud-lb over `services_cluster`, with a /29 of 127.0.1.0/24 picked at random so runs on one
    machine do not collide."""
    base = random.randrange(0, 256, 8)
    lb = CloudLbProcess(
        services_cluster.home, services_cluster.api.url, services_cluster.api.token, f"127.0.1.{base}/29"
    )
    try:
        lb.start()
        yield lb
    finally:
        lb.kill()
