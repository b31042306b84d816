"""Speakers in a real cluster: an API server with controllers, node agents with `--backend bgp`, and one
speaker per node peering in a full mesh built from the Node list, installing into the real agents."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from support.bgp import free_tcp_port
from support.nodeagent import AgentProcess, free_udp_port, pod_manifest, wait_running

from podnet.client import ApiClient

NODES = {"node-1": "127.0.0.81", "node-2": "127.0.0.82"}


@pytest.mark.slow
def test_full_mesh_from_the_node_list_carries_pod_traffic(make_api_server, bgp_speakers, tmp_path):
    api = make_api_server(controllers=True)
    vxlan_port = free_udp_port(*NODES.values())
    bgp_port = free_tcp_port(*NODES.values())
    agents = {name: AgentProcess(name, address, tmp_path, api.url, api.token, vxlan_port, ("--backend", "bgp"))
              for name, address in NODES.items()}
    try:
        for agent in agents.values():
            agent.start()
        speakers = {name: bgp_speakers(name, address, bgp_port, "--server", api.url, "--token", api.token,
                                       "--agent-socket", agents[name].socket, "--hold-time", "3")
                    for name, address in NODES.items()}

        async def scenario() -> None:
            async with ApiClient(api.url, api.token) as client:
                for name, node in (("a", "node-1"), ("b", "node-2")):
                    await client.create(pod_manifest(name, node))
                pod_b = (await wait_running(client, "default", "b"))["status"]["podIP"]
                await wait_running(client, "default", "a")
                node_2 = await client.get("nodes", "node-2")
            # node-1's speaker learned node-2 from the Node list and node-2's podCIDR over BGP.
            for _ in range(100):
                rib = await speakers["node-1"].arpc("rib")
                if any(r["prefix"] == node_2["spec"]["podCIDR"] and r["peer"] == NODES["node-2"] for r in rib):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"node-1 never learned {node_2['spec']['podCIDR']}: {rib}")
            probe = {"src": "default/a", "dst": pod_b, "port": 80, "protocol": "TCP", "timeout": 2.0}
            outcome: dict = {}
            for _ in range(20):
                outcome = await asyncio.to_thread(agents["node-1"].rpc, "probe", probe)
                if outcome["ok"]:
                    break
                await asyncio.sleep(0.2)
            assert outcome["ok"], outcome
            # With node-2's speaker stopped, its routes are withdrawn at node-1 after the hold time, and
            # traffic to its pods stops.
            speakers["node-2"].signal(signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                while any(r["prefix"] == node_2["spec"]["podCIDR"] for r in await speakers["node-1"].arpc("rib")):
                    assert time.monotonic() - stopped < 4.5, "not withdrawn within hold time + 1 s"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)  # the speaker installs the withdrawal into the agent
                outcome = await asyncio.to_thread(agents["node-1"].rpc, "probe", {**probe, "timeout": 1.0})
                assert not outcome["ok"], outcome
            finally:
                speakers["node-2"].signal(signal.SIGCONT)

        asyncio.run(scenario())
    finally:
        for agent in agents.values():
            agent.kill()
