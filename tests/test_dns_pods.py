"""The cluster DNS reached as CoreDNS is, in a cluster `podnet up` starts: its pod in kube-system behind the
kube-dns Service, and the allow-DNS NetworkPolicies people copy from the Kubernetes documentation, applied
unchanged under a default-deny egress policy, are what decide whether a pod's lookups get through."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys

import pytest
from support.local_cluster import LocalCluster, eventually, pod_on

pytestmark = pytest.mark.slow

NAME = "kubernetes.default.svc.cluster.local"
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
KUBE_SYSTEM = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
# The allow-DNS rules as they are copied: to the DNS pods by namespace and label; to port 53 anywhere; to
# anything in kube-system.
COPIED_RULES = {
    "namespace-and-pod-selector": {"to": [{"namespaceSelector": KUBE_SYSTEM,
                                           "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                                   "ports": DNS_PORTS},
    "ports-only": {"ports": DNS_PORTS},
    "namespace-selector-only": {"to": [{"namespaceSelector": KUBE_SYSTEM}]},
}


def policy(name: str, egress: list[dict]) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "locked"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": egress}}


async def resolves(cluster: LocalCluster, tcp: bool = False) -> bool:
    """Whether a query for NAME, sent from the client pod's own stack to 10.96.0.10:53, is answered."""
    result = await cluster.rpc("node-2", "pod.dig", {"namespace": "locked", "pod": "client", "name": NAME,
                                                     "tcp": tcp, "timeout": 0.5, "tries": 1}, timeout=15)
    return bool(result["ok"]) and "status: NOERROR" in result["text"]


async def resolves_both(cluster: LocalCluster) -> bool:
    return await resolves(cluster) and await resolves(cluster, tcp=True)


async def resolves_neither(cluster: LocalCluster) -> bool:
    return not await resolves(cluster) and not await resolves(cluster, tcp=True)


def podnet(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PODNET_HOME=str(cluster.home), KUBECONFIG=str(cluster.home / "kubeconfig"))
    return subprocess.run([sys.executable, "-m", "podnet", *args], capture_output=True, text=True, env=env,
                          timeout=60)


async def test_copied_allow_dns_policies_let_lookups_through_a_default_deny(local_cluster):
    cluster = await local_cluster("127.0.95", nodes=2)

    # The DNS replica is a pod in kube-system with a pod IP from a node's podCIDR, behind the kube-dns Service.
    (dns_pod,) = await cluster.wait_running("kube-system", "k8s-app=kube-dns", 1)
    node = await cluster.client.get("nodes", dns_pod["spec"]["nodeName"])
    dns_ip = dns_pod["status"]["podIP"]
    assert ipaddress.ip_address(dns_ip) in ipaddress.ip_network(node["spec"]["podCIDR"])
    (container,) = dns_pod["spec"]["containers"]
    assert {(p.get("name"), p["containerPort"], p["protocol"]) for p in container["ports"]} >= {
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")}
    assert await cluster.ready_endpoints("kube-system", "kube-dns") == {dns_ip}
    slices = await cluster.client.list("endpointslices", "kube-system",
                                       label_selector="kubernetes.io/service-name=kube-dns")
    assert {(p["name"], p["protocol"], p["port"]) for s in slices["items"] for p in s["ports"]} == {
        ("dns", "UDP", 53), ("dns-tcp", "TCP", 53)}
    # The host-side convenience stays.
    assert cluster.dns(NAME) == ["10.96.0.1"]

    await cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "locked"}},
                         pod_on("client", "locked", "node-2"))
    await cluster.wait_running("locked", "role=client", 1)
    await eventually(lambda: resolves_both(cluster), 10, "lookups from the client before any policy")

    await cluster.create(policy("default-deny-egress", []))
    await eventually(lambda: resolves_neither(cluster), 10, "lookups denied by the default-deny egress policy")

    for name, rule in COPIED_RULES.items():
        await cluster.create(policy(f"allow-dns-{name}", [rule]))
        await eventually(lambda: resolves_both(cluster), 10, f"lookups allowed by {name}")
        if name == "namespace-and-pod-selector":
            trace = await asyncio.to_thread(podnet, cluster, "trace", "locked/client", "10.96.0.10:53/udp")
            assert trace.returncode == 0, trace.stdout + trace.stderr
            lines = trace.stdout.splitlines()
            dnat = next(line for line in lines if "service-dnat" in line)
            assert "10.96.0.10:53 (kube-system/kube-dns:dns)" in dnat and dnat.endswith(f"→ {dns_ip}:53")
            allowed = next(line for line in lines if "egress-policy" in line)
            assert allowed.endswith(f"allowed by locked/allow-dns-{name} egress rule 0")
            assert any(f"to pod kube-system/{dns_pod['metadata']['name']} ({dns_ip})" in line for line in lines)
            assert lines[-1].endswith("result          answered")
        await cluster.client.delete("networkpolicies", f"allow-dns-{name}", "locked")
        await eventually(lambda: resolves_neither(cluster), 10, f"lookups denied again without {name}")
