"""Pod CIDR, ClusterIP and NodePort allocation: pure, no server."""

import pytest
from podnet.apiserver.controllers.allocators import (
    AllocationError,
    CidrAllocator,
    CidrExhausted,
    IpAllocations,
    with_pod_cidr,
)
from podnet.apiserver.serviceaddresses import parse_port_range
from support import objects


def node(name, cidr=None):
    obj = {"metadata": {"name": name}, "spec": {}}
    return with_pod_cidr(obj, cidr) if cidr else obj


def service(name, namespace="default", type_="ClusterIP", cluster_ip=None, ports=None, **spec):
    return objects.service(name, namespace, type=type_, cluster_ip=cluster_ip,
                           ports=ports or [{"port": 80, "protocol": "TCP"}], **spec)


# Pod CIDRs.


def test_cidrs_are_handed_out_lowest_first_and_reused_after_release():
    allocator = CidrAllocator("10.244.0.0/16", 24)
    assert [allocator.allocate(n) for n in ("a", "b", "c")] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    allocator.release("10.244.1.0/24")
    assert allocator.allocate("d") == "10.244.1.0/24"


def test_cidr_allocator_rebuilt_from_nodes_skips_taken_blocks():
    nodes = [node("a", "10.244.0.0/24"), node("b", "10.244.2.0/24"), node("c"), node("x", "192.168.0.0/24")]
    allocator = CidrAllocator.from_nodes("10.244.0.0/16", 24, nodes)
    assert allocator.owner("10.244.2.0/24") == "b"
    assert allocator.allocate("c") == "10.244.1.0/24"
    assert allocator.allocate("d") == "10.244.3.0/24"


def test_cidr_allocator_exhausts():
    allocator = CidrAllocator("10.244.0.0/23", 24)
    allocator.allocate("a")
    allocator.allocate("b")
    with pytest.raises(CidrExhausted):
        allocator.allocate("c")


def test_with_pod_cidr_sets_both_fields_without_touching_the_input():
    original = node("a")
    updated = with_pod_cidr(original, "10.244.7.0/24")
    assert updated["spec"] == {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}
    assert original["spec"] == {}


# ClusterIPs.


def fresh(*services):
    return IpAllocations.from_services(services, service_cidr="10.96.0.0/12", node_port_range=(30000, 32767))


def test_well_known_services_get_their_fixed_ips_and_others_never_do():
    allocations = fresh()
    first = allocations.admit(service("web")).service["spec"]["clusterIP"]
    assert first == "10.96.0.2"  # .1 is the kubernetes Service's
    assert allocations.admit(service("kubernetes")).service["spec"]["clusterIP"] == "10.96.0.1"
    assert allocations.admit(service("kube-dns", "kube-system")).service["spec"]["clusterIP"] == "10.96.0.10"
    picked = {allocations.admit(service(f"s{i}")).service["spec"]["clusterIP"] for i in range(12)}
    assert "10.96.0.10" not in picked and "10.96.0.1" not in picked


@pytest.mark.parametrize(
    ("requested", "field", "detail"),
    [
        ("10.96.0.5", "spec.clusterIPs", "already allocated"),
        ("10.97.0.0", None, None),
        ("10.112.0.1", "spec.clusterIPs", "not in the valid range"),
        ("10.96.0.0", "spec.clusterIPs", "not in the valid range"),  # network address
        ("10.111.255.255", "spec.clusterIPs", "not in the valid range"),  # broadcast address
        ("10.96.0.10", "spec.clusterIPs", "already allocated"),  # kept for kube-dns
        ("bogus", "spec.clusterIPs", "valid IPv4 address"),
    ],
)
def test_requested_cluster_ip_is_honoured_or_refused(requested, field, detail):
    allocations = fresh(service("taken", cluster_ip="10.96.0.5"))
    if field is None:
        admitted = allocations.admit(service("web", cluster_ip=requested)).service
        assert admitted["spec"]["clusterIP"] == requested and admitted["spec"]["clusterIPs"] == [requested]
        return
    with pytest.raises(AllocationError) as raised:
        allocations.admit(service("web", cluster_ip=requested))
    assert raised.value.field == field and detail in str(raised.value)
    assert raised.value.cause["field"] == field
    assert len(allocations.ips) == 1  # nothing reserved by a refused request


def test_headless_and_external_name_get_no_ip():
    allocations = fresh()
    headless = allocations.admit(service("h", cluster_ip="None")).service["spec"]
    assert headless["clusterIP"] == "None" and headless["clusterIPs"] == ["None"]
    external = allocations.admit(service("e", type_="ExternalName", externalName="example.com")).service["spec"]
    assert "clusterIP" not in external
    assert allocations.ips == {}


def test_abort_frees_and_commit_keeps():
    allocations = fresh()
    refused = allocations.admit(service("web", cluster_ip="10.96.0.7"))
    allocations.abort(refused)
    assert allocations.ips == {}
    accepted = allocations.admit(service("web", cluster_ip="10.96.0.7"))
    allocations.commit(accepted)
    with pytest.raises(AllocationError):
        allocations.admit(service("other", cluster_ip="10.96.0.7"))


def test_update_keeps_the_allocated_ip_and_ports_when_left_empty():
    allocations = fresh()
    created = allocations.admit(service("web", type_="NodePort"))
    allocations.commit(created)
    stored = created.service
    update = allocations.admit(service("web", type_="NodePort"), old=stored)
    assert update.service["spec"]["clusterIP"] == stored["spec"]["clusterIP"]
    assert update.service["spec"]["ports"][0]["nodePort"] == stored["spec"]["ports"][0]["nodePort"]
    assert not update.reserved_ips and not update.given_up_ports


