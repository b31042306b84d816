"""Service allocation claims (apiserver/claims.py): what an admitted write claims, what a deletion gives back,
and what the repair claims or removes, without a store."""

from __future__ import annotations

import datetime
import ipaddress

from podnet.apiserver import claims
from podnet.apiserver.claims import Claim
from podnet.apiserver.controllers.allocators import IpAllocations

CIDR, PORTS = "10.96.0.0/12", (30000, 32767)
NOW = datetime.datetime(2026, 12, 4, 18, 0, tzinfo=datetime.UTC)


def service(name: str, ip: str, *node_ports: int, namespace: str = "shop") -> dict:
    spec: dict = {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80 + i, "nodePort": p} for i, p in enumerate(node_ports)]}
    if node_ports:
        spec["type"] = "NodePort"
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def claim(key: str, owner: str, age: float) -> Claim:
    return Claim(key, owner, NOW - datetime.timedelta(seconds=age), mod_revision=7)


def test_an_admitted_create_claims_its_new_ip_and_ports_and_an_update_gives_up_what_it_dropped():
    allocations = IpAllocations.from_services([], service_cidr=CIDR, node_port_range=PORTS)
    created = allocations.admit({"metadata": {"name": "web", "namespace": "shop"},
                                 "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "ports": [{"port": 80, "nodePort": 30080}]}})
    assert claims.admitted_keys(created) == ["/registry/podnet/serviceips/10.96.0.20", "/registry/podnet/servicenodeports/30080"]
    allocations.commit(created)
    to_cluster_ip = allocations.admit({"metadata": {"name": "web", "namespace": "shop"},
                                       "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}, created.service)
    assert claims.admitted_keys(to_cluster_ip) == []
    assert claims.given_up_keys(to_cluster_ip) == ["/registry/podnet/servicenodeports/30080"]


def test_a_deleted_service_gives_back_everything_it_held():
    assert claims.held_keys(service("web", "10.96.0.20", 30080, 30443), service_cidr=CIDR, node_port_range=PORTS) == [
        "/registry/podnet/serviceips/10.96.0.20", "/registry/podnet/servicenodeports/30080",
        "/registry/podnet/servicenodeports/30443"]
    headless = {"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None"}}
    assert claims.held_keys(headless, service_cidr=CIDR, node_port_range=PORTS) == []


def test_other_servers_claims_count_as_taken_in_this_servers_view():
    allocations = IpAllocations.from_services([], service_cidr=CIDR, node_port_range=PORTS)
    claims.add_claims(allocations, [claim(claims.ip_key("10.96.0.20"), "shop/web", 0), claim(claims.port_key(30080), "shop/web", 0),
                                    claim("/registry/podnet/serviceips/not-an-ip", "x/y", 0)])
    assert allocations.ips == {ipaddress.IPv4Address("10.96.0.20"): "shop/web"} and allocations.ports == {30080: "shop/web"}
    taken = allocations.admit({"metadata": {"name": "api", "namespace": "shop"},
                               "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    assert taken.service["spec"]["clusterIP"] != "10.96.0.20" and taken.service["spec"]["ports"][0]["nodePort"] != 30080


def test_the_repair_claims_what_services_hold_without_a_claim():
    plan = claims.plan_repair([service("web", "10.96.0.20", 30080)], [claim(claims.ip_key("10.96.0.20"), "shop/web", 5)],
                              service_cidr=CIDR, node_port_range=PORTS, now=NOW)
    assert plan.missing == {"/registry/podnet/servicenodeports/30080": "shop/web"} and plan.leaked == []


def test_the_repair_removes_leaked_claims_only_past_the_grace_period():
    young = claim(claims.ip_key("10.96.0.30"), "shop/gone", claims.REPAIR_GRACE - 1)  # a write may be in flight
    old = claim(claims.ip_key("10.96.0.31"), "shop/gone", claims.REPAIR_GRACE)
    moved = claim(claims.port_key(30081), "shop/web", claims.REPAIR_GRACE + 5)  # web holds 30080 now
    kept = claim(claims.port_key(30080), "shop/web", claims.REPAIR_GRACE + 5)
    plan = claims.plan_repair([service("web", "10.96.0.20", 30080)], [young, old, moved, kept],
                              service_cidr=CIDR, node_port_range=PORTS, now=NOW)
    assert plan.leaked == [old, moved]
    assert plan.missing == {"/registry/podnet/serviceips/10.96.0.20": "shop/web"}


def test_an_unreadable_claim_is_nobodys_and_old():
    broken = Claim.decode(claims.ip_key("10.96.0.40"), b"{not json", 3)
    assert broken.owner == "" and broken.mod_revision == 3
    plan = claims.plan_repair([], [broken], service_cidr=CIDR, node_port_range=PORTS, now=NOW)
    assert plan.leaked == [broken]


def test_a_claim_round_trips():
    value = claims.claim_value("shop/web", NOW)
    assert Claim.decode(claims.port_key(30080), value, 9) == Claim(claims.port_key(30080), "shop/web", NOW, 9)
