"""The DNS process fed by a real API server (with its controllers): registration of its kube-dns pod,
every record form over dig, and how fast changes become answers."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from dnslib import QTYPE, RCODE, DNSQuestion, DNSRecord
from support.dns import run_dig

BIG = 120


def query_once(port: int, name: str, qtype: str = "A") -> DNSRecord:
    query = DNSRecord(q=DNSQuestion(name, getattr(QTYPE, qtype)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(query.pack(), ("127.0.0.1", port))
        return DNSRecord.parse(sock.recv(65535))


def wait_for_rcode(port: int, name: str, rcode: str, timeout: float, *, answers: int = 0) -> float:
    """Seconds until `name` answers with `rcode` (and at least `answers` records); fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        reply = query_once(port, name)
        if RCODE.get(reply.header.rcode) == rcode and len(reply.rr) >= answers:
            return time.monotonic() - started
        time.sleep(0.005)
    pytest.fail(f"{name} did not become {rcode} within {timeout}s")


@pytest.fixture
async def cluster(api_server, dns_process):
    dns = dns_process("--kubeconfig", str(api_server.kubeconfig))
    client = api_server.client()
    try:
        wait_for_rcode(dns.port, "kubernetes.default.svc.cluster.local", "NOERROR", 10, answers=1)
        yield client, dns
    finally:
        await client.close()


async def test_it_registers_a_kube_dns_pod_that_relays_to_it(cluster):
    client, dns = cluster
    replica = f"podnet.io/dns-replica=127.0.0.1-{dns.port}"

    async def registered() -> dict | None:
        pods = (await client.list("pods", "kube-system", label_selector=replica))["items"]
        return pods[0] if len(pods) == 1 else None

    pod = await wait_for(registered, 10)
    assert pod["metadata"]["name"].startswith(f"coredns-127-0-0-1-{dns.port}-")
    assert pod["metadata"]["labels"] == {"k8s-app": "kube-dns", "podnet.io/dns-replica": f"127.0.0.1-{dns.port}"}
    assert pod["metadata"]["annotations"]["podnet.io/relay"] == (
        f"53=127.0.0.1:{dns.port},9153=127.0.0.1:{dns.metrics_port}")
    (container,) = pod["spec"]["containers"]
    assert [(p["name"], p["containerPort"], p["protocol"]) for p in container["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 9153, "scheme": "HTTP"}
    # The kube-dns Service selects such pods on 53, as kubeadm's does.
    kube_dns = await client.get("Service", "kube-dns", "kube-system")
    assert kube_dns["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert {(p["name"], p["protocol"], p["targetPort"]) for p in kube_dns["spec"]["ports"]} == {
        ("dns", "UDP", 53), ("dns-tcp", "TCP", 53)}
    # The DNS server answers for its own Service, through the records it was fed.
    result = run_dig(dns.port, "kube-dns.kube-system.svc.cluster.local")
    assert result.values() == [kube_dns["spec"]["clusterIP"]]

    # A pod deleted under it is replaced, as a ReplicaSet replaces one.
    await client.delete("pods", pod["metadata"]["name"], "kube-system")

    async def replaced() -> dict | None:
        found = await registered()
        return found if found is not None and found["metadata"]["uid"] != pod["metadata"]["uid"] else None

    await wait_for(replaced, 10)
    # A graceful stop deletes it, as a replica scaled away leaves the Service's endpoints.
    dns.process.terminate()
    assert dns.process.wait(10) == 0
    assert (await client.list("pods", "kube-system", label_selector=replica))["items"] == []


async def wait_for(check, timeout: float):
    deadline = time.monotonic() + timeout
    while (value := await check()) is None:
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.05)
    return value


def _endpoint_slice(name, service, endpoints, port_name, port):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": endpoints}


async def test_every_record_form_from_api_objects(cluster):
    client, dns = cluster
    web_ip = "10.96.100.20"
    await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                         "spec": {"clusterIP": web_ip, "ports": [{"name": "http", "port": 80}]}})
    for name in ("db", "big"):
        await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})
    await client.create(_endpoint_slice("db-1", "db", [
        {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": True}},
        {"addresses": ["10.244.2.6"], "hostname": "db-1", "conditions": {"ready": True}},
        {"addresses": ["10.244.2.7"], "hostname": "db-2", "conditions": {"ready": False}},
    ], "pg", 5432))
    await client.create(_endpoint_slice("big-1", "big", [
        {"addresses": [f"10.245.0.{i + 1}"]} for i in range(BIG)], "pg", 5432))
    await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "search", "namespace": "default"},
                         "spec": {"type": "ExternalName", "externalName": "search.example.org"}})
    pod = await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "default"},
                               "spec": {"containers": [{"name": "c", "image": "agnhost"}]}})
    pod["status"] = {**(pod.get("status") or {}), "phase": "Running", "podIP": "10.244.1.9",
                     "podIPs": [{"ip": "10.244.1.9"}]}
    await client.replace_status(pod)
    wait_for_rcode(dns.port, "10-244-1-9.default.pod.cluster.local", "NOERROR", 2, answers=1)

    reverse_web = ".".join(reversed(web_ip.split("."))) + ".in-addr.arpa"
    forms = [
        ("web.default.svc.cluster.local", "A", "NOERROR", [web_ip]),
        ("_http._tcp.web.default.svc.cluster.local", "SRV", "NOERROR", ["0 100 80 web.default.svc.cluster.local."]),
        (reverse_web, "PTR", "NOERROR", ["web.default.svc.cluster.local."]),
        ("db.default.svc.cluster.local", "A", "NOERROR", ["10.244.1.5", "10.244.2.6"]),
        ("db-0.db.default.svc.cluster.local", "A", "NOERROR", ["10.244.1.5"]),
        ("db-2.db.default.svc.cluster.local", "A", "NXDOMAIN", []),
        ("_pg._tcp.db.default.svc.cluster.local", "SRV", "NOERROR",
         ["0 50 5432 db-0.db.default.svc.cluster.local.", "0 50 5432 db-1.db.default.svc.cluster.local."]),
        ("6.2.244.10.in-addr.arpa", "PTR", "NOERROR", ["db-1.db.default.svc.cluster.local."]),
        ("search.default.svc.cluster.local", "A", "NOERROR", ["search.example.org."]),
        ("10-244-1-9.default.pod.cluster.local", "A", "NOERROR", ["10.244.1.9"]),
        ("dns-version.cluster.local", "TXT", "NOERROR", ['"1.1.0"']),
        ("nothing.default.svc.cluster.local", "A", "NXDOMAIN", []),
        ("web.default.svc.cluster.local", "AAAA", "NOERROR", []),
    ]
    for options in ([], ["+tcp"]):
        for name, qtype, status, values in forms:
            result = run_dig(dns.port, name, qtype, *options)
            assert (result.status, sorted(result.values())) == (status, sorted(values)), result.output
    truncated = run_dig(dns.port, "big.default.svc.cluster.local", "A", "+noedns", "+ignore")
    assert "tc" in truncated.flags and len(truncated.answer) < BIG
    assert len(run_dig(dns.port, "big.default.svc.cluster.local", "A", "+tcp").answer) == BIG


