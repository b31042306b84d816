"""The service table, pure: both proxy modes, rejects, affinity, nodePorts, the data round trip, and the
table as the forwarding pipeline's DNAT hook."""

import collections
import random

import msgpack
import pytest
from podnet.overlay.pipeline.forward import Pipeline
from podnet.overlay.pipeline.model import Deliver, NodeIdentity, Peer, PodPort, Tunnel, pod_mac, vtep_mac
from podnet.overlay.pipeline.nat import NatDecision, ServiceTable, TableError
from podnet.overlay.wire import icmp, ipv4, tcp
from podnet.overlay.wire.addresses import ip_to_int

WEB = {
    "service": "default/web",
    "port_name": "http",
    "protocol": "TCP",
    "cluster_ip": "10.96.0.20",
    "port": 80,
    "endpoints": [
        ["10.244.1.2", 8080, "node-1"],
        ["10.244.2.2", 8080, "node-2"],
        ["10.244.2.3", 8080, "node-2"],
    ],
}
EMPTY = {
    "service": "default/empty",
    "port_name": "",
    "protocol": "TCP",
    "cluster_ip": "10.96.0.30",
    "port": 80,
    "endpoints": [],
}
DNS_UDP = {
    "service": "kube-system/kube-dns",
    "port_name": "dns",
    "protocol": "UDP",
    "cluster_ip": "10.96.0.10",
    "port": 53,
    "endpoints": [["10.244.1.9", 53, "node-1"]],
}


def table(mode="iptables", *entries, node="node-1"):
    return ServiceTable.from_data(
        {"mode": mode, "node": node, "services": list(entries or (WEB, EMPTY, DNS_UDP))}
    )


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
@pytest.mark.parametrize(
    ("protocol", "dst", "port", "expect"),
    [
        ("TCP", "10.96.0.20", 80, "dnat"),
        ("UDP", "10.96.0.10", 53, "dnat"),
        ("TCP", "10.96.0.10", 53, "reject"),  # declared for UDP only
        ("TCP", "10.96.0.20", 81, "reject"),  # a ClusterIP answers only on its declared ports
        ("TCP", "10.96.0.30", 80, "reject"),  # no ready endpoint
        ("TCP", "10.96.0.99", 80, None),  # not a service address
        ("TCP", "10.244.2.2", 8080, None),  # a pod: no DNAT
    ],
)
def test_lookup_outcomes(mode, protocol, dst, port, expect):
    decision = table(mode).lookup(protocol, "10.244.1.5", dst, port, 0.3, 0.0)
    if expect is None:
        assert decision is None
    elif expect == "reject":
        assert decision.reject and decision.rule.endswith("reject")
    else:
        assert not decision.reject and decision.ip.startswith("10.244.") and decision.rule


def test_iptables_probabilities_pick_every_endpoint_uniformly():
    t = table("iptables")
    counts = collections.Counter(
        t.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, i / 3000, 0.0).ip for i in range(3000)
    )
    assert set(counts) == {"10.244.1.2", "10.244.2.2", "10.244.2.3"}
    assert all(abs(c - 1000) <= 2 for c in counts.values()), counts
    first = t.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.1, 0.0)
    assert "endpoint rule 1/3 (probability 0.33333)" in first.rule and first.service == "default/web:http"
    last = t.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.99, 0.0)
    assert "endpoint rule 3/3" in last.rule and last.ip == "10.244.2.3"


def test_ipvs_round_robin_cycles_in_order():
    t = table("ipvs")
    picks = [t.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.0, 0.0) for _ in range(6)]
    assert [p.ip for p in picks] == ["10.244.1.2", "10.244.2.2", "10.244.2.3"] * 2
    assert picks[0].rule == "ipvs cluster-ip: rr 1/3 → 10.244.1.2:8080"


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_client_ip_affinity_pins_a_client_until_its_timeout(mode):
    t = table(mode, dict(WEB, affinity_seconds=10))
    rng = random.Random(4)
    first = t.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, rng.random(), 0.0)
    for now in (1.0, 5.0, 14.0):  # each use renews the record
        again = t.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, rng.random(), now)
        assert again.ip == first.ip and "affinity" in again.rule
    others = {t.lookup("TCP", f"10.244.1.{i}", "10.96.0.20", 80, rng.random(), 0.0).ip for i in range(10, 60)}
    assert len(others) == 3  # other clients are spread
    after = [t.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, r, 30.0) for r in (0.0, 0.5, 0.9)]
    assert "affinity" not in after[0].rule  # lapsed at 24.0
    assert t.expire_affinity(1000.0) > 0 and not t.affinity


