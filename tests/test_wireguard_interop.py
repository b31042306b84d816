"""Interoperability with a WireGuard nobody here wrote: Debian's wireguard-go on a TUN device in a
network namespace, configured with `wg set`, against podnet's WireGuard core on the host end of a veth.
Real handshakes and real IP packets through the namespace's kernel, both directions of initiation."""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import time

import pytest
from podnet.overlay.wire import icmp, ipv4
from podnet.overlay.wire.ipv4 import IPProtocol, IPv4Packet
from podnet.overlay.wireguard import crypto
from podnet.overlay.wireguard.adapter import WireGuardEndpoint
from podnet.overlay.wireguard.device import Device, HandshakeCompleted
from support.wireguard_go import run, wg_dump, wireguard_go_namespace

pytestmark = pytest.mark.root

HOST_UNDERLAY = "198.18.120.1"  # the veth pair's /30 (benchmarking range: routed nowhere)
PEER_UNDERLAY = "198.18.120.2"
PEER_PORT = 51820
PEER_TUNNEL = "10.120.0.1"  # wireguard-go's interface address
CORE_TUNNEL = "10.120.0.2"  # the address behind podnet's core (a virtual pod)


@pytest.fixture
def wireguard_go_peer(tmp_path):
    with wireguard_go_namespace(tmp_path, host_underlay=HOST_UNDERLAY, peer_underlay=PEER_UNDERLAY,
                                listen_port=PEER_PORT, tunnel_address=f"{PEER_TUNNEL}/24") as peer:
        yield peer.netns, peer.public_key, peer.host_veth


def _add_core_as_peer(netns: str, core: Device, core_port: int, *options: str) -> None:
    run(
        "wg", "set", "wgpn0", "peer", base64.b64encode(core.public_key).decode(),
        "endpoint", f"{HOST_UNDERLAY}:{core_port}", "allowed-ips", f"{CORE_TUNNEL}/32", *options, netns=netns,
    )


def _echo(src: str, dst: str, kind: icmp.ICMPType, sequence: int, data: bytes, identifier: int = 0x4242) -> bytes:
    message = icmp.encode(icmp.IcmpEcho(kind, 0, identifier, sequence, data))
    return ipv4.encode(IPv4Packet(src, dst, IPProtocol.ICMP, message))


async def _open_core(
    peer_public: bytes, received: asyncio.Queue, events: list, *, preshared_key: bytes | None = None, **options
) -> WireGuardEndpoint:
    core = Device(crypto.private_bytes(crypto.X25519PrivateKey.generate()), **options)
    core.set_peer(
        peer_public, endpoint=(PEER_UNDERLAY, PEER_PORT), allowed_ips=(f"{PEER_TUNNEL}/32",), preshared_key=preshared_key
    )
    return await WireGuardEndpoint.open(
        core, HOST_UNDERLAY, 0, on_packet=lambda peer, packet: received.put_nowait(packet), on_event=events.append,
    )


