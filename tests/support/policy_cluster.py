"""The Kubernetes e2e network-policy model on a live cluster: an API server with controllers, three real
node agents (node-1, node-2, node-3 on 127.0.0.11-13 unless another prefix is given), namespaces x, y, z
and pods a (node-1), b (node-2) and c (node-3) in each, Running with their addresses.

`running_model_cluster(home)` starts it all (a context manager, for benchmarks too); the fixture
`model_cluster` (per module) yields the `ModelCluster` it gives: `.addresses` (pod key -> IP, plus "kube-dns"),
`.apply(policies)` creates NetworkPolicies and waits until every agent enforces them,
`.clear()` deletes them all (likewise waiting), `.probe(ports, protocols)` probes the 9x9 matrix through
the agents, `.probe_once(src, dst, port, protocol)`, `.agent_status()`, `.cli(...)`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from podnet.nodeagent.policy import Matrix

from podnet.client import ApiClient
from podnet.observe.policy import Agents, probe_matrix
from podnet.rpc.session import call_once
from support import netpol_model
from support.apiserver import ApiServerProcess
from support.nodeagent import AgentProcess, Cluster, free_udp_port, wait_running

NODES = {"a": "node-1", "b": "node-2", "c": "node-3"}
ENFORCE_TIMEOUT = 10.0
PROBE_TIMEOUT = 1.0


@dataclass
class ModelCluster:
    cluster: Cluster
    addresses: dict[str, str]

    @property
    def agents(self) -> dict[str, AgentProcess]:
        return self.cluster.agents

    def cli(self, *args: str, timeout: float = 60.0):
        return self.cluster.cli(*args, timeout=timeout)

    def pods(self) -> dict[str, tuple[str, str]]:
        """pod key -> (IP, node), as `podnet matrix` finds them."""
        return {key: (self.addresses[key], NODES[key.split("/")[1]]) for key in netpol_model.PODS}

    def agent_status(self) -> dict[str, dict]:
        async def ask() -> list[dict]:
            return await asyncio.gather(
                *(call_once(a.socket, "policy.status", timeout=5) for a in self.agents.values())
            )

        return dict(zip(self.agents, asyncio.run(ask()), strict=True))

    def wait_enforced(self, versions: dict[str, str], timeout: float = ENFORCE_TIMEOUT) -> float:
        """Seconds until every agent holds exactly these policies at these resourceVersions."""
        started = time.monotonic()
        while True:
            statuses = self.agent_status()
            if all(s["policies"] == versions for s in statuses.values()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"agents do not enforce {versions}: {statuses}")
            time.sleep(0.01)

    def apply(self, policies: Iterable[dict]) -> dict[str, str]:
        """Creates the policies and waits until every agent enforces them; their resourceVersions."""

        async def create(client: ApiClient) -> dict[str, str]:
            versions = {}
            for policy in policies:
                created = await client.create(policy)
                meta = created["metadata"]
                versions[f"{meta['namespace']}/{meta['name']}"] = meta["resourceVersion"]
            return versions

        versions = self.cluster.api_call(create)
        current = dict(next(iter(self.agent_status().values()))["policies"])
        self.wait_enforced({**current, **versions})
        return versions

    def clear(self) -> None:
        async def delete(client: ApiClient) -> None:
            listed = await client.list("networkpolicies")
            for item in listed.get("items") or []:
                await client.delete(
                    "networkpolicies", item["metadata"]["name"], item["metadata"]["namespace"]
                )

        self.cluster.api_call(delete)
        self.wait_enforced({})

    def probe_once(self, src: str, dst: str, port: int = 80, protocol: str = "TCP") -> dict:
        """One connection from pod `src` to `dst` (a pod key or an address) through src's agent."""
        params = {
            "src": src,
            "dst": self.addresses.get(dst, dst),
            "port": port,
            "protocol": protocol,
            "timeout": PROBE_TIMEOUT,
        }
        socket = self.agents[self.pods()[src][1]].socket
        return asyncio.run(call_once(socket, "probe", params, timeout=PROBE_TIMEOUT + 10))

    def probe(self, ports: Iterable[int] = (80,), protocols: Iterable[str] = ("TCP",)) -> Matrix:
        async def run() -> Matrix:
            async with Agents(lambda node: self.agents[node].socket) as agents:
                return await probe_matrix(agents, self.pods(), ports, protocols, timeout=PROBE_TIMEOUT)

        return asyncio.run(run())


@contextmanager
def running_model_cluster(home: Path, *, prefix: str = "127.0.0", agent_args: tuple[str, ...] = ()) -> Iterator[ModelCluster]:
    """Starts the API server, the three agents (on prefix.11-13, with `agent_args` besides their own) and
    the model's pods under `home`; stops them on exit."""
    api_dir = home / "apiserver"
    api_dir.mkdir(parents=True, exist_ok=True)
    api = ApiServerProcess(api_dir, f"sqlite:///{api_dir / 'store.db'}", controllers=True)
    agents: dict[str, AgentProcess] = {}
    try:
        api.start()
        addresses = [f"{prefix}.1{i}" for i in (1, 2, 3)]
        port = free_udp_port(*addresses)
        for index, address in enumerate(addresses, 1):
            agent = AgentProcess(f"node-{index}", address, home, api.kubeconfig, port, extra_args=agent_args)
            agents[agent.name] = agent
            agent.start()
        cluster = Cluster(api, home, agents)

        async def create(client: ApiClient) -> dict[str, str]:
            for namespace in netpol_model.namespaces():
                await client.create(namespace)
            for pod in netpol_model.pods():
                pod["spec"]["nodeName"] = NODES[pod["metadata"]["name"]]
                await client.create(pod)
            ips = {}
            for key in netpol_model.PODS:
                namespace, name = key.split("/")
                ips[key] = (await wait_running(client, namespace, name))["status"]["podIP"]
            return ips

        ips = cluster.api_call(create)
        model = ModelCluster(cluster, {**ips, netpol_model.KUBE_DNS: addresses[0]})
        # Every agent must know every pod's address before policies can name them as peers.
        deadline = time.monotonic() + ENFORCE_TIMEOUT
        while any(s["pods"] < len(netpol_model.PODS) for s in model.agent_status().values()):
            assert time.monotonic() < deadline, f"agents do not know all pods: {model.agent_status()}"
            time.sleep(0.05)
        yield model
    finally:
        for agent in agents.values():
            agent.kill()
        api.kill()


@pytest.fixture(scope="module")
def model_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelCluster]:
    with running_model_cluster(tmp_path_factory.mktemp("podnet-home")) as model:
        yield model
