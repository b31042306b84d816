"""A podnet node agent with `--encryption wireguard` and wireguard-go as another node of its cluster.

wireguard-go runs on a TUN device in a network namespace, configured only with `wg set`; its "node" is a
Node object with its underlay address, a podCIDR (its TUN address in it) and its public key in Cilium's
annotation, and the route to that podCIDR is installed as the bgp backend's speaker installs the routes it
learns. The agent (bgp backend: bare pod packets inside WireGuard) learns it as a peer from the Node
list; the namespace's kernel then pings a virtual pod behind the agent, the pod pings back, and `wg show`
reports the handshake and the transfer."""

from __future__ import annotations

import asyncio
import base64
import subprocess

import pytest
from podnet.nodeagent.encryption import WG_PUBKEY_ANNOTATION
from podnet.overlay.wireguard.tunnel import PORT as WIREGUARD_PORT
from support.apiserver import ApiServerProcess
from support.nodeagent import AgentProcess, pod_manifest, wait_running
from support.wireguard_go import INTERFACE, run, wg_dump, wireguard_go_namespace

pytestmark = [pytest.mark.root, pytest.mark.slow]

AGENT_UNDERLAY = "198.18.121.1"  # the agent's node address: the host end of the veth pair
PEER_UNDERLAY = "198.18.121.2"
PEER_POD_CIDR = "10.244.200.0/24"
PEER_TUNNEL = "10.244.200.1"  # wireguard-go's TUN address, in its "node's" podCIDR


async def _register_peer_node(api: ApiServerProcess, public_key: bytes) -> None:
    async with api.client() as client:
        await client.create({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "wireguard-go", "annotations": {WG_PUBKEY_ANNOTATION: base64.b64encode(public_key).decode()}},
            "spec": {"podCIDR": PEER_POD_CIDR, "podCIDRs": [PEER_POD_CIDR]},
        })
        await client.patch("nodes", "wireguard-go", {"status": {"addresses": [
            {"type": "InternalIP", "address": PEER_UNDERLAY}, {"type": "Hostname", "address": "wireguard-go"}]}},
            subresource="status")


async def _node(api: ApiServerProcess, name: str) -> dict:
    async with api.client() as client:
        return await client.get("nodes", name)


async def _web_pod(api: ApiServerProcess) -> str:
    async with api.client() as client:
        await client.create(pod_manifest("web", "node-1"))
        return (await wait_running(client, "default", "web"))["status"]["podIP"]


def test_wireguard_go_node_pings_a_virtual_pod_through_the_agent(tmp_path):
    home = tmp_path / "home"
    (home / "apiserver").mkdir(parents=True)
    api = ApiServerProcess(home / "apiserver", f"sqlite:///{home / 'apiserver' / 'store.db'}", controllers=True)
    agent = AgentProcess("node-1", AGENT_UNDERLAY, home, api.kubeconfig, 4789,
                         extra_args=("--backend", "bgp", "--encryption", "wireguard"))
    with wireguard_go_namespace(tmp_path, host_underlay=AGENT_UNDERLAY, peer_underlay=PEER_UNDERLAY,
                                listen_port=WIREGUARD_PORT, tunnel_address=f"{PEER_TUNNEL}/24") as peer:
        try:
            api.start()
            agent.start()
            asyncio.run(_register_peer_node(api, peer.public_key))
            agent.rpc("routes.apply", {"source": "bgp", "routes": [{"prefix": PEER_POD_CIDR, "next_hop": PEER_UNDERLAY}]})
            pod_ip = asyncio.run(_web_pod(api))
            node = asyncio.run(_node(api, "node-1"))
            agent_key, agent_cidr = node["metadata"]["annotations"][WG_PUBKEY_ANNOTATION], node["spec"]["podCIDR"]
            run("wg", "set", INTERFACE, "peer", agent_key, "endpoint", f"{AGENT_UNDERLAY}:{WIREGUARD_PORT}",
                "allowed-ips", agent_cidr, netns=peer.netns)
            run("ip", "route", "add", agent_cidr, "dev", INTERFACE, netns=peer.netns)

            pinged = subprocess.run(["ip", "netns", "exec", peer.netns, "ping", "-n", "-c", "3", "-W", "3", pod_ip],
                                    capture_output=True, text=True, timeout=30)
            assert pinged.returncode == 0, pinged.stdout + pinged.stderr + agent.log()[-3000:]
            assert " 0% packet loss" in pinged.stdout

            answer = agent.rpc("pod.ping", {"namespace": "default", "pod": "web", "ip": PEER_TUNNEL, "count": 3})
            assert answer["received"] == 3, answer

            dump = wg_dump(peer.netns)
            assert dump["public_key"] == agent_key
            assert dump["endpoint"] == f"{AGENT_UNDERLAY}:{WIREGUARD_PORT}"
            assert int(dump["latest_handshake"]) > 0 and int(dump["rx"]) > 0 and int(dump["tx"]) > 0
            show = run("wg", "show", INTERFACE, netns=peer.netns)
            assert "latest handshake:" in show and "transfer:" in show
            info = agent.rpc("node.info")
            assert (info["encryption"], info["wireguard_port"], info["fou_port"]) == ("wireguard", WIREGUARD_PORT, 5555)
            counters = agent.counters()
            assert counters["wireguard.handshake-completed"] >= 1, counters
            assert counters["wireguard.transport-received"] >= 6, counters  # 3 requests, 3 replies
            assert counters.get("drop.wireguard-no-key", 0) == 0, counters
        finally:
            agent.kill()
            api.kill()