async def test_core_initiates_with_a_preshared_key_and_pings_through_wireguard_go(wireguard_go_peer, tmp_path):
    netns, peer_public, host_veth = wireguard_go_peer
    capture_file = tmp_path / "underlay.pcapng"
    dumpcap = subprocess.Popen(
        ["dumpcap", "-q", "-i", host_veth, "-f", "udp", "-w", str(capture_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not capture_file.exists():
        assert dumpcap.poll() is None and time.monotonic() < deadline, "dumpcap did not start"
        await asyncio.sleep(0.05)
    psk = run("wg", "genpsk").strip()
    psk_file = tmp_path / "psk"
    psk_file.write_text(psk + "\n")
    received: asyncio.Queue[bytes] = asyncio.Queue()
    events: list = []
    endpoint = await _open_core(peer_public, received, events, preshared_key=base64.b64decode(psk))
    try:
        _add_core_as_peer(netns, endpoint.device, endpoint.address[1], "preshared-key", str(psk_file))
        for sequence in (1, 2, 3):
            payload = b"podnet-wireguard-%d" % sequence
            endpoint.send_packet(_echo(CORE_TUNNEL, PEER_TUNNEL, icmp.ICMPType.ECHO_REQUEST, sequence, payload))
            reply = ipv4.decode(await asyncio.wait_for(received.get(), 10))
            echo = icmp.decode(reply.payload)
            assert (reply.src, reply.dst) == (PEER_TUNNEL, CORE_TUNNEL)
            assert (echo.type, echo.sequence, echo.data) == (icmp.ICMPType.ECHO_REPLY, sequence, payload)
        assert HandshakeCompleted(peer_public, True) in events
        dump = wg_dump(netns)
        assert dump["preshared_key"] == psk
        assert dump["public_key"] == base64.b64encode(endpoint.device.public_key).decode()
        assert int(dump["latest_handshake"]) > 0
        assert int(dump["rx"]) > 0 and int(dump["tx"]) > 0
        assert dump["endpoint"] == f"{HOST_UNDERLAY}:{endpoint.address[1]}"
        show = run("wg", "show", "wgpn0", netns=netns)
        assert "latest handshake:" in show and "transfer:" in show
        await asyncio.sleep(0.5)  # let dumpcap write the last datagrams out
        dumpcap.send_signal(signal.SIGINT)
        dumpcap.wait(timeout=10)
        # Wireshark's WireGuard dissector reads the underlay as WireGuard: our initiation's sender index
        # is the one wireguard-go's response and transport messages address.
        fields = run(
            "tshark", "-r", str(capture_file), "-d", f"udp.port=={PEER_PORT},wg",
            "-T", "fields", "-e", "wg.type", "-e", "wg.sender", "-e", "wg.receiver",
        )
        rows = [line.split("\t") for line in fields.splitlines() if line.strip()]
        types = [row[0] for row in rows]
        assert types[:3] == ["1", "2", "4"], rows
        our_index = f"0x{endpoint.device.peers[peer_public].current.keys.local_index:08x}"
        assert rows[0][1] == our_index and rows[1][2] == our_index
        # three echo requests (the first, held during the handshake, confirms the session) and three replies
        assert sum(t == "4" for t in types) == 6
    finally:
        if dumpcap.poll() is None:
            dumpcap.kill()
            dumpcap.wait()
        endpoint.close()


async def _ping(netns: str, *options: str, expect_success: bool = True) -> str:
    ping = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, "ping", "-n", *options, CORE_TUNNEL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(ping.communicate(), 30))[0].decode()
    assert (ping.returncode == 0) == expect_success, output
    return output


def _answer_pings(endpoint: WireGuardEndpoint, received: asyncio.Queue) -> asyncio.Task:
    """The virtual pod behind the core: echo replies to whatever echo requests arrive."""

    async def answer():
        while True:
            request = ipv4.decode(await received.get())
            echo = icmp.decode(request.payload)
            reply = _echo(CORE_TUNNEL, request.src, icmp.ICMPType.ECHO_REPLY, echo.sequence, echo.data, echo.identifier)
            endpoint.send_packet(reply)

    return asyncio.create_task(answer())


async def test_wireguard_go_initiates_and_the_kernel_pings_a_virtual_pod_behind_the_core(wireguard_go_peer):
    netns, peer_public, _ = wireguard_go_peer
    received: asyncio.Queue[bytes] = asyncio.Queue()
    events: list = []
    endpoint = await _open_core(peer_public, received, events)
    responder = _answer_pings(endpoint, received)
    try:
        _add_core_as_peer(netns, endpoint.device, endpoint.address[1], "persistent-keepalive", "1")
        output = await _ping(netns, "-c", "3", "-i", "0.2")
        assert "3 received" in output, output
        assert HandshakeCompleted(peer_public, False) in events
        assert int(wg_dump(netns)["latest_handshake"]) > 0
        assert endpoint.device.counters["transport-received"] == 3
        await asyncio.sleep(2.5)
        assert endpoint.device.counters["keepalive-received"] >= 2  # wireguard-go's persistent keepalive

        # A source address the core did not allow for this peer is dropped after decryption.
        run("ip", "addr", "add", "10.120.0.9/32", "dev", "wgpn0", netns=netns)
        output = await _ping(netns, "-c", "1", "-W", "1", "-I", "10.120.0.9", expect_success=False)
        assert "0 received" in output, output
        assert endpoint.device.counters["dropped-source-not-allowed"] == 1
        assert endpoint.device.counters["transport-received"] == 3
    finally:
        responder.cancel()
        endpoint.close()


async def test_under_load_the_core_answers_with_a_cookie_and_wireguard_go_retries_with_mac2(wireguard_go_peer):
    # Every handshake counts as "under load", so the first initiation gets a cookie reply (sealed with
    # XChaCha20-Poly1305); wireguard-go must open it and send its retry, REKEY_TIMEOUT later, with mac2.
    netns, peer_public, _ = wireguard_go_peer
    received: asyncio.Queue[bytes] = asyncio.Queue()
    events: list = []
    endpoint = await _open_core(peer_public, received, events, handshakes_under_load=0)
    responder = _answer_pings(endpoint, received)
    try:
        _add_core_as_peer(netns, endpoint.device, endpoint.address[1])
        output = await _ping(netns, "-c", "1", "-W", "12")
        assert "1 received" in output, output
        counters = endpoint.device.counters
        assert counters["cookie-reply-sent"] == 1 and counters["handshake-response-sent"] == 1
        assert HandshakeCompleted(peer_public, False) in events
    finally:
        responder.cancel()
        endpoint.close()


async def test_a_rekey_and_a_restart_with_the_same_key_both_rehandshake_with_wireguard_go(wireguard_go_peer):
    netns, peer_public, _ = wireguard_go_peer
    private = crypto.private_bytes(crypto.X25519PrivateKey.generate())
    received: asyncio.Queue[bytes] = asyncio.Queue()
    events: list = []

    async def start() -> WireGuardEndpoint:
        core = Device(private)
        core.set_peer(peer_public, endpoint=(PEER_UNDERLAY, PEER_PORT), allowed_ips=(f"{PEER_TUNNEL}/32",))
        return await WireGuardEndpoint.open(
            core, HOST_UNDERLAY, 0, on_packet=lambda peer, packet: received.put_nowait(packet), on_event=events.append,
        )

    async def ping(endpoint: WireGuardEndpoint, sequence: int) -> None:
        endpoint.send_packet(_echo(CORE_TUNNEL, PEER_TUNNEL, icmp.ICMPType.ECHO_REQUEST, sequence, b"x"))
        echo = icmp.decode(ipv4.decode(await asyncio.wait_for(received.get(), 10)).payload)
        assert (echo.type, echo.sequence) == (icmp.ICMPType.ECHO_REPLY, sequence)

    first = await start()
    try:
        _add_core_as_peer(netns, first.device, first.address[1])
        await ping(first, 1)
        peer = first.device.peers[peer_public]
        session = peer.current
        session.created -= 121  # the session has reached REKEY_AFTER_TIME
        await asyncio.sleep(0.1)  # wireguard-go ignores initiations within 20 ms of the last (flood guard)
        await ping(first, 2)  # goes on the old session and starts a handshake
        await asyncio.sleep(0.5)
        assert first.device.counters["handshake-completed"] == 2
        assert peer.previous is session and peer.current is not session
        await ping(first, 3)  # on the new session
        assert peer.current.send_counter >= 1 and peer.current.replay is not session.replay
    finally:
        first.close()
    # A restarted node with its old private key: a new socket port and a later TAI64N timestamp.
    second = await start()
    try:
        await ping(second, 4)
        assert second.device.counters["handshake-completed"] == 1
        dump = wg_dump(netns)
        assert dump["endpoint"] == f"{HOST_UNDERLAY}:{second.address[1]}"
    finally:
        second.close()
