"""Interop: BIRD 2 (Debian bird2), started by the test on loopback, peers with podnet speakers."""

from __future__ import annotations

import asyncio

from support.processes import free_tcp_port

BIRD, PODNET_1, PODNET_2 = "127.0.0.62", "127.0.0.61", "127.0.0.63"
BIRD_PREFIX = "10.244.50.0/24"

COMMON = f"""
log stderr all;
router id {BIRD};
protocol device {{ }}
protocol static pods {{ ipv4; route {BIRD_PREFIX} blackhole; }}
"""


async def wait_for_text(bird, command: str, *needles: str, timeout: float = 15.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        text = await asyncio.to_thread(bird.birdc, command)
        if all(n in text for n in needles):
            return text
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"`birdc {command}` never showed {needles}:\n{text}\n{bird.log()[-2000:]}")
        await asyncio.sleep(0.2)


async def test_ebgp_with_bird_exchanges_pod_cidrs(birds, bgp_speakers, route_recorder):
    port = free_tcp_port(BIRD, PODNET_1)
    bird = birds("ebgp", COMMON + f"""
protocol bgp podnet {{
  local {BIRD} port {port} as 64513;
  neighbor {PODNET_1} port {port} as 64512;
  multihop;
  strict bind yes;
  hold time 9;
  connect retry time 1;
  connect delay time 1;
  ipv4 {{ import all; export where proto = "pods"; next hop self; }};
}}
""")
    recorder = await route_recorder("podnet-1")
    speaker = bgp_speakers("node-1", PODNET_1, port, "--asn", "64512", "--peer", f"{BIRD}/64513",
                           "--pod-cidr", "10.244.1.0/24", "--agent-socket", recorder.path, "--connect-retry", "1")
    # BIRD's table holds the podCIDR podnet advertises, with podnet's AS in its path.
    # (BIRD ignores loopback interfaces, so it cannot resolve a 127.0.0.x next hop and lists the route as
    # unreachable; the route and its attributes are what podnet sent.)
    await wait_for_text(bird, "show route all 10.244.1.0/24", "10.244.1.0/24", "BGP.as_path: 64512",
                        f"BGP.next_hop: {PODNET_1}", "BGP.origin: IGP")
    # podnet installs the prefix BIRD originates, towards BIRD.
    routes = await recorder.wait_for(lambda r: BIRD_PREFIX in r, timeout=15)
    assert routes == {BIRD_PREFIX: BIRD}
    rib = await speaker.arpc("rib")
    (learned,) = [r for r in rib if r["prefix"] == BIRD_PREFIX]
    assert learned["as_path"] == "64513" and learned["peer"] == BIRD and learned["state"] == "best"
    (peer,) = await speaker.arpc("peers")
    assert peer["state"] == "ESTABLISHED" and peer["asn"] == 64513 and peer["treat_as_withdraw"] == 0
    assert "Established" in await asyncio.to_thread(bird.birdc, "show protocols podnet")


async def test_bird_as_route_reflector_for_two_podnet_speakers(birds, bgp_speakers, route_recorder):
    port = free_tcp_port(BIRD, PODNET_1, PODNET_2)
    clients = "".join(f"""
protocol bgp client{index} {{
  local {BIRD} port {port} as 64512;
  neighbor {address} port {port} as 64512;
  rr client;
  strict bind yes;
  connect retry time 1;
  connect delay time 1;
  ipv4 {{ import all; export all; }};
}}
""" for index, address in ((1, PODNET_1), (2, PODNET_2)))
    bird = birds("rr", COMMON + clients)
    recorders = {name: await route_recorder(name) for name in ("podnet-1", "podnet-2")}
    for name, address, cidr in (("podnet-1", PODNET_1, "10.244.1.0/24"), ("podnet-2", PODNET_2, "10.244.2.0/24")):
        bgp_speakers(name, address, port, "--peer", BIRD, "--pod-cidr", cidr, "--any-next-hop",
                     "--agent-socket", recorders[name].path, "--connect-retry", "1")
    await wait_for_text(bird, "show route", "10.244.1.0/24", "10.244.2.0/24")
    # Each speaker learns the other's podCIDR through the reflector, with the other speaker as next hop
    # (which it takes from a reflector only with --any-next-hop).
    one = await recorders["podnet-1"].wait_for(lambda r: "10.244.2.0/24" in r, timeout=15)
    two = await recorders["podnet-2"].wait_for(lambda r: "10.244.1.0/24" in r, timeout=15)
    assert one == {"10.244.2.0/24": PODNET_2, BIRD_PREFIX: BIRD}
    assert two == {"10.244.1.0/24": PODNET_1, BIRD_PREFIX: BIRD}


async def test_routes_cross_between_ebgp_and_ibgp_with_next_hop_self(birds, bgp_speakers, route_recorder):
    """BIRD (AS 64513) peers with node-1 only; node-1 and node-2 are iBGP peers (AS 64512). Each side's
    routes reach the other through node-1, which puts itself as the next hop."""
    port = free_tcp_port(BIRD, PODNET_1, PODNET_2)
    bird = birds("edge", COMMON + f"""
protocol bgp podnet {{
  local {BIRD} port {port} as 64513;
  neighbor {PODNET_1} port {port} as 64512;
  multihop;
  strict bind yes;
  connect retry time 1;
  connect delay time 1;
  ipv4 {{ import all; export where proto = "pods"; next hop self; }};
}}
""")
    recorders = {name: await route_recorder(name) for name in ("node-1", "node-2")}
    bgp_speakers("node-1", PODNET_1, port, "--peer", f"{BIRD}/64513", "--peer", PODNET_2,
                 "--pod-cidr", "10.244.1.0/24", "--agent-socket", recorders["node-1"].path, "--connect-retry", "1")
    node_2 = bgp_speakers("node-2", PODNET_2, port, "--peer", PODNET_1, "--pod-cidr", "10.244.2.0/24",
                          "--agent-socket", recorders["node-2"].path, "--connect-retry", "1")
    # node-2's podCIDR, learned by node-1 over iBGP, is passed to BIRD with node-1's AS and address.
    await wait_for_text(bird, "show route all 10.244.2.0/24", "BGP.as_path: 64512", f"BGP.next_hop: {PODNET_1}")
    # BIRD's prefix, learned by node-1 over eBGP, reaches node-2 with node-1 as next hop.
    routes = await recorders["node-2"].wait_for(lambda r: BIRD_PREFIX in r, timeout=15)
    assert routes == {BIRD_PREFIX: PODNET_1, "10.244.1.0/24": PODNET_1}
    (learned,) = [r for r in await node_2.arpc("rib") if r["prefix"] == BIRD_PREFIX]
    assert learned["as_path"] == "64513" and learned["local_pref"] == 100 and learned["peer"] == PODNET_1
