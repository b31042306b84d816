"""The pure answer function against the records, table-driven in the style of CoreDNS's kubernetes
plugin handler tests: question, type, rcode, and the exact sections."""

from __future__ import annotations

import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.dns.answer import Forward, answer, resolve
from podnet.dns.records import Records


def service(name, namespace="testns", cluster_ip="10.0.0.1", ports=(("http", 80, "TCP"),), **spec):
    spec = {"clusterIP": cluster_ip, "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
            **spec}
    if cluster_ip and cluster_ip != "None":
        spec["clusterIPs"] = [cluster_ip]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def endpoint_slice(name, service_name, endpoints, namespace="testns", ports=(("http", 80, "TCP"),)):
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
        "endpoints": endpoints,
    }


def pod(name, ip, namespace="testns", phase="Running"):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


SERVICES = [
    service("svc1"),
    service("svc6", cluster_ip="10.0.0.3", ports=((None, 80, "TCP"),)),
    service("hdls1", cluster_ip="None"),
    service("external", cluster_ip=None, ports=(), type="ExternalName", externalName="ext.interwebs.test"),
    service("ext-local", cluster_ip=None, ports=(), type="ExternalName",
            externalName="svc1.testns.svc.cluster.local"),
]
SLICES = [
    endpoint_slice("hdls1-abc", "hdls1", [
        {"addresses": ["172.0.0.2"], "conditions": {"ready": True}},
        {"addresses": ["172.0.0.3"], "hostname": "hdls1-0", "conditions": {"ready": True}},
        {"addresses": ["172.0.0.9"], "conditions": {"ready": False}},
    ]),
    endpoint_slice("svc1-xyz", "svc1", [{"addresses": ["10.244.3.4"]}]),
]
PODS = [pod("web-1", "10.244.1.5"), pod("done", "10.244.1.6", phase="Succeeded")]

SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"


@pytest.fixture
def records() -> Records:
    return Records.from_objects(SERVICES, SLICES, PODS)


def ask(name: str, qtype: str = "A", *, id_: int = 0x1234, edns: int | None = None, rd: bool = True) -> bytes:
    query = DNSRecord(q=DNSQuestion(name, getattr(QTYPE, qtype)))
    query.header.id = id_
    query.header.rd = int(rd)
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns))
    return bytes(query.pack())


def zone_lines(rrs) -> list[str]:
    return [" ".join(rr.toZone().split()) for rr in rrs if rr.rtype != QTYPE.OPT]


