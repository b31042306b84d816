"""The BGP speaker believes only what a node may claim (issue 23, item 5).

Anyone on the machine can bind a node's address and speak BGP from it. Against a real speaker process (its
installed routes recorded where the node agent would take them): a peer's announcement with another
address as next hop, or of a prefix outside the cluster CIDR, is refused and counted while its rightful
route is taken; a peer that sends more prefixes than the limit has its session closed with Cease /
Maximum Number of Prefixes Reached (RFC 4486) and its routes withdrawn. With a password (TCP MD5, RFC
2385), a speaker without it cannot even connect, while BIRD with the same password establishes.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from podnet.overlay.bgp import messages as m
from podnet.overlay.bgp.policy import ImportPolicy, filter_update, over_limit
from support.processes import free_tcp_port

SPEAKER, FORGER, ELSEWHERE = "127.0.165.21", "127.0.165.22", "127.0.165.99"
BIRD = "127.0.165.23"

pytestmark = pytest.mark.timeout(90)


def test_the_import_rules():
    policy = ImportPolicy(m.Prefix.parse("10.244.0.0/16"), max_prefixes=2)
    inside, outside = m.Prefix.parse("10.244.3.0/24"), m.Prefix.parse("10.245.0.0/24")
    wider = m.Prefix.parse("10.0.0.0/8")
    assert filter_update(policy, FORGER, [inside], FORGER).accepted == (inside,)
    assert filter_update(policy, FORGER, [inside], None).accepted == (inside,)
    refused = filter_update(policy, FORGER, [inside, outside], ELSEWHERE)
    assert refused.accepted == () and refused.rejected == {"next-hop-not-peer": 2}
    mixed = filter_update(policy, FORGER, [inside, outside, wider], FORGER)
    assert mixed.accepted == (inside,) and mixed.rejected == {"outside-cluster-cidr": 2}
    reflected = ImportPolicy(m.Prefix.parse("10.244.0.0/16"), any_next_hop=True)
    assert filter_update(reflected, FORGER, [inside], ELSEWHERE).accepted == (inside,)
    assert over_limit(policy, 2) is None
    error = over_limit(policy, 3)
    assert error is not None and (error.code, error.subcode) == (m.ErrorCode.CEASE, 1)
    assert error.data == struct.pack("!HBI", 1, 1, 2)


class Forger:
    """A BGP peer made of raw messages, speaking from the peer address the speaker was told about."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Forger:
        reader, writer = await asyncio.open_connection(SPEAKER, port, local_addr=(FORGER, 0))
        forger = cls(reader, writer)
        writer.write(m.encode(m.Open.build(64513, 9, FORGER, (m.Multiprotocol(),))))
        assert isinstance(await forger.next_message(), m.Open)
        writer.write(m.encode(m.KEEPALIVE))
        assert isinstance(await forger.next_message(), m.Keepalive)
        return forger

    async def next_message(self) -> m.Message:
        while True:
            header = await asyncio.wait_for(self.reader.readexactly(19), 10)
            (length,) = struct.unpack_from("!H", header, 16)
            message = m.decode(header + await self.reader.readexactly(length - 19))
            if not isinstance(message, m.Update):  # the speaker's own routes and End-of-RIB
                return message

    def announce(self, next_hop: str, *prefixes: str) -> None:
        attributes = (m.OriginAttribute(m.Origin.IGP), m.AsPath.sequence(64513), m.NextHop(next_hop))
        for update in m.build_updates(attributes, [m.Prefix.parse(p) for p in prefixes]):
            self.writer.write(update)

    def close(self) -> None:
        self.writer.close()


async def _eventually(check, what: str, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)
    return result


