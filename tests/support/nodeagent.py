"""Real node agent processes (`python -m podnet.nodeagent`) and a two-node cluster to run traffic on.

`AgentProcess`: one agent with its state under `<home>/nodes/<name>` (where the CLI looks for
`agent.sock`), `.kill()` (SIGKILL), `.start()` (again, same state), `.rpc(method, params)`,
`.counters()`, `.status_port`.
`two_node_cluster` (per module): an API server with controllers, agents node-1 on 127.0.0.11 and
node-2 on 127.0.0.12 sharing one free VXLAN port, and pods `a` (node-1) and `b` (node-2) declaring TCP
80 and 8080 and UDP 81, Running with their IPs. `.cli(*args)` runs `python -m podnet` against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from podnet.client import ApiClient
from podnet.rpc.session import call_once
from support.apiserver import ApiServerProcess
from support.processes import REPO, end, free_udp_port, read_log, spawn_module, wait_ready

POD_PORTS = [{"containerPort": 80}, {"containerPort": 8080}, {"containerPort": 81, "protocol": "UDP"}]


@dataclass
class AgentProcess:
    name: str
    address: str
    home: Path
    kubeconfig: Path  # the API server, its CA and a token
    vxlan_port: int
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    status_port: int | None = None

    @property
    def state_dir(self) -> Path:
        return self.home / "nodes" / self.name

    @property
    def socket(self) -> str:
        return str(self.state_dir / "agent.sock")

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.log"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        args = [
            "--name", self.name, "--address", self.address,
            "--kubeconfig", str(self.kubeconfig), "--state-dir", str(self.state_dir),
            "--vxlan-port", str(self.vxlan_port), "--metrics-port", "0", *self.extra_args,
        ]
        self.process = spawn_module("podnet.nodeagent", args, self.log_path, self.home)
        wait_ready(self.process, self._answers, f"agent {self.name}", self.log)

    def _answers(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        try:
            if asyncio.run(call_once(self.socket, "ping", timeout=2)) != "pong":
                return False
        except (OSError, TimeoutError):
            return False
        self.status_port = json.loads((self.state_dir / "agent.json").read_text())["status_port"]
        return True

    def log(self) -> str:
        return read_log(self.log_path)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        end(self.process, sig)
        self.process = None

    def rpc(self, method: str, params: object = None, timeout: float = 30.0) -> object:
        return asyncio.run(call_once(self.socket, method, params, timeout=timeout))

    def counters(self) -> dict[str, int]:
        return self.rpc("counters")  # type: ignore[return-value]


@dataclass
class Cluster:
    api: ApiServerProcess
    home: Path
    agents: dict[str, AgentProcess]
    pod_ips: dict[str, str] = field(default_factory=dict)

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PODNET_SERVER", "PODNET_TOKEN")}
        return env | {"PYTHONPATH": str(REPO), "PODNET_HOME": str(self.home), "KUBECONFIG": str(self.api.kubeconfig)}

    @staticmethod
    def cli_argv() -> list[str]:
        return [sys.executable, "-m", "podnet"]

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Runs `podnet ARGS` against this cluster; stdin is empty so nothing waits for input."""
        return subprocess.run(
            [*self.cli_argv(), *args], capture_output=True, text=True, env=self.cli_env(), timeout=timeout, input=""
        )

    def client(self) -> ApiClient:
        return self.api.client()

    def api_call(self, coro_fn):
        """Runs `coro_fn(client)` with a fresh client and returns its result."""

        async def run():
            async with self.client() as client:
                return await coro_fn(client)

        return asyncio.run(run())


def pod_manifest(name: str, node: str, namespace: str = "default", ports=POD_PORTS) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "agnhost", "image": "agnhost", "ports": ports}]},
    }


async def wait_running(client: ApiClient, namespace: str, name: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        pod = await client.get("pods", name, namespace)
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and status.get("podIP"):
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {namespace}/{name} not Running with an IP: {status}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("podnet-home")
    api_dir = home / "apiserver"
    api_dir.mkdir()
    api = ApiServerProcess(api_dir, f"sqlite:///{api_dir / 'store.db'}", controllers=True)
    agents: dict[str, AgentProcess] = {}
    try:
        api.start()
        port = free_udp_port("127.0.0.11", "127.0.0.12")
        for index in (1, 2):
            # As `podnet up` starts them: the cloud load balancer (127.0.0.10) is the one PROXY header source.
            agent = AgentProcess(f"node-{index}", f"127.0.0.1{index}", home, api.kubeconfig, port,
                                 extra_args=("--proxy-protocol-from", "127.0.0.10"))
            agents[agent.name] = agent
            agent.start()
        cluster = Cluster(api, home, agents)

        async def create_pods(client: ApiClient) -> None:
            for name, node in (("a", "node-1"), ("b", "node-2")):
                await client.create(pod_manifest(name, node))
            for name in ("a", "b"):
                cluster.pod_ips[name] = (await wait_running(client, "default", name))["status"]["podIP"]

        cluster.api_call(create_pods)
        yield cluster
    finally:
        for agent in agents.values():
            agent.kill()
        api.kill()
