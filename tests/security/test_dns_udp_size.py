"""The cluster DNS never sends a UDP answer larger than the EDNS size it advertises (1232) nor than the
client's (issue 23, item 9): a client claiming 64 KiB could otherwise make it send fragmented datagrams
of a spoofed victim's choosing, the amplification that CoreDNS and BIND bound the same way."""

from __future__ import annotations

import json

import pytest
from dnslib import EDNS0, QTYPE, DNSQuestion, DNSRecord
from podnet.dns.answer import OUR_UDP_SIZE, Forward, answer, resolve
from podnet.dns.records import Records
from support.dns import run_dig, start_dns

NAME = "big.default.svc.cluster.local"
ENDPOINTS = 300  # about 5 kB of A records


def _objects() -> list[dict]:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big", "namespace": "default"},
               "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
    endpoints = [{"addresses": [f"10.245.{i // 200}.{i % 200 + 1}"]} for i in range(ENDPOINTS)]
    slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": "big-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "big"}},
              "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}], "endpoints": endpoints}
    return [service, slice_]


def _ask(name: str, edns: int | None) -> bytes:
    query = DNSRecord(q=DNSQuestion(name, QTYPE.A))
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns))
    return bytes(query.pack())


@pytest.mark.parametrize("client_size, limit", [
    (None, 512), (300, 512), (800, 800), (1232, 1232), (4096, OUR_UDP_SIZE), (65535, OUR_UDP_SIZE)])
def test_udp_answers_fit_the_smaller_of_both_sizes(client_size, limit):
    service, slice_ = _objects()
    records = Records.from_objects([service], [slice_])
    reply = answer(_ask(NAME, client_size), records, synced=True)
    parsed = DNSRecord.parse(reply)
    assert len(reply) <= limit and len(reply) > limit - 20  # as many whole records as fit, no fewer
    assert parsed.header.tc == 1
    if client_size is not None:
        assert parsed.ar[-1].rtype == QTYPE.OPT and parsed.ar[-1].rclass == OUR_UDP_SIZE
    # Names forwarded upstream are cut to the same size on their way back.
    assert resolve(_ask("example.com", client_size), records, synced=True) == Forward(limit)
    # TCP carries the whole answer.
    assert len(DNSRecord.parse(answer(_ask(NAME, client_size), records, synced=True, udp=False)).rr) == ENDPOINTS


def test_dig_with_a_64k_buffer_gets_at_most_1232_bytes_from_the_real_server(tmp_path):
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": _objects()}))
    dns = start_dns(["--objects", str(objects)], tmp_path / "dns.log")
    try:
        big = run_dig(dns.port, NAME, "A", "+bufsize=65535", "+ignore")
        assert "tc" in big.flags and 1200 < big.size <= OUR_UDP_SIZE, big.output
        assert 0 < len(big.answer) < ENDPOINTS
        small = run_dig(dns.port, NAME, "A", "+bufsize=700", "+ignore")
        assert "tc" in small.flags and small.size <= 700, small.output
        whole = run_dig(dns.port, NAME, "A", "+bufsize=65535", "+tcp")
        assert "tc" not in whole.flags and len(whole.answer) == ENDPOINTS
    finally:
        dns.kill()