CASES = [
    # (qname, qtype, rcode, answer, authority, additional)
    ("svc1.testns.svc.cluster.local.", "A", "NOERROR", ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"], [], []),
    ("svc1.testns.svc.cluster.local.", "AAAA", "NOERROR", [], [SOA], []),
    ("_http._tcp.svc1.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."], [],
     ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
    ("_http._udp.svc1.testns.svc.cluster.local.", "SRV", "NXDOMAIN", [], [SOA], []),
    ("_tcp.svc1.testns.svc.cluster.local.", "A", "NOERROR", [], [SOA], []),
    ("10-244-3-4.svc1.testns.svc.cluster.local.", "A", "NOERROR",
     ["10-244-3-4.svc1.testns.svc.cluster.local. 5 IN A 10.244.3.4"], [], []),
    ("svc6.testns.svc.cluster.local.", "A", "NOERROR", ["svc6.testns.svc.cluster.local. 5 IN A 10.0.0.3"], [], []),
    ("_http._tcp.svc6.testns.svc.cluster.local.", "SRV", "NXDOMAIN", [], [SOA], []),
    ("hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     ["hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2", "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3"],
     [], []),
    ("_http._tcp.hdls1.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 50 80 172-0-0-2.hdls1.testns.svc.cluster.local.",
      "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 50 80 hdls1-0.hdls1.testns.svc.cluster.local."], [],
     ["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
      "hdls1-0.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3"]),
    ("hdls1-0.hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     ["hdls1-0.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3"], [], []),
    ("172-0-0-2.hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     ["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"], [], []),
    ("172-0-0-9.hdls1.testns.svc.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    ("external.testns.svc.cluster.local.", "A", "NOERROR",
     ["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."], [], []),
    ("ext-local.testns.svc.cluster.local.", "A", "NOERROR",
     ["ext-local.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
      "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"], [], []),
    ("ext-local.testns.svc.cluster.local.", "TXT", "NOERROR",
     ["ext-local.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local."], [], []),
    ("1.0.0.10.in-addr.arpa.", "PTR", "NOERROR", ["1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."],
     [], []),
    ("3.0.0.172.in-addr.arpa.", "PTR", "NOERROR",
     ["3.0.0.172.in-addr.arpa. 5 IN PTR hdls1-0.hdls1.testns.svc.cluster.local."], [], []),
    ("4.3.244.10.in-addr.arpa.", "PTR", "NOERROR",
     ["4.3.244.10.in-addr.arpa. 5 IN PTR 10-244-3-4.svc1.testns.svc.cluster.local."], [], []),
    ("10-244-1-5.testns.pod.cluster.local.", "A", "NOERROR",
     ["10-244-1-5.testns.pod.cluster.local. 5 IN A 10.244.1.5"], [], []),
    ("10-244-1-6.testns.pod.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    ("10-244-1-5.otherns.pod.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    ("dns-version.cluster.local.", "TXT", "NOERROR", ['dns-version.cluster.local. 5 IN TXT "1.1.0"'], [], []),
    ("cluster.local.", "SOA", "NOERROR", [SOA], [], []),
    ("cluster.local.", "NS", "NOERROR", ["cluster.local. 5 IN NS ns.dns.cluster.local."], [], []),
    ("testns.svc.cluster.local.", "A", "NOERROR", [], [SOA], []),
    ("svc.cluster.local.", "A", "NOERROR", [], [SOA], []),
    ("nonexistent.testns.svc.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    ("svc1.otherns.svc.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    ("svc1.testns.svc.cluster.local.", "ANY", "NOERROR", ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"], [], []),
    ("cluster.local.", "ANY", "NOERROR", ["cluster.local. 5 IN NS ns.dns.cluster.local.", SOA], [], []),
    ("example.com.", "A", "REFUSED", [], [], []),
]


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answers", "authority", "additional"), CASES,
                         ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_answers(records, qname, qtype, rcode, answers, authority, additional):
    reply = DNSRecord.parse(answer(ask(qname, qtype), records, synced=True))
    assert reply.header.id == 0x1234
    assert RCODE.get(reply.header.rcode) == rcode
    assert reply.header.qr == 1 and reply.header.rd == 1
    assert reply.header.aa == (rcode != "REFUSED")
    assert [str(q.qname) for q in reply.questions] == [qname]
    # Address answers rotate from query to query (see test_addresses_rotate_between_queries).
    assert sorted(zone_lines(reply.rr)) == sorted(answers)
    assert zone_lines(reply.auth) == authority
    assert zone_lines(reply.ar) == additional


def test_the_question_comes_back_in_the_case_it_was_asked(records):
    reply = DNSRecord.parse(answer(ask("SvC1.TestNS.svc.Cluster.Local", "A"), records, synced=True))
    assert str(reply.q.qname) == "SvC1.TestNS.svc.Cluster.Local."
    assert zone_lines(reply.rr) == ["SvC1.TestNS.svc.Cluster.Local. 5 IN A 10.0.0.1"]


def test_recursion_desired_is_echoed(records):
    assert DNSRecord.parse(answer(ask("svc1.testns.svc.cluster.local", rd=False), records, synced=True)).header.rd == 0


def test_names_outside_the_zone_are_forwarded_with_the_clients_udp_limit(records):
    assert resolve(ask("example.com"), records, synced=True) == Forward(512)
    assert resolve(ask("example.com", edns=4096), records, synced=True) == Forward(1232)  # ours is smaller
    assert resolve(ask("example.com", edns=900), records, synced=True) == Forward(900)
    assert resolve(ask("9.9.9.10.in-addr.arpa", "PTR"), records, synced=True) == Forward(512)


def test_a_cname_out_of_the_zone_asks_upstream_for_its_target(records):
    decision = resolve(ask("external.testns.svc.cluster.local", "A"), records, synced=True)
    assert isinstance(decision, Forward) and decision.target == "ext.interwebs.test"
    assert zone_lines(DNSRecord.parse(decision.cname_reply).rr) == [
        "external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."]
    # Asking for the CNAME itself needs nothing from upstream; a target inside the zone neither.
    assert isinstance(resolve(ask("external.testns.svc.cluster.local", "CNAME"), records, synced=True), bytes)
    assert isinstance(resolve(ask("ext-local.testns.svc.cluster.local", "A"), records, synced=True), bytes)


def test_before_sync_everything_is_servfail_not_nxdomain(records):
    for name in ("svc1.testns.svc.cluster.local", "nonexistent.testns.svc.cluster.local"):
        reply = DNSRecord.parse(answer(ask(name), records, synced=False))
        assert RCODE.get(reply.header.rcode) == "SERVFAIL"
        assert str(reply.q.qname) == name + "." and not reply.rr


def test_short_datagrams_and_responses_are_dropped(records):
    assert answer(b"\x12\x34\x01\x00\x00\x01", records, synced=True) is None
    response = answer(ask("svc1.testns.svc.cluster.local"), records, synced=True)
    assert answer(response, records, synced=True) is None


@pytest.mark.parametrize("query", [
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",  # the question is missing
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07exam",  # the name is cut short
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # a pointer in the question
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01",  # type and class cut short
    b"\xab\xcd\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x00\x01\x00\x01",  # two questions
    b"\xab\xcd\x01\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x01\x00\x01",  # an answer in a query
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00\x01\x00\x00\x29",  # a cut OPT
])
def test_malformed_queries_with_a_header_get_formerr_with_their_id(records, query):
    reply = answer(query, records, synced=True)
    assert reply[:2] == b"\xab\xcd"
    assert reply[2] & 0x80 and reply[3] & 0x0F == 1


def test_unknown_opcode_is_notimp(records):
    query = bytearray(ask("svc1.testns.svc.cluster.local"))
    query[2] |= 2 << 3  # opcode STATUS
    reply = answer(bytes(query), records, synced=True)
    assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == 4
    assert (reply[2] >> 3) & 0x0F == 2


def test_edns_version_other_than_zero_is_badvers(records):
    query = ask("svc1.testns.svc.cluster.local", edns=1232)
    query = query[:-5] + b"\x01" + query[-4:]  # the OPT TTL's second byte is the version
    reply = answer(query, records, synced=True)
    parsed = DNSRecord.parse(reply)
    opt = [rr for rr in parsed.ar if rr.rtype == QTYPE.OPT]
    assert len(opt) == 1 and (opt[0].ttl >> 24) == 1 and parsed.header.rcode == 0  # extended rcode 16


def test_edns_answers_carry_an_opt_record(records):
    parsed = DNSRecord.parse(answer(ask("svc1.testns.svc.cluster.local", edns=1232), records, synced=True))
    assert [rr.rclass for rr in parsed.ar if rr.rtype == QTYPE.OPT] == [1232]


@pytest.fixture
def big_headless() -> Records:
    endpoints = [{"addresses": [f"10.1.{i // 250}.{i % 250 + 1}"]} for i in range(100)]
    return Records.from_objects([service("big", cluster_ip="None")], [endpoint_slice("big-1", "big", endpoints)])


def test_large_answers_are_truncated_over_udp_keeping_whole_records(big_headless):
    plain = answer(ask("big.testns.svc.cluster.local"), big_headless, synced=True)
    assert len(plain) <= 512
    parsed = DNSRecord.parse(plain)
    assert parsed.header.tc == 1 and 0 < len(parsed.rr) < 100
    with_edns = answer(ask("big.testns.svc.cluster.local", edns=1000), big_headless, synced=True)
    assert len(with_edns) <= 1000 and DNSRecord.parse(with_edns).header.tc == 1
    # 100 A records are about 1.7 kB: more than the 1232 bytes we advertise, whatever the client offers.
    large = answer(ask("big.testns.svc.cluster.local", edns=4096), big_headless, synced=True)
    assert len(large) <= 1232 and DNSRecord.parse(large).header.tc == 1


def test_large_answers_are_complete_over_tcp(big_headless):
    parsed = DNSRecord.parse(answer(ask("big.testns.svc.cluster.local"), big_headless, synced=True, udp=False))
    assert parsed.header.tc == 0 and len(parsed.rr) == 100


def test_zone_and_ttl_are_configurable():
    records = Records.from_objects([service("svc1")], zone="corp.example", ttl=30)
    parsed = DNSRecord.parse(answer(ask("svc1.testns.svc.corp.example"), records, synced=True))
    assert zone_lines(parsed.rr) == ["svc1.testns.svc.corp.example. 30 IN A 10.0.0.1"]
    assert resolve(ask("svc1.testns.svc.cluster.local"), records, synced=True) == Forward(512)
    nx = DNSRecord.parse(answer(ask("nope.corp.example"), records, synced=True))
    assert zone_lines(nx.auth) == [
        "corp.example. 30 IN SOA ns.dns.corp.example. hostmaster.corp.example. 1 7200 1800 86400 30"]


def rcode_and_values(records, name, qtype="A"):
    parsed = DNSRecord.parse(answer(ask(name, qtype), records, synced=True))
    return RCODE.get(parsed.header.rcode), [str(rr.rdata) for rr in parsed.rr]


def test_changes_are_answered_at_once(records):
    records.delete_service(service("svc1"))
    assert rcode_and_values(records, "svc1.testns.svc.cluster.local") == ("NXDOMAIN", [])
    assert rcode_and_values(records, "1.0.0.10.in-addr.arpa", "PTR")[0] == "REFUSED"  # no longer ours
    # The ExternalName pointing at it now answers with the CNAME alone.
    assert rcode_and_values(records, "ext-local.testns.svc.cluster.local") == (
        "NOERROR", ["svc1.testns.svc.cluster.local."])
    records.set_service(service("svc1", cluster_ip="10.0.0.7"))
    assert rcode_and_values(records, "ext-local.testns.svc.cluster.local") == (
        "NOERROR", ["svc1.testns.svc.cluster.local.", "10.0.0.7"])

    records.set_endpoint_slice(endpoint_slice("hdls1-abc", "hdls1", [{"addresses": ["172.0.0.5"]}]))
    assert rcode_and_values(records, "hdls1.testns.svc.cluster.local") == ("NOERROR", ["172.0.0.5"])
    assert rcode_and_values(records, "hdls1-0.hdls1.testns.svc.cluster.local")[0] == "NXDOMAIN"
    records.delete_endpoint_slice(endpoint_slice("hdls1-abc", "hdls1", []))
    # A headless service without endpoints still exists: NODATA, not NXDOMAIN.
    assert rcode_and_values(records, "hdls1.testns.svc.cluster.local") == ("NOERROR", [])

    records.set_pod(pod("web-1", "10.244.1.5", phase="Failed"))
    assert rcode_and_values(records, "10-244-1-5.testns.pod.cluster.local")[0] == "NXDOMAIN"


def test_a_slice_relabelled_to_another_service_moves_its_endpoints(records):
    records.set_service(service("other", cluster_ip="None"))
    records.set_endpoint_slice(endpoint_slice("hdls1-abc", "other", [{"addresses": ["172.0.0.8"]}]))
    assert rcode_and_values(records, "other.testns.svc.cluster.local") == ("NOERROR", ["172.0.0.8"])
    assert rcode_and_values(records, "hdls1.testns.svc.cluster.local") == ("NOERROR", [])


def test_a_shared_record_survives_until_its_last_source_goes():
    pods = [pod("a", "10.244.1.5", namespace="x"), pod("b", "10.244.1.5", namespace="x")]
    records = Records.from_objects(pods=pods)
    records.delete_pod(pods[0])
    assert rcode_and_values(records, "10-244-1-5.x.pod.cluster.local") == ("NOERROR", ["10.244.1.5"])
    records.delete_pod(pods[1])
    assert rcode_and_values(records, "10-244-1-5.x.pod.cluster.local")[0] == "NXDOMAIN"


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_get_a_response_a_forward_or_a_drop(data):
    result = resolve(data, RECORDS_FOR_FUZZ, synced=True)
    assert result is None or isinstance(result, Forward) or (isinstance(result, bytes) and result[:2] == data[:2])


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([c[0] for c in CASES]), st.sampled_from(["A", "SRV", "PTR", "AAAA", "TXT"]),
       st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4))
def test_mutated_real_queries_never_break_the_answer(name, qtype, mutations):
    query = bytearray(ask(name, qtype, edns=1232))
    for position, value in mutations:
        if position < len(query):
            query[position] = value
    result = resolve(bytes(query), RECORDS_FOR_FUZZ, synced=True)
    if isinstance(result, bytes):
        assert result[:2] == query[:2]
        assert struct.unpack_from("!H", result, 4)[0] in (0, 1)


RECORDS_FOR_FUZZ = Records.from_objects(SERVICES, SLICES, PODS)


def test_names_beyond_dns_limits_are_left_out_without_breaking_the_rest():
    records = Records.from_objects([
        service("x", cluster_ip=None, ports=(), type="ExternalName", externalName="a" * 70 + ".com"),
        service("y" * 70, cluster_ip="10.0.0.9"),
        service("ok", cluster_ip="10.0.0.10"),
    ])
    assert rcode_and_values(records, "x.testns.svc.cluster.local") == ("NOERROR", [])
    assert rcode_and_values(records, "9.0.0.10.in-addr.arpa", "PTR")[0] == "REFUSED"
    assert rcode_and_values(records, "ok.testns.svc.cluster.local") == ("NOERROR", ["10.0.0.10"])


def test_remembered_udp_replies_keep_each_querys_case_id_and_transport():
    endpoints = [{"addresses": [f"10.1.0.{i + 1}"]} for i in range(100)]
    records = Records.from_objects([service("big", cluster_ip="None")], [endpoint_slice("big-1", "big", endpoints)])
    lower = ask("_http._tcp.big.testns.svc.cluster.local", "SRV", id_=1)
    upper = ask("_HTTP._tcp.BIG.testns.svc.cluster.local", "SRV", id_=2)
    for _ in range(2):  # the second round is served from remembered replies
        parsed = DNSRecord.parse(answer(lower, records, synced=True))
        assert str(parsed.rr[0].rname) == "_http._tcp.big.testns.svc.cluster.local." and parsed.header.id == 1
        parsed = DNSRecord.parse(answer(upper, records, synced=True))
        assert str(parsed.rr[0].rname) == "_HTTP._tcp.BIG.testns.svc.cluster.local." and parsed.header.id == 2
        assert parsed.header.tc == 1
    assert len(records.replies) == 2
    # The same bytes over TCP are never given the truncated UDP reply.
    assert len(DNSRecord.parse(answer(lower, records, synced=True, udp=False)).rr) == 100
    # Nor before the records have synced.
    assert RCODE.get(DNSRecord.parse(answer(lower, records, synced=False)).header.rcode) == "SERVFAIL"


def test_addresses_rotate_between_queries(big_headless, records):
    query = ask("big.testns.svc.cluster.local", edns=4096)  # over TCP: all 100 fit
    seen = [DNSRecord.parse(answer(query, big_headless, synced=True, udp=False)) for _ in range(8)]
    firsts = {str(reply.rr[0].rdata) for reply in seen}
    assert len(firsts) == 8
    assert all(sorted(str(rr.rdata) for rr in reply.rr) == sorted(str(rr.rdata) for rr in seen[0].rr)
               for reply in seen)
    two = {tuple(str(rr.rdata) for rr in DNSRecord.parse(answer(ask("hdls1.testns.svc.cluster.local"), records,
                                                                 synced=True)).rr) for _ in range(4)}
    assert two == {("172.0.0.2", "172.0.0.3"), ("172.0.0.3", "172.0.0.2")}
