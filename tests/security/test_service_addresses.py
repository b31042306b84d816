"""No tenant can steal another pod's traffic through a Service address (issue 23, item 2; the CVE-2020-8554
class).

kube-proxy sends every pod's new connections to a Service's externalIPs and load-balancer ingress addresses to
that Service's endpoints, and EndpointSlices follow pods' reported IPs. Against a real cluster (API server,
node agents, kube-proxy), a tenant holding ClusterRole edit in team-a — bound as `podnet up --demo` binds
team-a, or by the token-file group `edit:team-a` — tries each way to claim the victim's pod IP or the cluster
DNS address: externalIPs (DenyServiceExternalIPs' 403), services/status, pods/status and a hand-made
EndpointSlice (RBAC's 403), loadBalancerIP (422). An administrator is held to the same addresses. And the
victim's traffic is unchanged: a pod connecting to the victim's IP still reaches the victim.

With `--allowed-external-ip-cidrs`, new externalIPs inside the ranges are admitted and others are not, and no
range lets a Service shadow the pod network, the Service network or the API server.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid

import pytest
from podnet.apiserver import serviceaddresses
from support.local_cluster import eventually, pod_on

from podnet import kubeconfig, pki
from podnet.client import ApiClient, ApiError
from podnet.cluster import credentials

PREFIX = "127.0.161"
TENANT = "team-a"
DENIED = "Use of external IPs is denied by admission control"
ELSEWHERE = "203.0.113.7"  # an address of no one in the cluster


def thief_service(**spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "thief", "namespace": TENANT},
            "spec": {"selector": {"role": "thief"}, "ports": [{"port": 8080, "protocol": "TCP"}], **spec}}


async def refused(call, code: int) -> str:
    with pytest.raises(ApiError) as raised:
        await call
    assert raised.value.code == code, raised.value.status
    return raised.value.status["message"]


def _group_client(cluster, user: str, group: str) -> ApiClient:
    """A client whose certificate the cluster CA signed for `user` in `group`."""
    directory = credentials.pki_dir(cluster.home)
    ca = pki.KeyPair((directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes())
    pair = pki.make_client(ca, user, [group], datetime.datetime.now(datetime.UTC))
    path = cluster.home / f"{user}.kubeconfig"
    path.write_text(kubeconfig.render(cluster.topo.api_url, ca.cert_pem, user, cert_pem=pair.cert_pem, key_pem=pair.key_pem))
    return ApiClient.from_kubeconfig(path)


async def hostname_through(cluster, client_pod: dict, address: str) -> str:
    """Who answers `client_pod`'s HTTP request to `address:8080` (retried while the machine is slow)."""
    async def ask() -> dict | None:
        answer = await cluster.rpc(client_pod["spec"]["nodeName"], "pod.http", {
            "namespace": client_pod["metadata"]["namespace"], "pod": client_pod["metadata"]["name"],
            "url": f"http://{address}:8080/hostname", "timeout": 3.0})
        return answer if answer["ok"] else None

    answer = await eventually(ask, 20, f"an answer from {address}:8080")
    return answer["body"] if isinstance(answer["body"], str) else answer["body"].decode()


async def test_a_tenant_cannot_claim_another_pods_address(local_cluster):
    cluster = await local_cluster(PREFIX, nodes=2)
    admin = cluster.client
    for namespace in (TENANT, "team-b"):
        await admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    await admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": "team-a-edit", "namespace": TENANT},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}]})
    await cluster.create(pod_on("victim", "team-b", "node-2", 8080), pod_on("client", "team-b", "node-1", 8080))
    victim_ip = (await cluster.wait_running("team-b", "role=victim", 1))[0]["status"]["podIP"]
    client_pod = (await cluster.wait_running("team-b", "role=client", 1))[0]
    assert await hostname_through(cluster, client_pod, victim_ip) == "victim"
    dns_ip = (await admin.get("services", "kube-dns", "kube-system"))["spec"]["clusterIP"]

    async with ApiClient.from_kubeconfig(credentials.tenant_kubeconfig(cluster.home, TENANT)) as bound, \
            _group_client(cluster, "eddie", f"edit:{TENANT}") as grouped:
        for tenant in (bound, grouped):
            # Its own pod, to which it would like the victim's traffic to go.
            thief = await tenant.create(pod_on(f"thief-{uuid.uuid4().hex[:6]}", TENANT, "node-1", 8080))
            # The victim's address is no Service's to have (422), and no new external IP is a tenant's (403).
            message = await refused(tenant.create(thief_service(externalIPs=[victim_ip])), 422)
            assert f'spec.externalIPs[0]: Invalid value: "{victim_ip}": may not be in the pod network (10.244.0.0/16)' in message
            message = await refused(tenant.create(thief_service(externalIPs=[ELSEWHERE])), 403)
            assert message == f'services "thief" is forbidden: {DENIED}'
            message = await refused(tenant.create(thief_service(type="LoadBalancer", loadBalancerIP=dns_ip)), 422)
            assert f'spec.loadBalancerIP: Invalid value: "{dns_ip}": may not be in the Service network (10.96.0.0/12)' in message
            await tenant.create(thief_service())
            message = await refused(tenant.patch("services", "thief", {"spec": {"externalIPs": [ELSEWHERE]}},
                                                 namespace=TENANT), 403)
            assert message == f'services "thief" is forbidden: {DENIED}'
            message = await refused(tenant.patch("services", "thief", {"status": {"loadBalancer": {
                "ingress": [{"ip": victim_ip}]}}}, namespace=TENANT, subresource="status"), 403)
            user = "team-a" if tenant is bound else "eddie"
            assert message == (f'services "thief" is forbidden: User "{user}" cannot patch resource "services/status" '
                               f'in API group "" in the namespace "{TENANT}"')
            name = thief["metadata"]["name"]
            message = await refused(tenant.patch("pods", name, {"status": {"podIP": victim_ip, "podIPs": [{"ip": victim_ip}]}},
                                                 namespace=TENANT, subresource="status"), 403)
            assert message == (f'pods "{name}" is forbidden: User "{user}" cannot patch resource "pods/status" '
                               f'in API group "" in the namespace "{TENANT}"')
            message = await refused(tenant.create({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "thief-by-hand", "namespace": TENANT, "labels": {"kubernetes.io/service-name": "thief"}},
                "addressType": "IPv4", "endpoints": [{"addresses": [victim_ip]}], "ports": [{"port": 8080}]}), 403)
            assert message == (f'endpointslices.discovery.k8s.io is forbidden: User "{user}" cannot create resource '
                               f'"endpointslices" in API group "discovery.k8s.io" in the namespace "{TENANT}"')
            await tenant.delete("services", "thief", TENANT)

    # An administrator is held to the same addresses: no new externalIPs without an allowed range, and no
    # load-balancer address in the pod network, whoever writes the status.
    message = await refused(admin.create(thief_service(externalIPs=[ELSEWHERE])), 403)
    assert message == f'services "thief" is forbidden: {DENIED}'
    await admin.create(thief_service())
    message = await refused(admin.patch("services", "thief", {"status": {"loadBalancer": {"ingress": [{"ip": victim_ip}]}}},
                                        namespace=TENANT, subresource="status"), 422)
    assert f'status.loadBalancer.ingress[0].ip: Invalid value: "{victim_ip}": may not be in the pod network (10.244.0.0/16)' in message

    # The victim's traffic went nowhere else.
    assert await hostname_through(cluster, client_pod, victim_ip) == "victim"
    assert (await admin.get("pods", "victim", "team-b"))["status"]["podIP"] == victim_ip


