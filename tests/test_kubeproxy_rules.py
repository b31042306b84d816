"""kube-proxy's pure parts: what each Service and EndpointSlice becomes in the table of one node, and
the change tracker that folds events between two syncs."""

import copy

import pytest
from podnet.nodeagent.kubeproxy import rules
from podnet.nodeagent.kubeproxy.rules import health_check_counts
from podnet.nodeagent.kubeproxy.tracker import ChangeTracker, apply_changes
from podnet.overlay.pipeline.nat import Endpoint, ProxyTable, ServicePort, ServiceTable
from support import objects

from podnet.api.keys import object_key
from podnet.backends import ProxyMode


def service(name, cluster_ip="10.96.0.20", ports=None, namespace="default", status=None, **spec):
    return objects.service(name, namespace, cluster_ip=cluster_ip, status=status, **spec,
                           ports=ports or [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}])


def endpoint_slice(service_name, endpoints, ports=None, **rest):
    return objects.endpoint_slice(service_name, endpoints, ports=ports or [{"name": "http", "port": 8080,
                                                                            "protocol": "TCP"}], **rest)


BACKENDS = [("10.244.1.2", "node-1", True), ("10.244.2.2", "node-2", True), ("10.244.2.3", "node-2", False)]


def table_for(services, slices, node="node-1", mode="iptables"):
    infos = {object_key(s): rules.service_info(s) for s in services}
    return rules.compute(infos, [rules.slice_info(s) for s in slices], node, mode).to_data()


def test_cluster_ip_gets_the_ready_endpoints_with_resolved_ports():
    data = table_for([service("web")], [endpoint_slice("web", BACKENDS)])
    assert data["mode"] == "iptables" and data["node"] == "node-1"
    [entry] = data["services"]
    assert entry == {
        "service": "default/web",
        "port_name": "http",
        "protocol": "TCP",
        "cluster_ip": "10.96.0.20",
        "port": 80,
        "endpoints": [["10.244.1.2", 8080, "node-1"], ["10.244.2.2", 8080, "node-2"]],
    }
    ServiceTable.from_data(data)  # the agent takes it as it is


@pytest.mark.parametrize(
    ("svc", "why"),
    [
        (service("ext", cluster_ip=None, type="ExternalName", externalName="example.com"), "ExternalName"),
        (service("headless", cluster_ip="None"), "headless"),
        (service("noports", ports=[{"name": "x"}]), "no ports"),
    ],
)
def test_ignored_services_get_no_rules(svc, why):
    assert table_for([svc], [endpoint_slice(svc["metadata"]["name"], BACKENDS)])["services"] == [], why


def test_ports_match_by_name_and_protocol_across_slices_and_duplicates_merge():
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
    ]
    slice_ports = [
        {"name": "dns", "port": 5353, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
    ]
    slices = [
        endpoint_slice("dns", BACKENDS[:1], slice_ports, name="dns-1"),
        endpoint_slice("dns", BACKENDS[:2], slice_ports, name="dns-2"),
        endpoint_slice("dns", BACKENDS, slice_ports, name="dns-6", address_type="IPv6"),
        endpoint_slice("other", BACKENDS, slice_ports, name="other-1"),
    ]
    entries = table_for([service("dns", ports=ports)], slices)["services"]
    assert [(e["protocol"], e["port"], [x[0] for x in e["endpoints"]]) for e in entries] == [
        ("UDP", 53, ["10.244.1.2", "10.244.2.2"]),
        ("TCP", 53, ["10.244.1.2", "10.244.2.2"]),
    ]


def test_traffic_policies_affinity_and_node_ports():
    svc = service(
        "web",
        type="LoadBalancer",
        ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
        externalTrafficPolicy="Local",
        internalTrafficPolicy="Local",
        healthCheckNodePort=31000,
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}},
        status={"loadBalancer": {"ingress": [{"ip": "127.0.1.1"}]}},
    )
    slices = [endpoint_slice("web", BACKENDS)]
    [on_node2] = table_for([svc], slices, node="node-2")["services"]
    assert on_node2["endpoints"] == on_node2["external_endpoints"] == [["10.244.2.2", 8080, "node-2"]]
    assert on_node2["node_port"] == 30080 and on_node2["external_ips"] == ["127.0.1.1"]
    assert on_node2["affinity_seconds"] == 30 and on_node2["health_check_node_port"] == 31000
    [on_node3] = table_for([svc], slices, node="node-3")["services"]
    assert on_node3["endpoints"] == on_node3["external_endpoints"] == []
    cluster = copy.deepcopy(svc)
    cluster["spec"].update(
        externalTrafficPolicy="Cluster", internalTrafficPolicy="Cluster", sessionAffinity="None"
    )
    [entry] = table_for([cluster], slices, node="node-3")["services"]
    assert len(entry["external_endpoints"]) == 2 and len(entry["endpoints"]) == 2
    assert "health_check_node_port" not in entry and "affinity_seconds" not in entry