async def test_a_new_service_answers_within_a_second_and_a_deleted_one_is_gone_within_a_second(cluster):
    client, dns = cluster
    name = "fresh.default.svc.cluster.local"
    assert RCODE.get(query_once(dns.port, name).header.rcode) == "NXDOMAIN"
    await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fresh", "namespace": "default"},
                         "spec": {"clusterIP": "10.96.100.30", "ports": [{"port": 80}]}})
    assert wait_for_rcode(dns.port, name, "NOERROR", 1.0, answers=1) < 1.0
    await client.delete("Service", "fresh", "default")
    assert wait_for_rcode(dns.port, name, "NXDOMAIN", 1.0) < 1.0


def test_before_the_caches_sync_it_answers_servfail(dns_process):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]
    dns = dns_process("--server", f"http://127.0.0.1:{dead}")
    result = run_dig(dns.port, "kubernetes.default.svc.cluster.local")
    assert result.status == "SERVFAIL"


async def test_answers_survive_an_api_server_restart_and_changes_resume(api_server, dns_process):
    dns = dns_process("--kubeconfig", str(api_server.kubeconfig))
    wait_for_rcode(dns.port, "kubernetes.default.svc.cluster.local", "NOERROR", 10, answers=1)
    api_server.kill()
    # The last state keeps being served: no SERVFAIL, no NXDOMAIN.
    for _ in range(5):
        reply = query_once(dns.port, "kubernetes.default.svc.cluster.local")
        assert RCODE.get(reply.header.rcode) == "NOERROR" and reply.rr
        time.sleep(0.1)
    api_server.start()
    client = api_server.client()
    try:
        await client.create({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": "after", "namespace": "default"},
                             "spec": {"clusterIP": "10.96.100.40", "ports": [{"port": 80}]}})
    finally:
        await client.close()
    # The informers reconnect with backoff (at most 5 s) and resume from their resourceVersion.
    wait_for_rcode(dns.port, "after.default.svc.cluster.local", "NOERROR", 10, answers=1)