async def test_allowed_ranges_admit_external_ips_but_never_a_protected_address(make_api_server):
    api = make_api_server(extra_args=("--allowed-external-ip-cidrs", "203.0.113.0/24,10.0.0.0/8",
                                      "--cluster-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/12"))
    async with api.client() as admin, api.client(api.tokens["editor"]) as editor:
        await admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TENANT}})
        created = await editor.create(thief_service(externalIPs=["203.0.113.7"]))
        assert created["spec"]["externalIPs"] == ["203.0.113.7"]
        message = await refused(editor.patch("services", "thief", {"spec": {"externalIPs": ["203.0.113.7", "198.51.100.7"]}},
                                             namespace=TENANT), 403)
        assert message == (f'services "thief" is forbidden: {DENIED}: 198.51.100.7 outside the allowed ranges '
                           "(203.0.113.0/24, 10.0.0.0/8)")
        for address, why in (("10.244.3.4", "may not be in the pod network (10.244.0.0/16)"),
                             ("10.96.0.10", "may not be in the Service network (10.96.0.0/12)")):
            message = await refused(admin.patch("services", "thief", {"spec": {"externalIPs": [address]}}, namespace=TENANT), 422)
            assert f'spec.externalIPs[0]: Invalid value: "{address}": {why}' in message
        message = await refused(admin.patch("services", "thief", {"spec": {"externalIPs": ["127.0.0.1"]}}, namespace=TENANT), 422)
        assert 'spec.externalIPs[0]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)' in message
        # What a Service already has is kept: an update that adds nothing is not refused.
        kept = await editor.patch("services", "thief", {"metadata": {"labels": {"x": "y"}}}, namespace=TENANT)
        assert kept["spec"]["externalIPs"] == ["203.0.113.7"]


CIDRS = [ipaddress.ip_network("203.0.113.0/24")]


@pytest.mark.parametrize("new, old, allowed, denied", [
    ([], None, [], None),
    (["203.0.113.7"], None, [], DENIED),
    (["203.0.113.7"], ["203.0.113.7"], [], None),  # kept, as DenyServiceExternalIPs keeps a subset
    (["203.0.113.7", "203.0.113.8"], ["203.0.113.7"], [], DENIED),
    (["203.0.113.7"], None, CIDRS, None),
    (["198.51.100.7"], None, CIDRS, f"{DENIED}: 198.51.100.7 outside the allowed ranges (203.0.113.0/24)"),
    (["not-an-ip"], None, CIDRS, f"{DENIED}: not-an-ip outside the allowed ranges (203.0.113.0/24)"),
])
def test_the_external_ip_admission(new, old, allowed, denied):
    service = {"spec": {"externalIPs": new}}
    assert serviceaddresses.external_ips_denied(service, None if old is None else {"spec": {"externalIPs": old}},
                                                allowed) == denied


def test_every_address_a_service_claims_is_checked():
    protected = serviceaddresses.Protected("10.244.0.0/16", "10.96.0.0/12", ("192.0.2.10",))
    service = {"spec": {"externalIPs": ["10.244.1.2", "203.0.113.7"], "loadBalancerIP": "192.0.2.10"},
               "status": {"loadBalancer": {"ingress": [{"ip": "10.96.0.10"}, {"hostname": "lb.example"}]}}}
    assert [(field, value) for field, value, _ in serviceaddresses.shadowing(service, protected)] == [
        ("spec.externalIPs[0]", "10.244.1.2"), ("spec.loadBalancerIP", "192.0.2.10"),
        ("status.loadBalancer.ingress[0].ip", "10.96.0.10")]