def test_affinity_survives_a_new_table_unless_its_endpoint_left():
    old = table("iptables", dict(WEB, affinity_seconds=100))
    pinned = old.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.99, 0.0)
    new = ServiceTable.from_data(old.to_data(), previous=old)
    assert new.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.0, 1.0).ip == pinned.ip
    without = dict(WEB, affinity_seconds=100, endpoints=[e for e in WEB["endpoints"] if e[0] != pinned.ip])
    moved = ServiceTable.from_data({"mode": "iptables", "services": [without]}, previous=new)
    assert not moved.affinity
    assert moved.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.0, 2.0).ip != pinned.ip


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_node_ports_use_the_external_endpoints(mode):
    local = dict(
        WEB,
        node_port=30080,
        external_local=True,
        health_check_node_port=31999,
        external_endpoints=[["10.244.1.2", 8080, "node-1"]],
    )
    udp = dict(DNS_UDP, node_port=30053, external_endpoints=[])
    t = table(mode, local, udp)
    assert t.node_ports() == [(30053, "UDP"), (30080, "TCP")]
    assert t.lookup_node_port("TCP", 30080, "127.0.0.1", 0.7, 0.0).ip == "10.244.1.2"
    assert t.lookup_node_port("UDP", 30053, "127.0.0.1", 0.7, 0.0).reject
    assert t.lookup_node_port("TCP", 30053, "127.0.0.1", 0.7, 0.0) is None
    assert t.preserves_source(30080, "TCP") and not t.preserves_source(30053, "UDP")
    assert not t.preserves_source(30080, "UDP")
    other_node = table(mode, dict(local, external_endpoints=[]), node="node-2")
    assert other_node.lookup_node_port("TCP", 30080, "127.0.0.1", 0.7, 0.0).reject


def test_external_ips_answer_from_inside_with_the_external_endpoints():
    lb = dict(WEB, external_ips=["127.0.1.5"], external_endpoints=[["10.244.2.2", 8080, "node-2"]])
    t = table("ipvs", lb)
    assert t.lookup("TCP", "10.244.1.5", "127.0.1.5", 80, 0.0, 0.0).ip == "10.244.2.2"
    assert t.lookup("TCP", "10.244.1.5", "127.0.1.5", 81, 0.0, 0.0) is None


def test_data_round_trips_through_msgpack_and_counts_rules():
    entries = [
        dict(WEB, node_port=30080, external_endpoints=WEB["endpoints"], affinity_seconds=5),
        EMPTY,
        DNS_UDP,
    ]
    t = table("ipvs", *entries)
    again = ServiceTable.from_data(msgpack.unpackb(msgpack.packb(t.to_data())))
    assert again.to_data() == t.to_data() and again.mode == "ipvs" and len(again) == 4


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"mode": "userspace", "services": []},
        {"services": {"a": 1}},
        {"services": [{"service": "x"}]},
        {"services": [dict(WEB, protocol="ICMP")]},
        {"services": [dict(WEB, port=70000)]},
        {"services": [dict(WEB, endpoints=[["10.0.0.1"]])]},
        {"services": [dict(WEB, endpoints=5)]},
    ],
)
def test_bad_data_is_a_table_error(data):
    with pytest.raises(TableError):
        ServiceTable.from_data(data)


# ---- as the pipeline's hook ---------------------------------------------------------------------

N1 = NodeIdentity("node-1", "127.0.0.11", "10.244.1.0/24")
CLIENT = PodPort("default", "client", "10.244.1.5", pod_mac("10.244.1.5"))