async def test_forged_announcements_are_refused_and_counted(bgp_speakers, route_recorder):
    port = free_tcp_port(SPEAKER, FORGER)
    recorder = await route_recorder("node-1")
    speaker = bgp_speakers("node-1", SPEAKER, port, "--peer", f"{FORGER}/64513", "--pod-cidr", "10.244.1.0/24",
                           "--max-prefixes", "4", "--graceful-restart-time", "0", "--agent-socket", recorder.path)
    forger = await Forger.connect(port)
    try:
        forger.announce(ELSEWHERE, "10.244.7.0/24")  # pod traffic for 10.244.7/24 to an address of our choosing
        forger.announce(FORGER, "192.0.2.0/24", "10.244.0.0/15")  # outside the cluster CIDR
        forger.announce(FORGER, "10.244.8.0/24")  # what this peer may claim
        routes = await recorder.wait_for(lambda r: "10.244.8.0/24" in r)
        assert routes == {"10.244.8.0/24": FORGER}
        counters = (await speaker.arpc("info"))["counters"]
        assert counters["routes_rejected.next-hop-not-peer"] == 1
        assert counters["routes_rejected.outside-cluster-cidr"] == 2
        assert {r["prefix"] for r in await speaker.arpc("rib")} == {"10.244.1.0/24", "10.244.8.0/24"}

        # Four routes are allowed; the fifth closes the session and takes the peer's routes away.
        forger.announce(FORGER, *(f"10.244.{n}.0/24" for n in range(10, 14)))
        notification = await forger.next_message()
        assert isinstance(notification, m.Notification)
        assert (notification.code, notification.subcode) == (m.ErrorCode.CEASE, m.CeaseError.MAXIMUM_PREFIXES_REACHED)
        assert notification.data == struct.pack("!HBI", 1, 1, 4)
        await recorder.wait_for(lambda r: r == {})
        info = await speaker.arpc("info")
        assert info["counters"]["sessions_closed.max-prefixes"] == 1
        (peer,) = await speaker.arpc("peers")
        assert peer["state"] != "ESTABLISHED" and "maximum number of prefixes" in peer["last_error"]
    finally:
        forger.close()


async def test_with_a_password_only_a_peer_that_knows_it_connects(bgp_speakers, route_recorder, birds, tmp_path):
    port = free_tcp_port(SPEAKER, FORGER, BIRD)
    password = tmp_path / "bgp-password"
    password.write_text("s3cret-shared\n")
    bird = birds("md5", f"""
log stderr all;
router id {BIRD};
protocol device {{ }}
protocol static pods {{ ipv4; route 10.244.50.0/24 blackhole; }}
protocol bgp podnet {{
  local {BIRD} port {port} as 64513;
  neighbor {SPEAKER} port {port} as 64512;
  multihop;
  strict bind yes;
  password "s3cret-shared";
  connect retry time 1;
  connect delay time 1;
  ipv4 {{ import all; export where proto = "pods"; next hop self; }};
}}
""")
    recorder = await route_recorder("node-1")
    speaker = bgp_speakers("node-1", SPEAKER, port, "--peer", f"{BIRD}/64513", "--peer", f"{FORGER}/64513",
                           "--pod-cidr", "10.244.1.0/24", "--password-file", str(password),
                           "--graceful-restart-time", "0", "--agent-socket", recorder.path, "--connect-retry", "1")
    # BIRD signs its segments with the password: the session comes up and its route is installed.
    routes = await recorder.wait_for(lambda r: "10.244.50.0/24" in r, timeout=20)
    assert routes == {"10.244.50.0/24": BIRD}
    # A peer address without the password: the kernel drops its SYN, the handshake never completes.
    with pytest.raises((TimeoutError, OSError)):
        await asyncio.wait_for(asyncio.open_connection(SPEAKER, port, local_addr=(FORGER, 0)), 3)
    peers = {p["peer"]: p["state"] for p in await speaker.arpc("peers")}
    assert peers[BIRD] == "ESTABLISHED" and peers[FORGER] != "ESTABLISHED"
    assert "Established" in await asyncio.to_thread(bird.birdc, "show protocols podnet")