def test_type_change_to_cluster_ip_gives_up_node_ports_on_commit_only():
    allocations = fresh()
    created = allocations.admit(service("web", type_="NodePort"))
    allocations.commit(created)
    port = created.service["spec"]["ports"][0]["nodePort"]
    change = allocations.admit(service("web"), old=created.service)
    assert "nodePort" not in change.service["spec"]["ports"][0]
    assert change.given_up_ports == {port} and allocations.ports == {port: "default/web"}
    allocations.commit(change)
    assert allocations.ports == {}


def test_release_frees_everything_a_deleted_service_held():
    allocations = fresh()
    created = allocations.admit(service("web", type_="NodePort"))
    allocations.release(created.service)
    assert allocations.ips == {} and allocations.ports == {}


def test_rebuilt_allocations_know_what_the_stored_services_hold():
    before = fresh()
    stored = [before.admit(service(f"s{i}", type_="NodePort")).service for i in range(3)]
    after = fresh(*stored)
    assert after.ips == before.ips and after.ports == before.ports


# NodePorts.


def test_node_ports_are_unique_across_services():
    allocations = fresh()
    two_ports = [{"port": 80, "protocol": "TCP", "name": "a"}, {"port": 81, "protocol": "TCP", "name": "b"}]
    seen = []
    for i in range(5):
        spec = allocations.admit(service(f"s{i}", type_="NodePort", ports=two_ports)).service["spec"]
        seen += [p["nodePort"] for p in spec["ports"]]
    assert len(seen) == len(set(seen)) == 10
    assert all(30000 <= p <= 32767 for p in seen)


@pytest.mark.parametrize(
    ("node_port", "detail"),
    [(30080, "already allocated"), (29999, "not in the valid range"), (32768, "not in the valid range")],
)
def test_requested_node_port_is_refused(node_port, detail):
    allocations = fresh(service("a", type_="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    with pytest.raises(AllocationError) as raised:
        allocations.admit(service("b", type_="NodePort", ports=[{"port": 81}, {"port": 80, "nodePort": node_port}]))
    assert raised.value.field == "spec.ports[1].nodePort" and detail in str(raised.value)
    assert set(allocations.ports) == {30080}


def test_one_service_may_use_a_node_port_for_udp_and_tcp():
    allocations = fresh()
    ports = [{"port": 53, "protocol": "UDP", "nodePort": 30053}, {"port": 53, "protocol": "TCP", "nodePort": 30053}]
    spec = allocations.admit(service("dns", type_="NodePort", ports=ports)).service["spec"]
    assert [p["nodePort"] for p in spec["ports"]] == [30053, 30053]


def test_requested_node_port_is_not_taken_by_an_automatic_pick_in_the_same_service():
    allocations = IpAllocations.from_services([], node_port_range=(30000, 30001))
    ports = [{"port": 80}, {"port": 81, "nodePort": 30000}]
    spec = allocations.admit(service("web", type_="NodePort", ports=ports)).service["spec"]
    assert [p["nodePort"] for p in spec["ports"]] == [30001, 30000]


def test_load_balancer_gets_node_ports_and_a_health_check_port_when_local():
    allocations = fresh()
    spec = allocations.admit(service("lb", type_="LoadBalancer", externalTrafficPolicy="Local")).service["spec"]
    assert spec["ports"][0]["nodePort"] and spec["healthCheckNodePort"]
    assert spec["healthCheckNodePort"] != spec["ports"][0]["nodePort"]
    no_ports = allocations.admit(service("lb2", type_="LoadBalancer", allocateLoadBalancerNodePorts=False))
    assert "nodePort" not in no_ports.service["spec"]["ports"][0]


def test_node_ports_run_out():
    allocations = IpAllocations.from_services([], node_port_range=(30000, 30001))
    allocations.admit(service("a", type_="NodePort", ports=[{"port": 1}, {"port": 2}]))
    with pytest.raises(AllocationError):
        allocations.admit(service("b", type_="NodePort"))


@pytest.mark.parametrize("text", ["30000", "a-b", "-10", "1-", "３-4"])
def test_port_range_parse(text):
    assert parse_port_range("30000-30000") == (30000, 30000)
    assert parse_port_range("30000-32767") == (30000, 32767)
    with pytest.raises(ValueError, match="want LOW-HIGH"):
        parse_port_range(text)


def test_a_scattered_start_picks_any_free_node_port_not_the_start_of_a_free_run():
    # 30000-30099 with two free runs, 30010-30019 and 30060-30069: a plain scan from any offset in the taken
    # part stops at 30010 or 30060, where every API server's scan would stop; ranked among the free ports,
    # the offsets pick each free port once.
    taken = [port for port in range(30000, 30100) if not (30010 <= port < 30020 or 30060 <= port < 30070)]
    stored = [service(f"t{port}", type_="NodePort", ports=[{"port": 80, "nodePort": port}]) for port in taken]
    picks = set()
    for offset in range(20):
        allocations = IpAllocations.from_services(stored, node_port_range=(30000, 30099))
        allocations.start_scans_at(0, offset)
        (port,) = allocations.admit(service("new", type_="NodePort")).service["spec"]["ports"]
        picks.add(port["nodePort"])
    assert picks == set(range(30010, 30020)) | set(range(30060, 30070))