def syn(src, dst, sport, dport):
    segment = tcp.TcpSegment(sport, dport, 1, 0, tcp.TcpFlags.SYN, 65535)
    return ipv4.encode(ipv4.IPv4Packet(src, dst, ipv4.IPProtocol.TCP, tcp.encode(segment, src, dst)))


def test_pipeline_dnats_to_the_chosen_endpoint_and_rejects_without_endpoints():
    pipeline = Pipeline(N1, rand=lambda: 0.99)
    pipeline.set_peer(Peer("node-2", "127.0.0.12", vtep_mac("127.0.0.12")), "10.244.2.0/24")
    pipeline.add_pod(CLIENT)
    pipeline.services = table("iptables")
    [out] = pipeline.from_pod(CLIENT, syn(CLIENT.ip, "10.96.0.20", 40000, 80), 0.0)
    assert isinstance(out, Tunnel) and out.node_address == "127.0.0.12"
    inner = ipv4.decode(out.datagram[22:])
    assert (inner.dst, tcp.decode(inner.payload, inner.src, inner.dst).dst_port) == ("10.244.2.3", 8080)
    [refused] = pipeline.from_pod(CLIENT, syn(CLIENT.ip, "10.96.0.30", 40001, 80), 0.0)
    assert isinstance(refused, Deliver) and refused.pod_ip == ip_to_int(CLIENT.ip)
    error = icmp.decode(ipv4.decode(refused.packet).payload)
    assert isinstance(error, icmp.IcmpUnreachable) and error.code == icmp.UnreachableCode.PORT


def test_decision_is_what_the_pipeline_reads():
    decision = NatDecision("10.244.1.2", 8080, "default/web:http", "rule")
    assert (decision.ip, decision.port, decision.reject) == ("10.244.1.2", 8080, False)


def test_unused_addresses_of_the_service_cidr_are_rejected_not_routed():
    t = ServiceTable.from_data({"mode": "ipvs", "service_cidr": "10.96.0.0/12", "services": [WEB]})
    assert t.lookup("TCP", "10.244.1.5", "10.100.1.1", 80, 0.0, 0.0).reject
    assert t.lookup("TCP", "10.244.1.5", "10.112.0.1", 80, 0.0, 0.0) is None
    assert ServiceTable.from_data(t.to_data()).to_data() == t.to_data()
    with pytest.raises(TableError):
        ServiceTable.from_data({"service_cidr": "10.96.0.0/33", "services": []})


def test_a_new_table_takes_over_unchanged_entries_with_their_round_robin_position():
    old = table("ipvs")
    assert old.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.0, 0.0).ip == "10.244.1.2"
    data = old.to_data()
    data["services"][2] = dict(DNS_UDP, endpoints=[["10.244.2.9", 53, "node-2"]])
    new = ServiceTable.from_data(data, previous=old)
    assert new.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.0, 0.0).ip == "10.244.2.2"  # carried on
    assert new.lookup("UDP", "10.244.1.5", "10.96.0.10", 53, 0.0, 0.0).ip == "10.244.2.9"  # the change
    switched = ServiceTable.from_data(dict(data, mode="iptables"), previous=new)
    assert switched.lookup("TCP", "10.244.1.5", "10.96.0.20", 80, 0.99, 0.0).rule.startswith(
        "cluster-ip: endpoint"
    )


def test_udp_serving_names_each_udp_service_address_with_its_endpoints():
    lb_dns = {**DNS_UDP, "external_ips": ["127.0.1.5"], "node_port": 30053,
              "external_endpoints": [["10.244.2.9", 53, "node-2"]]}
    empty_udp = {**EMPTY, "protocol": "UDP"}
    serving = table("iptables", WEB, empty_udp, lb_dns).udp_serving()
    both = frozenset({ip_to_int("10.244.1.9"), ip_to_int("10.244.2.9")})
    assert serving == {(ip_to_int("10.96.0.10"), 53): both, (ip_to_int("127.0.1.5"), 53): both}
    nodeport_empty = {**empty_udp, "node_port": 30054}
    node_ports = table("iptables", WEB, nodeport_empty, lb_dns).udp_node_port_serving()
    assert node_ports == {30053: frozenset({"10.244.1.9", "10.244.2.9"})}
