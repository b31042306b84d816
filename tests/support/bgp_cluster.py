"""Three nodes in the `bgp` backend, shared by a test module: an API server with controllers, node agents
started with `--backend bgp` on 127.0.0.81-83 (foo-over-UDP on one free port), and one BGP speaker per
node (full mesh from the Node list, hold time 3 s, graceful restart on) installing into its agent.

`bgp_cluster` yields a `BgpCluster` (a `support.nodeagent.Cluster`: `.agents`, `.pod_ips`, `.cli()`) with
`.speakers` (`support.bgp.SpeakerProcess` by node name), `.pod_cidrs`, `.addresses`, `.fou_port` and
`.hold_time`; pods `a`, `b`, `c` run on node-1, node-2, node-3 and every agent has a BGP route to the
other two podCIDRs before the first test runs. Every process is killed at teardown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from podnet.client import ApiClient
from support.apiserver import ApiServerProcess
from support.bgp import SpeakerProcess
from support.nodeagent import AgentProcess, Cluster, free_udp_port, pod_manifest, wait_running
from support.processes import free_tcp_port

BGP_NODES = {"node-1": "127.0.0.81", "node-2": "127.0.0.82", "node-3": "127.0.0.83"}
BGP_PODS = {"a": "node-1", "b": "node-2", "c": "node-3"}
HOLD_TIME = 3
ROUTES_TIMEOUT = 20.0


@dataclass
class BgpCluster(Cluster):
    speakers: dict[str, SpeakerProcess] = field(default_factory=dict)
    pod_cidrs: dict[str, str] = field(default_factory=dict)  # node name -> podCIDR
    addresses: dict[str, str] = field(default_factory=lambda: dict(BGP_NODES))
    fou_port: int = 0
    hold_time: int = HOLD_TIME

    def bgp_routes(self, node: str) -> dict[str, str]:
        """The agent's forwarding table entries that came from BGP: prefix -> next hop."""
        return {
            r["prefix"]: r["next_hop"] for r in self.agents[node].rpc("routes.list") if r["source"] == "bgp"
        }

    def wait_for_routes(self, node: str, predicate, timeout: float = ROUTES_TIMEOUT) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            routes = self.bgp_routes(node)
            if predicate(routes):
                return routes
            if time.monotonic() > deadline:
                raise AssertionError(f"{node}'s BGP routes never matched: {routes}")
            time.sleep(0.1)

    def full_mesh_routes(self, node: str) -> dict[str, str]:
        """What a node's agent holds when every speaker is up: the other nodes' podCIDRs via them."""
        return {self.pod_cidrs[other]: self.addresses[other] for other in BGP_NODES if other != node}


@pytest.fixture(scope="module")
def bgp_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BgpCluster]:
    home = tmp_path_factory.mktemp("podnet-bgp")
    api_dir = home / "apiserver"
    api_dir.mkdir()
    api = ApiServerProcess(api_dir, f"sqlite:///{api_dir / 'store.db'}", controllers=True)
    addresses = list(BGP_NODES.values())
    cluster = BgpCluster(api, home, {}, fou_port=free_udp_port(*addresses))
    try:
        api.start()
        vxlan_port, bgp_port = free_udp_port(*addresses), free_tcp_port(*addresses)
        for name, address in BGP_NODES.items():
            agent = AgentProcess(
                name,
                address,
                home,
                api.kubeconfig,
                vxlan_port,
                ("--backend", "bgp", "--fou-port", str(cluster.fou_port)),
            )
            cluster.agents[name] = agent
            agent.start()
        for name, address in BGP_NODES.items():
            speaker = SpeakerProcess(
                name,
                address,
                bgp_port,
                (
                    "--kubeconfig",
                    str(api.kubeconfig),
                    "--agent-socket",
                    cluster.agents[name].socket,
                    "--hold-time",
                    str(HOLD_TIME),
                    "--connect-retry",
                    "1",
                ),
                home,
            )
            cluster.speakers[name] = speaker
            speaker.start()

        async def create_pods(client: ApiClient) -> None:
            for pod, node in BGP_PODS.items():
                await client.create(pod_manifest(pod, node))
            for pod in BGP_PODS:
                cluster.pod_ips[pod] = (await wait_running(client, "default", pod))["status"]["podIP"]
            for node in BGP_NODES:
                cluster.pod_cidrs[node] = (await client.get("nodes", node))["spec"]["podCIDR"]

        cluster.api_call(create_pods)
        for node in BGP_NODES:
            cluster.wait_for_routes(node, lambda routes, node=node: routes == cluster.full_mesh_routes(node))
        yield cluster
    finally:
        for speaker in cluster.speakers.values():
            speaker.kill()
        for agent in cluster.agents.values():
            agent.kill()
        api.kill()
