"""Pods resolve cluster names: the stub resolver's search-list logic against the cluster DNS's own answer
function, then real processes (API server, DNS server on the host network, two node agents, kube-proxy)
with lookups sent from inside virtual pods through 10.96.0.10, DNAT, NetworkPolicy and the host bridge."""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from dnslib import DNSRecord
from podnet.dns.answer import answer
from podnet.dns.records import Records
from podnet.nodeagent.pods.virtual.resolver import (
    Lookup,
    Query,
    ResolvConf,
    Resolved,
    UnresolvableError,
    candidates,
    frame_tcp,
    tcp_message,
)
from support.dns import DnsProcess, start_dns
from support.kubeproxy import KubeProxyProcess
from support.nodeagent import Cluster, pod_manifest, wait_running

# ---- the resolver alone --------------------------------------------------------------------------------

POD_CONF = ResolvConf.for_pod("x")

CANDIDATE_CASES = [
    # (name, candidates in the order they are asked)
    ("web", ["web.x.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local.", "web."]),
    ("web.y", ["web.y.x.svc.cluster.local.", "web.y.svc.cluster.local.", "web.y.cluster.local.", "web.y."]),
    # Four dots are still fewer than ndots:5: the famous extra queries of a Service FQDN without its dot.
    ("web.y.svc.cluster.local", ["web.y.svc.cluster.local.x.svc.cluster.local.",
                                 "web.y.svc.cluster.local.svc.cluster.local.",
                                 "web.y.svc.cluster.local.cluster.local.", "web.y.svc.cluster.local."]),
    ("web.y.svc.cluster.local.", ["web.y.svc.cluster.local."]),
    ("a.b.c.d.e.f", ["a.b.c.d.e.f.", "a.b.c.d.e.f.x.svc.cluster.local.", "a.b.c.d.e.f.svc.cluster.local.",
                     "a.b.c.d.e.f.cluster.local."]),
]


@pytest.mark.parametrize(("name", "expected"), CANDIDATE_CASES)
def test_search_list_order(name, expected):
    assert list(candidates(name, POD_CONF)) == expected


def test_ndots_and_search_come_from_the_conf():
    conf = ResolvConf(search=("corp.example",), ndots=1)
    assert candidates("web", conf) == ("web.corp.example.", "web.")
    assert candidates("web.y", conf) == ("web.y.", "web.y.corp.example.")
    assert ResolvConf.for_pod("x", zone="k8s.test").search == ("x.svc.k8s.test", "svc.k8s.test", "k8s.test")


@pytest.mark.parametrize("name", ["", ".", "a..b", "x" * 64, ".".join(["abcdefgh"] * 30)])
def test_names_no_query_can_carry(name):
    with pytest.raises(UnresolvableError, match="could not resolve host"):
        candidates(name, POD_CONF)


def service(name, namespace, cluster_ip, **spec):
    spec = {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}
    if cluster_ip not in (None, "None"):
        spec["clusterIPs"] = [cluster_ip]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def endpoints(service_name, namespace, addresses):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service_name}-1", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]}


RECORDS = Records.from_objects(
    [
        service("web", "x", "10.96.5.1"),
        service("web", "y", "10.96.5.2"),
        service("alias", "x", None, type="ExternalName", externalName="web.y.svc.cluster.local"),
        service("outside", "x", None, type="ExternalName", externalName="db.example.test"),
        service("many", "x", "None"),
    ],
    [endpoints("many", "x", [f"10.244.9.{i}" for i in range(1, 60)])],
    [],
)


def drive(lookup: Lookup, server: Callable[[Query], bytes | None]) -> tuple[Resolved | UnresolvableError, list[Query]]:
    """Runs a lookup to its end; `server` answers a query (None: no answer within the timeout)."""
    sent = []
    for _ in range(50):
        step = lookup.next_step()
        if not isinstance(step, Query):
            return step, sent
        sent.append(step)
        reply = server(step)
        if reply is None:
            lookup.failed("timed out")
        else:
            lookup.receive(reply)
    raise AssertionError("the lookup never ended")


def cluster_dns(synced: bool = True) -> Callable[[Query], bytes]:
    """The cluster DNS server's own answer function over RECORDS, as a pod's nameserver."""
    return lambda query: answer(query.payload, RECORDS, synced=synced, udp=not query.tcp)


RESOLVE_CASES = [
    # (name, address, canonical name, names asked)
    ("web", "10.96.5.1", "web.x.svc.cluster.local.", ["web.x.svc.cluster.local."]),
    ("web.y", "10.96.5.2", "web.y.svc.cluster.local.", ["web.y.x.svc.cluster.local.", "web.y.svc.cluster.local."]),
    ("web.y.svc.cluster.local.", "10.96.5.2", "web.y.svc.cluster.local.", ["web.y.svc.cluster.local."]),
    ("alias", "10.96.5.2", "web.y.svc.cluster.local.", ["alias.x.svc.cluster.local."]),
]