def test_default_affinity_timeout_and_cluster_ip_type_has_no_node_port():
    svc = service("web", sessionAffinity="ClientIP")
    svc["spec"]["ports"][0]["nodePort"] = 30001  # left over from a type change: not programmed
    [entry] = table_for([svc], [])["services"]
    assert entry["affinity_seconds"] == 10800 and "node_port" not in entry and entry["endpoints"] == []


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        rules.compute({}, [], "node-1", "userspace")


def test_tracker_folds_events_and_drops_no_op_updates():
    tracker = ChangeTracker(rules.service_info, object_key)
    v1 = service("web")
    assert tracker.update(None, v1) and len(tracker) == 1
    relabelled = copy.deepcopy(v1)
    relabelled["metadata"]["labels"] = {"x": "y"}
    relabelled["metadata"]["resourceVersion"] = "2"
    assert tracker.update(v1, relabelled)  # still the pending add
    changes = tracker.take()
    assert changes["default/web"].previous is None and changes["default/web"].current == rules.service_info(
        v1
    )
    assert not tracker.update(relabelled, copy.deepcopy(relabelled)) and len(tracker) == 0
    moved = service("web", cluster_ip="10.96.0.21")
    assert tracker.update(relabelled, moved)
    assert not tracker.update(moved, relabelled)  # changed back before a sync: nothing to do
    assert tracker.take() == {}
    assert tracker.update(None, moved) and not tracker.update(moved, None)  # added and deleted between syncs


def test_tracker_changes_bring_state_up_to_date():
    tracker = ChangeTracker(
        rules.slice_info, lambda s: f"{s['metadata']['namespace']}/{s['metadata']['name']}"
    )
    state = {}
    first = endpoint_slice("web", BACKENDS)
    tracker.update(None, first)
    apply_changes(state, tracker.take())
    assert list(state) == ["default/web-abc"]
    fewer = endpoint_slice("web", BACKENDS[:1])
    tracker.update(first, fewer)
    apply_changes(state, tracker.take())
    assert state["default/web-abc"] == rules.slice_info(fewer)
    tracker.update(fewer, None)
    apply_changes(state, tracker.take())
    assert state == {}


def test_health_check_counts_are_the_local_ready_endpoints_of_each_health_check_port():
    endpoints = (Endpoint("10.244.1.2", 8080, "node-1"), Endpoint("10.244.1.3", 8080, "node-1"),
                 Endpoint("10.244.2.2", 8080, "node-2"))
    entry = ServicePort("default/web", "", "TCP", "10.96.0.5", 80, node_port=30080, external_endpoints=endpoints,
                        external_local=True, health_check_node_port=31999)
    assert health_check_counts(ProxyTable(ProxyMode.IPTABLES, "node-1", (entry,))) == {31999: ("default/web", 2)}
    assert health_check_counts(ProxyTable(ProxyMode.IPTABLES, "node-3", (entry,))) == {31999: ("default/web", 0)}
