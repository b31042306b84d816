"""The real `podnet dns` process, answering Debian's dig over UDP and TCP, forwarding to another real
instance, and surviving a barrage of mutated datagrams. Records come from a manifest file here; the
tests fed by a real API server are in test_dns_cluster.py."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from dnslib import EDNS0, QTYPE, DNSQuestion, DNSRecord
from support.dns import run_dig, start_dns

BIG = 200  # endpoints of the large headless service: ~3.3 kB of answers


def _service(name, namespace, cluster_ip, ports=(("http", 80, "TCP"),), **spec):
    spec = {"clusterIP": cluster_ip, "ports": [{"name": n, "port": p, "protocol": t} for n, p, t in ports], **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _slice(name, namespace, service, endpoints, ports=(("http", 80, "TCP"),)):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": n, "port": p, "protocol": t} for n, p, t in ports],
            "endpoints": endpoints}


def cluster_objects(namespace: str = "default") -> list[dict]:
    return [
        _service("web", namespace, "10.96.0.20"),
        _slice("web-1", namespace, "web", [{"addresses": ["10.244.1.7"], "conditions": {"ready": True}}]),
        _service("db", namespace, "None", ports=(("pg", 5432, "TCP"),)),
        _slice("db-1", namespace, "db", [
            {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": True}},
            {"addresses": ["10.244.2.6"], "hostname": "db-1", "conditions": {"ready": True}},
        ], ports=(("pg", 5432, "TCP"),)),
        _service("search", namespace, None, ports=(), type="ExternalName", externalName="search.example.org"),
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": namespace},
         "status": {"phase": "Running", "podIP": "10.244.1.9"}},
        _service("big", namespace, "None"),
        _slice("big-1", namespace, "big",
               [{"addresses": [f"10.245.{i // 200}.{i % 200 + 1}"]} for i in range(BIG)]),
    ]


def write_objects(path, objects) -> str:
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    return str(path)


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dns")
    process = start_dns(["--objects", write_objects(tmp / "objects.json", cluster_objects())], tmp / "dns.log")
    try:
        yield process
    finally:
        process.kill()


SOA_NAME = "cluster.local."
RECORD_FORMS = [
    # (name, type, status, answer values)
    ("web.default.svc.cluster.local", "A", "NOERROR", ["10.96.0.20"]),
    ("_http._tcp.web.default.svc.cluster.local", "SRV", "NOERROR", ["0 100 80 web.default.svc.cluster.local."]),
    ("db.default.svc.cluster.local", "A", "NOERROR", ["10.244.1.5", "10.244.2.6"]),
    ("db-1.db.default.svc.cluster.local", "A", "NOERROR", ["10.244.2.6"]),
    ("_pg._tcp.db.default.svc.cluster.local", "SRV", "NOERROR",
     ["0 50 5432 db-0.db.default.svc.cluster.local.", "0 50 5432 db-1.db.default.svc.cluster.local."]),
    ("20.0.96.10.in-addr.arpa", "PTR", "NOERROR", ["web.default.svc.cluster.local."]),
    ("6.2.244.10.in-addr.arpa", "PTR", "NOERROR", ["db-1.db.default.svc.cluster.local."]),
    ("search.default.svc.cluster.local", "A", "NOERROR", ["search.example.org."]),
    ("10-244-1-9.default.pod.cluster.local", "A", "NOERROR", ["10.244.1.9"]),
    ("dns-version.cluster.local", "TXT", "NOERROR", ['"1.1.0"']),
    ("missing.default.svc.cluster.local", "A", "NXDOMAIN", []),
    ("web.default.svc.cluster.local", "AAAA", "NOERROR", []),
    ("example.org", "A", "REFUSED", []),
]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dig_gets_every_record_form(dns, transport):
    options = ["+tcp"] if transport == "tcp" else []
    for name, qtype, status, values in RECORD_FORMS:
        result = run_dig(dns.port, name, qtype, *options)
        assert result.transport == transport.upper(), result.output
        assert (result.status, sorted(result.values())) == (status, sorted(values)), result.output
        if status in ("NXDOMAIN",) or (status == "NOERROR" and not values):
            assert [rr[0] for rr in result.authority] == [SOA_NAME] and result.authority[0][3] == "SOA"
        if status != "REFUSED":
            assert "aa" in result.flags
        assert all(rr[1] == "5" for rr in result.answer)


def test_a_large_headless_answer_is_truncated_over_udp_and_complete_over_tcp(dns):
    name = "big.default.svc.cluster.local"
    truncated = run_dig(dns.port, name, "A", "+noedns", "+ignore")
    assert "tc" in truncated.flags and truncated.size <= 512
    assert 0 < len(truncated.answer) < BIG
    over_tcp = run_dig(dns.port, name, "A", "+tcp")
    assert "tc" not in over_tcp.flags and len(over_tcp.answer) == BIG
    # dig's own fallback: a truncated UDP answer (EDNS 1232) makes it ask again over TCP.
    fallback = run_dig(dns.port, name, "A")
    assert "Truncated, retrying in TCP mode" in fallback.output and len(fallback.answer) == BIG


def test_podnet_dig_prints_like_dig(dns):
    from typer.testing import CliRunner

    from podnet.cli.main import app

    result = CliRunner().invoke(app, ["dig", "db.default.svc.cluster.local", "--server", f"127.0.0.1:{dns.port}"])
    assert result.exit_code == 0, result.output
    assert "status: NOERROR" in result.output and "flags: qr aa rd" in result.output
    assert "10.244.2.6" in result.output and f"SERVER: 127.0.0.1#{dns.port}" in result.output
    big = CliRunner().invoke(app, ["dig", "big.default.svc.cluster.local", "--server", f"127.0.0.1:{dns.port}"])
    assert "Truncated, retrying in TCP mode" in big.output and big.output.count("10.245.") == BIG
    srv = CliRunner().invoke(app, ["dig", "_pg._tcp.db.default.svc.cluster.local", "SRV", "--tcp",
                                   "--server", f"127.0.0.1:{dns.port}"])
    assert "(TCP)" in srv.output and "5432 db-0.db.default.svc.cluster.local." in srv.output


def query_bytes(name: str, qtype: str = "A", id_: int = 0, edns: int | None = None) -> bytes:
    query = DNSRecord(q=DNSQuestion(name, getattr(QTYPE, qtype)))
    query.header.id = id_
    if edns:
        query.add_ar(EDNS0(udp_len=edns))
    return bytes(query.pack())


def test_pipelined_tcp_queries_are_all_answered(dns):
    names = ["web.default.svc.cluster.local", "db.default.svc.cluster.local", "missing.default.svc.cluster.local"]
    queries = [query_bytes(names[i % 3], id_=1000 + i) for i in range(60)]
    with socket.create_connection(("127.0.0.1", dns.port), timeout=5) as sock:
        sock.sendall(b"".join(len(q).to_bytes(2, "big") + q for q in queries))
        data = b""
        replies = []
        while len(replies) < len(queries):
            data += sock.recv(65536)
            while len(data) >= 2 and len(data) >= 2 + int.from_bytes(data[:2], "big"):
                length = int.from_bytes(data[:2], "big")
                replies.append(DNSRecord.parse(data[2:2 + length]))
                data = data[2 + length:]
    assert [r.header.id for r in replies] == [1000 + i for i in range(60)]
    assert [str(r.q.qname) for r in replies[:3]] == [n + "." for n in names]
    assert [RCODE(r) for r in replies[:3]] == [0, 0, 3]


def RCODE(reply: DNSRecord) -> int:  # noqa: N802 - reads like the field it returns
    return reply.header.rcode


def test_names_outside_the_zone_are_forwarded_upstream_with_tcp_on_truncation(dns_process, tmp_path):
    upstream = dns_process("--zone", "upstream.test", "--objects",
                           write_objects(tmp_path / "upstream.json", cluster_objects("far")))
    external = _service("far-web", "default", None, ports=(), type="ExternalName",
                        externalName="web.far.svc.upstream.test")
    local = dns_process("--upstream", f"127.0.0.1:{upstream.port}", "--objects",
                        write_objects(tmp_path / "local.json", [*cluster_objects(), external]))
    forwarded = run_dig(local.port, "web.far.svc.upstream.test", "A")
    assert (forwarded.status, forwarded.values()) == ("NOERROR", ["10.96.0.20"])
    assert run_dig(local.port, "nothing.far.svc.upstream.test", "A").status == "NXDOMAIN"
    # The upstream truncates this over UDP; the forwarder asks it again over TCP.
    big = run_dig(local.port, "big.far.svc.upstream.test", "A", "+tcp")
    assert "tc" not in big.flags and len(big.answer) == BIG
    # A UDP client without EDNS gets a truncated reply and its own TCP retry gets everything.
    small = run_dig(local.port, "big.far.svc.upstream.test", "A", "+noedns", "+ignore")
    assert "tc" in small.flags and small.size <= 512
    # An ExternalName Service's CNAME comes with its target's records from upstream, as CoreDNS does.
    chased = run_dig(local.port, "far-web.default.svc.cluster.local", "A")
    assert chased.values() == ["web.far.svc.upstream.test.", "10.96.0.20"] and "aa" in chased.flags
    # The cluster's own names are still answered locally.
    assert run_dig(local.port, "web.default.svc.cluster.local").values() == ["10.96.0.20"]
    # An upstream that does not answer gives SERVFAIL, not silence.
    upstream.kill()
    assert run_dig(local.port, "web.far.svc.upstream.test", "A", "+time=5").status == "SERVFAIL"


def test_healthz_and_metrics(dns):
    base = f"http://127.0.0.1:{dns.metrics_port}"
    assert urllib.request.urlopen(f"{base}/healthz", timeout=5).read() == b"ok"
    run_dig(dns.port, "web.default.svc.cluster.local")
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert 'podnet_dns_queries_total{transport="udp"}' in metrics
    assert "podnet_dns_synced 1.0" in metrics


FUZZ_PACKETS = 100_000
FUZZ_RATE = 25_000  # datagrams per second


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    packet = bytearray(rng.choice(seeds))
    choice = rng.randrange(6)
    if choice == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 4)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
    elif choice == 1:  # cut short
        del packet[rng.randrange(len(packet)):]
    elif choice == 2:  # trailing junk
        packet += rng.randbytes(rng.randint(1, 40))
    elif choice == 3:  # a scrambled header
        packet[2:12] = rng.randbytes(10)
    elif choice == 4:  # a label length gone wrong
        packet[12] = rng.choice([0, 63, 64, 0xC0, 0xFF, rng.randrange(256)])
    else:  # two queries spliced
        other = rng.choice(seeds)
        packet = packet[:rng.randrange(len(packet))] + other[rng.randrange(len(other)):]
    return bytes(packet)


def queries_from_dig() -> list[bytes]:
    """The datagrams dig itself sends for every record form, with and without EDNS (and its cookie)."""
    import subprocess

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        digs = [
            subprocess.Popen(["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=5", *options, name, qtype],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, qtype, _, _ in RECORD_FORMS for options in ([], ["+noedns"])
        ]
        try:
            return [listener.recv(65535) for _ in digs]
        finally:
            for dig in digs:
                dig.kill()
                dig.wait()


def test_fuzzed_datagrams_leave_the_server_answering(dns):
    assert run_dig(dns.port, "web.default.svc.cluster.local").values() == ["10.96.0.20"]  # (skips without dig)
    rng = random.Random(20261126)
    seeds = queries_from_dig()
    packets = [mutate(rng, seeds) for _ in range(FUZZ_PACKETS)]
    replies = 0
    bad_replies = 0
    sent = 0
    deadline = time.monotonic() + 60
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.connect(("127.0.0.1", dns.port))
        sock.setblocking(False)

        def drain() -> None:
            nonlocal replies, bad_replies
            while True:
                try:
                    reply = sock.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    return
                replies += 1
                bad_replies += len(reply) < 12 or not reply[2] & 0x80

        started = time.monotonic()
        while sent < FUZZ_PACKETS:
            assert time.monotonic() < deadline, f"only {sent} datagrams sent in time"
            try:
                sock.send(packets[sent])
                sent += 1
            except BlockingIOError:
                drain()
                continue
            if sent % 100 == 0:
                # Pace the sender below what the server answers, as a burst far larger than its socket
                # buffer would only test the kernel's drops.
                drain()
                time.sleep(max(0.0, started + sent / FUZZ_RATE - time.monotonic()))
        time.sleep(0.2)
        drain()
    assert dns.process.poll() is None
    assert bad_replies == 0
    # Still answering, and answering right, over both transports.
    for options in ([], ["+tcp"]):
        result = run_dig(dns.port, "db.default.svc.cluster.local", "A", *options)
        assert sorted(result.values()) == ["10.244.1.5", "10.244.2.6"]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{dns.metrics_port}/metrics", timeout=5).read().decode()
    assert "podnet_dns_internal_errors_total 0.0" in metrics
    received = float(re.search(r'podnet_dns_queries_total\{transport="udp"\} (\S+)', metrics).group(1))
    dropped = float(re.search(r"^podnet_dns_dropped_total (\S+)", metrics, re.M).group(1))
    print(f"fuzz: sent {sent}, server received {received:.0f}, dropped {dropped:.0f}, replies {replies}")
    assert received >= FUZZ_PACKETS * 0.8  # the kernel may drop some when other work shares the cores
    # Every datagram the server did not count as dropped was answered (the two dig queries aside).
    assert replies >= (received - dropped - 2) * 0.99


async def test_tcp_connections_are_bounded_and_idle_ones_closed():
    import asyncio

    from podnet.dns.records import Records
    from podnet.dns.server import DnsServer

    server = DnsServer(Records.from_objects(cluster_objects()[:2]), lambda: True, tcp_idle_timeout=0.3,
                       max_tcp_connections=2)
    port = await server.start("127.0.0.1", 0)
    try:
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        # The third is closed at once; the first two answer, then close when left idle.
        assert await asyncio.wait_for(streams[2][0].read(), 2) == b""
        query = query_bytes("web.default.svc.cluster.local", id_=7)
        streams[0][1].write(len(query).to_bytes(2, "big") + query)
        length = int.from_bytes(await asyncio.wait_for(streams[0][0].readexactly(2), 2), "big")
        reply = DNSRecord.parse(await streams[0][0].readexactly(length))
        assert reply.header.id == 7 and [str(rr.rdata) for rr in reply.rr] == ["10.96.0.20"]
        started = time.monotonic()
        assert await asyncio.wait_for(streams[1][0].read(), 2) == b""
        assert time.monotonic() - started < 1.0
        assert server.counters.tcp_refused == 1
        for _, writer in streams:
            writer.close()
    finally:
        await server.close()


_PICKS_A_PORT_FREE_FOR_BOTH = r"""
import asyncio, socket
from podnet.dns.records import Records
from podnet.dns.server import DnsServer

async def main():
    held = socket.socket()
    held.bind(("127.0.0.1", 40000))  # TCP holds one of the two ephemeral ports; UDP may pick it
    held.listen()
    ports = []
    for _ in range(12):
        server = DnsServer(Records.from_objects([]), lambda: True)
        ports.append(await server.start("127.0.0.1", 0))
        await server.close()
    print(sorted(set(ports)))

asyncio.run(main())
"""


@pytest.mark.root
def test_port_zero_finds_a_port_free_for_udp_and_tcp_alike(tmp_path):
    """In a namespace of its own with two ephemeral ports, TCP holding one: every start with port 0
    ends on the other, never with 'address already in use'."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("a network namespace needs root, and CI runs as root")
        pytest.skip("a network namespace needs root")
    namespace = f"pndns-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for command in (["ip", "link", "set", "lo", "up"],
                        ["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40001"]):
            subprocess.run(["ip", "netns", "exec", namespace, *command], check=True)
        run = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", _PICKS_A_PORT_FREE_FOR_BOTH],
                             capture_output=True, text=True, timeout=60)
        assert (run.returncode, run.stdout.strip()) == (0, "[40001]"), run.stderr
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