@pytest.mark.parametrize(("name", "address", "canonical", "asked"), RESOLVE_CASES)
def test_resolves_through_the_search_list(name, address, canonical, asked):
    result, sent = drive(Lookup(name, POD_CONF, random.Random(1)), cluster_dns())
    assert isinstance(result, Resolved)
    assert (result.address, result.canonical) == (address, canonical)
    assert [q.name for q in sent] == asked
    assert len({q.query_id for q in sent}) == len(sent)


def test_a_missing_name_lists_every_candidate():
    result, sent = drive(Lookup("nope", POD_CONF), cluster_dns())
    assert str(result) == (
        "could not resolve host nope: NXDOMAIN for nope.x.svc.cluster.local., NXDOMAIN for "
        "nope.svc.cluster.local., NXDOMAIN for nope.cluster.local., REFUSED for nope."
    )
    assert len(sent) == 4


def test_a_cname_out_of_the_zone_is_followed():
    result, sent = drive(Lookup("outside", POD_CONF), cluster_dns())
    assert [q.name for q in sent] == ["outside.x.svc.cluster.local.", "db.example.test."]
    assert str(result) == "could not resolve host outside: REFUSED for db.example.test."


def test_servfail_is_retried_then_ends_the_lookup():
    result, sent = drive(Lookup("web", POD_CONF), cluster_dns(synced=False))
    assert [q.name for q in sent] == ["web.x.svc.cluster.local."] * POD_CONF.attempts
    assert str(result) == "could not resolve host web: SERVFAIL for web.x.svc.cluster.local. after 2 tries"


def test_timeouts_are_retried_then_end_the_lookup():
    result, sent = drive(Lookup("web", POD_CONF), lambda query: None)
    assert len(sent) == 2
    assert str(result) == ("could not resolve host web: no answer from 10.96.0.10:53 for "
                           "web.x.svc.cluster.local. (timed out) after 2 tries")


def test_a_truncated_answer_is_asked_again_over_tcp():
    result, sent = drive(Lookup("many", POD_CONF), cluster_dns())
    assert [q.tcp for q in sent] == [False, True]
    assert isinstance(result, Resolved) and len(result.addresses) == 59


def test_answers_that_do_not_match_the_query_are_not_believed():
    def wrong_id(query: Query) -> bytes:
        reply = DNSRecord.parse(answer(query.payload, RECORDS, synced=True))
        reply.header.id ^= 1
        return reply.pack()

    result, sent = drive(Lookup("web", POD_CONF), wrong_id)
    assert len(sent) == 2 and "does not match the query" in str(result)
    result, _ = drive(Lookup("web", POD_CONF), lambda query: b"\x12")
    assert "malformed answer" in str(result)


def test_tcp_framing():
    message = bytes(range(40))
    framed = frame_tcp(message)
    assert framed[:2] == b"\x00\x28"
    assert tcp_message(framed[:30]) is None
    assert tcp_message(framed + b"next") == message


# ---- from inside pods, with real processes -------------------------------------------------------------


@dataclass
class DnsCluster:
    cluster: Cluster
    dns: DnsProcess
    dns_address: str


def _dns_address() -> str:
    """A loopback address of its own for the DNS server, so it can listen on port 53 as CoreDNS does
    (egress policies name port 53, after DNAT) without meeting another server."""
    return f"127.0.{random.randrange(100, 200)}.{random.randrange(2, 250)}"


@pytest.fixture(scope="module")
def dns_cluster(two_node_cluster: Cluster, tmp_path_factory) -> Iterator[DnsCluster]:
    cluster = two_node_cluster
    dns_address = _dns_address()
    dns = start_dns(["--address", dns_address, "--port", "53", "--kubeconfig",
                     str(cluster.api.kubeconfig)], tmp_path_factory.mktemp("dns") / "dns.log")
    proxies: list[KubeProxyProcess] = []
    try:
        async def create(client) -> None:
            for namespace in ("other-ns", "locked"):
                await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            await client.create(pod_manifest("c", "node-2", namespace="other-ns"))
            await client.create(pod_manifest("d", "node-1", namespace="locked"))
            for namespace, target in (("default", "b"), ("other-ns", "c")):
                await client.create({
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
                    "spec": {"selector": {"app": target}, "ports": [
                        {"name": "http", "port": 80, "targetPort": 80},
                        {"name": "udp", "port": 81, "targetPort": 81, "protocol": "UDP"}]},
                })
            await wait_running(client, "other-ns", "c")
            await wait_running(client, "locked", "d")

        cluster.api_call(create)
        for agent in cluster.agents.values():
            proxy = KubeProxyProcess(agent, cluster.api.kubeconfig)
            proxies.append(proxy)
            proxy.start()
        yield DnsCluster(cluster, dns, dns_address)
    finally:
        for proxy in proxies:
            proxy.kill()
        dns.kill()


def exec_until(cluster: Cluster, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """`podnet ARGS`, repeated until it succeeds (kube-proxy and endpoints settle) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = cluster.cli(*args, timeout=30)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_service_names_resolve_and_connect_from_a_pod(dns_cluster):
    cluster = dns_cluster.cluster
    for url, hostname in [
        ("http://web/hostname", "b"),
        ("http://web.other-ns/hostname", "c"),
        ("http://web.other-ns.svc.cluster.local/hostname", "c"),
        ("http://web.default.svc.cluster.local./hostname", "b"),
    ]:
        result = exec_until(cluster, "exec", "a", "--", "http", url)
        assert (result.returncode, result.stdout.strip()) == (0, hostname), (url, result.stderr)
    connect = exec_until(cluster, "exec", "a", "--", "connect", "web.other-ns:80")
    assert connect.returncode == 0, connect.stderr
    ip = cluster.api_call(lambda client: client.get("services", "web", "other-ns"))["spec"]["clusterIP"]
    assert f"connected to {ip}:80" in connect.stdout
    udp = exec_until(cluster, "exec", "a", "--", "connect", "web:81", "--udp")
    assert udp.returncode == 0 and udp.stdout.strip().endswith(": b"), udp.stderr


def test_a_missing_name_fails_with_one_line(dns_cluster):
    result = dns_cluster.cluster.cli("exec", "a", "--", "http", "http://nope/hostname", timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: http://nope/hostname: could not resolve host nope: NXDOMAIN for nope.default.svc.cluster.local., "
        "NXDOMAIN for nope.svc.cluster.local., NXDOMAIN for nope.cluster.local., REFUSED for nope."
    )


def test_dig_from_a_pod(dns_cluster):
    cluster = dns_cluster.cluster
    ip = cluster.api_call(lambda client: client.get("services", "web", "other-ns"))["spec"]["clusterIP"]
    result = exec_until(cluster, "dig", "web.other-ns.svc.cluster.local", "--from", "a")
    assert result.returncode == 0, result.stderr
    assert "status: NOERROR" in result.stdout
    assert re.search(rf"^web\.other-ns\.svc\.cluster\.local\.\s+\d+\s+IN\s+A\s+{re.escape(ip)}$", result.stdout, re.M)
    assert ";; SERVER: 10.96.0.10#53(10.96.0.10) (UDP)" in result.stdout
    assert ";; FROM: pod default/a" in result.stdout
    searched = cluster.cli("dig", "web", "--from", "c", "-n", "other-ns", "--search", "--tcp")
    assert searched.returncode == 0, searched.stderr
    assert "web.other-ns.svc.cluster.local." in searched.stdout and "(TCP)" in searched.stdout
    # `--server` is asked from inside the pod too: 127.0.0.1 there is the pod's own loopback, where
    # nothing serves DNS.
    own = cluster.cli("dig", "web.default.svc.cluster.local", "--from", "b", "--server", "127.0.0.1")
    assert own.returncode == 9
    assert own.stderr == (";; from pod default/b: no answer from 127.0.0.1:53 for web.default.svc.cluster.local. "
                          "(connection refused (port unreachable))\n")
    missing = cluster.cli("dig", "nope.default.svc.cluster.local", "SRV", "--from", "a")
    assert missing.returncode == 0 and "status: NXDOMAIN" in missing.stdout


def _policy(name: str, egress: list[dict]) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "locked"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": egress}}


def test_dns_needs_an_egress_allow_like_any_egress(dns_cluster):
    cluster = dns_cluster.cluster
    dig = ("dig", "web.default.svc.cluster.local", "--from", "d", "-n", "locked", "--timeout", "0.5")
    assert exec_until(cluster, *dig).returncode == 0
    cluster.api_call(lambda client: client.create(_policy("default-deny-egress", [])))
    deadline = time.monotonic() + 10
    while (denied := cluster.cli(*dig, timeout=30)).returncode == 0:
        assert time.monotonic() < deadline, "the default-deny policy never took effect"
    assert denied.returncode == 9
    assert denied.stderr.startswith(";; from pod locked/d: no answer from 10.96.0.10:53 for web.default.svc"), denied.stderr
    http = cluster.cli("exec", "d", "-n", "locked", "--", "http", "http://web.default/hostname", "--timeout", "2")
    assert http.returncode == 1
    assert http.stderr == ("error: http://web.default/hostname: could not resolve host web.default: no answer from "
                           "10.96.0.10:53 for web.default.locked.svc.cluster.local. (timed out waiting for a reply) "
                           "after 2 tries\n")
    cluster.api_call(lambda client: client.create(_policy("allow-dns", [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}])))
    allowed = exec_until(cluster, *dig)
    assert allowed.returncode == 0 and "status: NOERROR" in allowed.stdout
    assert exec_until(cluster, *dig[:-2], "--tcp").returncode == 0  # TCP 53 too
    # The name resolves now; the Service itself is still denied by the policy.
    http = cluster.cli("exec", "d", "-n", "locked", "--", "http", "http://web.default/hostname", "--timeout", "1")
    assert http.returncode == 1 and "could not resolve" not in http.stderr, http.stderr
