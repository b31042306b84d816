"""The controllers' decisions, pure and table-driven: scheduling, endpoint slices and node lifecycle
(ReplicaSets and Deployments: test_workload_compute.py)."""


import pytest
from podnet.apiserver.controllers import endpointslices, nodelifecycle, scheduling
from support import objects

# Builders.


make_node, make_pod, ready_condition = objects.node, objects.pod, objects.ready_condition


def make_service(name="web", selector=None, ports=None, namespace="default", **spec):
    return objects.service(name, namespace, selector={"app": "web"} if selector is None else selector, **spec,
                           ports=ports or [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}])


# Scheduling.

NO_SCHEDULE = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("pod_spec", "nodes", "counts", "expected"),
    [
        ({}, [make_node("b"), make_node("a")], {}, "a"),  # tie: lowest name
        ({}, [make_node("a"), make_node("b")], {"a": 2, "b": 1}, "b"),  # fewest pods
        ({}, [make_node("a", ready="False"), make_node("b", ready="Unknown"), make_node("c", ready=None)], {}, None),
        ({}, [make_node("a", unschedulable=True), make_node("b")], {"b": 9}, "b"),
        ({"nodeSelector": {"disk": "ssd"}}, [make_node("a"), make_node("b", labels={"disk": "ssd"})], {"b": 5}, "b"),
        ({"nodeSelector": {"disk": "ssd"}}, [make_node("a", labels={"disk": "hdd"})], {}, None),
        ({}, [make_node("a", taints=[NO_SCHEDULE]), make_node("b")], {"b": 3}, "b"),
        ({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]},
         [make_node("a", taints=[NO_SCHEDULE])], {}, "a"),
        ({"tolerations": [{"key": "dedicated", "value": "web"}]}, [make_node("a", taints=[NO_SCHEDULE])], {}, None),
        ({"tolerations": [{"operator": "Exists"}]}, [make_node("a", taints=[NO_SCHEDULE])], {}, "a"),
        ({}, [make_node("a", taints=[{"key": "x", "effect": "PreferNoSchedule"}])], {}, "a"),
        ({}, [make_node("a", taints=[{"key": nodelifecycle.UNREACHABLE_TAINT_KEY, "effect": "NoExecute"}])], {}, None),
        ({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                           "effect": "NoSchedule"}]}, [make_node("a", unschedulable=True)], {}, "a"),
    ],
)
def test_choose_node(pod_spec, nodes, counts, expected):
    pod = make_pod("p", phase="Pending", **pod_spec)
    assert scheduling.choose_node(pod, nodes, counts) == expected


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (make_pod("p", phase="Pending"), True),
        (make_pod("p", node="a"), False),  # nodeName given: already bound
        (make_pod("p", deleting=True), False),
        (make_pod("p", phase="Succeeded"), False),
        (make_pod("p", schedulerName="other"), False),
    ],
)
def test_needs_scheduling(pod, expected):
    assert scheduling.needs_scheduling(pod) is expected


def test_count_pods_per_node_skips_finished_and_unbound():
    pods = [make_pod("a", node="n1"), make_pod("b", node="n1"), make_pod("c", node="n2", phase="Failed"),
            make_pod("d")]
    assert scheduling.count_pods_per_node(pods) == {"n1": 2}


# EndpointSlices and Endpoints.

WEB = {"app": "web"}


def endpoints_of(slices):
    return [(e["addresses"][0], e["conditions"]["ready"], e["conditions"]["serving"], e["conditions"]["terminating"])
            for s in slices for e in s["endpoints"]]


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (make_pod("a", labels=WEB, ip="10.244.0.5", node="n1", ready=True), [("10.244.0.5", True, True, False)]),
        (make_pod("a", labels=WEB, ip="10.244.0.5", node="n1", ready=False), [("10.244.0.5", False, False, False)]),
        (make_pod("a", labels=WEB, ip="10.244.0.5", node="n1"), [("10.244.0.5", False, False, False)]),
        (make_pod("a", labels=WEB, ip="10.244.0.5", ready=True, deleting=True), [("10.244.0.5", False, True, True)]),
        (make_pod("a", labels=WEB, ip="10.244.0.5", ready=False, deleting=True), [("10.244.0.5", False, False, True)]),
        (make_pod("a", labels=WEB, ready=True), []),  # no IP yet
        (make_pod("a", labels=WEB, ip="10.244.0.5", ready=True, phase="Succeeded"), []),
        (make_pod("a", labels={"app": "db"}, ip="10.244.0.5", ready=True), []),
        (make_pod("a", namespace="other", labels=WEB, ip="10.244.0.5", ready=True), []),
    ],
)
def test_endpoint_conditions(pod, expected):
    slices = endpointslices.desired_slices(make_service(), [pod], {})
    assert endpoints_of(slices) == expected
    assert len(slices) == 1


def test_publish_not_ready_addresses_makes_every_endpoint_ready():
    service = make_service(publishNotReadyAddresses=True)
    pods = [make_pod("a", labels=WEB, ip="10.244.0.5", ready=False),
            make_pod("b", labels=WEB, ip="10.244.0.6", ready=True, deleting=True)]
    assert endpoints_of(endpointslices.desired_slices(service, pods, {})) == [
        ("10.244.0.5", True, False, False), ("10.244.0.6", True, True, True)]
    endpoints = endpointslices.desired_endpoints(service, pods)
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == ["10.244.0.5", "10.244.0.6"]


def test_slice_shape():
    service = make_service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                                   "appProtocol": "http"}])
    service["metadata"]["labels"] = {"team": "a"}
    pod = make_pod("web-1", labels=WEB, ip="10.244.1.7", node="n1", ready=True, hostname="web-1", subdomain="web")
    nodes = {"n1": make_node("n1", labels={"topology.kubernetes.io/zone": "z1"})}
    (slice_,) = endpointslices.desired_slices(service, [pod], nodes)
    assert slice_["apiVersion"] == "discovery.k8s.io/v1" and slice_["kind"] == "EndpointSlice"
    assert slice_["addressType"] == "IPv4"
    assert slice_["metadata"]["name"].startswith("web-")
    assert slice_["metadata"]["labels"] == {
        "team": "a", "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    assert slice_["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                                       "uid": "uid-web", "controller": True,
                                                       "blockOwnerDeletion": True}]
    assert slice_["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"}]
    assert slice_["endpoints"] == [{
        "addresses": ["10.244.1.7"], "conditions": {"ready": True, "serving": True, "terminating": False},
        "hostname": "web-1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1",
                                            "uid": "uid-web-1"},
        "nodeName": "n1", "zone": "z1"}]


def test_hostname_only_when_subdomain_is_the_service():
    pod = make_pod("a", labels=WEB, ip="10.244.0.5", ready=True, hostname="a", subdomain="other")
    (slice_,) = endpointslices.desired_slices(make_service(), [pod], {})
    assert "hostname" not in slice_["endpoints"][0]


def test_named_target_port_resolved_per_pod_splits_slices():
    service = make_service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}])
    pods = [
        make_pod("a", labels=WEB, ip="10.244.0.5", ready=True, ports=[{"name": "web", "containerPort": 8080}]),
        make_pod("b", labels=WEB, ip="10.244.0.6", ready=True, ports=[{"name": "web", "containerPort": 9090}]),
        make_pod("c", labels=WEB, ip="10.244.0.7", ready=True, ports=[{"name": "web", "containerPort": 8080}]),
        make_pod("d", labels=WEB, ip="10.244.0.8", ready=True,
                 ports=[{"name": "web", "containerPort": 7070, "protocol": "UDP"}]),  # wrong protocol
    ]
    slices = endpointslices.desired_slices(service, pods, {})
    by_port = {tuple(p["port"] for p in s["ports"]): [e["targetRef"]["name"] for e in s["endpoints"]] for s in slices}
    assert by_port == {(8080,): ["a", "c"], (9090,): ["b"], (): ["d"]}
    assert len({s["metadata"]["name"] for s in slices}) == 3

    endpoints = endpointslices.desired_endpoints(service, pods)
    subsets = {s["ports"][0]["port"]: [a["ip"] for a in s["addresses"]] for s in endpoints["subsets"]}
    assert subsets == {8080: ["10.244.0.5", "10.244.0.7"], 9090: ["10.244.0.6"]}
    assert endpoints["subsets"][0]["ports"][0] == {"name": "http", "protocol": "TCP", "port": 8080}


def test_service_without_pods_gets_an_empty_placeholder_slice_and_empty_endpoints():
    (slice_,) = endpointslices.desired_slices(make_service(), [], {})
    assert slice_["endpoints"] == [] and slice_["ports"] == []
    assert endpointslices.desired_endpoints(make_service(), [])["subsets"] == []


def test_slices_hold_at_most_100_endpoints_and_names_are_stable():
    pods = [make_pod(f"p{i:03d}", labels=WEB, ip=f"10.244.{i // 250}.{i % 250 + 1}", ready=True) for i in range(250)]
    slices = endpointslices.desired_slices(make_service(), pods, {})
    assert [len(s["endpoints"]) for s in slices if s] and sorted(len(s["endpoints"]) for s in slices) == [50, 100, 100]
    again = endpointslices.desired_slices(make_service(), list(reversed(pods)), {})
    assert [s["metadata"]["name"] for s in slices] == [s["metadata"]["name"] for s in again]
    assert again == slices


def test_legacy_endpoints_split_ready_and_not_ready_and_drop_terminating():
    service = make_service()
    service["spec"]["clusterIP"] = "None"
    pods = [make_pod("a", labels=WEB, ip="10.244.0.9", node="n1", ready=True),
            make_pod("b", labels=WEB, ip="10.244.0.3", node="n2", ready=False),
            make_pod("c", labels=WEB, ip="10.244.0.4", ready=True, deleting=True)]
    endpoints = endpointslices.desired_endpoints(service, pods)
    assert endpoints["metadata"] == {"name": "web", "namespace": "default",
                                     "labels": {"service.kubernetes.io/headless": ""}}
    (subset,) = endpoints["subsets"]
    assert subset["addresses"] == [{"ip": "10.244.0.9", "nodeName": "n1", "targetRef": {
        "kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}}]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.244.0.3"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [({"selector": {"a": "b"}}, True), ({}, False), ({"selector": {}}, False),
     ({"selector": {"a": "b"}, "type": "ExternalName"}, False)],
)
def test_selects_pods(spec, expected):
    assert endpointslices.selects_pods({"metadata": {}, "spec": spec}) is expected


def test_differs_ignores_server_fields():
    (desired,) = endpointslices.desired_slices(make_service(), [], {})
    stored = {**desired, "metadata": {**desired["metadata"], "resourceVersion": "7", "uid": "u"}}
    assert not endpointslices.slice_differs(stored, desired)
    changed = {**stored, "endpoints": [{"addresses": ["10.0.0.1"]}]}
    assert endpointslices.slice_differs(changed, desired)


# Node lifecycle.

GRACE, EVICT = 40.0, 300.0


def lease(renew):
    return {"metadata": {"name": "n", "namespace": "kube-node-lease"}, "spec": {"renewTime": renew}}


def test_observe_tracks_when_a_heartbeat_changed_on_the_controllers_clock():
    nodes = [make_node("n1")]
    first = nodelifecycle.observe({}, nodes, {"n1": lease("t1")}, now=100.0)
    assert first["n1"] == nodelifecycle.Heartbeat(("t1", None), 100.0, renewed=False)
    same = nodelifecycle.observe(first, nodes, {"n1": lease("t1")}, now=130.0)
    assert same["n1"].observed_at == 100.0
    renewed = nodelifecycle.observe(same, nodes, {"n1": lease("t2")}, now=135.0)
    assert renewed["n1"] == nodelifecycle.Heartbeat(("t2", None), 135.0, renewed=True)
    assert nodelifecycle.observe(renewed, [], {}, now=140.0) == {}


UNREACHABLE = {"key": nodelifecycle.UNREACHABLE_TAINT_KEY, "effect": "NoExecute"}


def marked_node(name):
    node = make_node(name, taints=[UNREACHABLE])
    node["status"]["conditions"][0].update(status="Unknown", reason="NodeStatusUnknown")
    return node


@pytest.mark.parametrize(
    ("node", "beat", "now", "expected"),
    [
        (make_node("n1"), (0.0, False), 40.0, ((), ())),  # exactly at the grace period: still fine
        (make_node("n1"), (0.0, False), 40.5, (("n1",), ())),
        (marked_node("n1"), (0.0, False), 100.0, ((), ())),  # already marked
        (make_node("n1", taints=[UNREACHABLE]), (0.0, False), 100.0, (("n1",), ())),  # condition missing
        (marked_node("n1"), (90.0, True), 100.0, ((), ("n1",))),  # heartbeats resumed
        (marked_node("n1"), (90.0, False), 100.0, ((), ())),  # first seen after a restart: not proof of life
        (make_node("n1", ready="False"), (90.0, True), 100.0, ((), ())),  # the node's own NotReady stays
    ],
)
def test_node_marking(node, beat, now, expected):
    heartbeats = {"n1": nodelifecycle.Heartbeat(("t", None), beat[0], renewed=beat[1])}
    decisions = nodelifecycle.decide([node], heartbeats, [], now, grace_period=GRACE, eviction_timeout=EVICT)
    assert (decisions.mark_unreachable, decisions.mark_reachable) == expected


@pytest.mark.parametrize(
    ("pod", "now", "not_ready", "evict"),
    [
        (make_pod("a", node="n1", ready=True), 41.0, True, False),
        (make_pod("a", node="n1", ready=False), 41.0, False, False),
        (make_pod("a", node="n2", ready=True), 1000.0, False, False),  # healthy node
        (make_pod("a", node="n1", ready=True), 340.0, True, True),  # 40 s grace + 300 s eviction
        (make_pod("a", node="n1", ready=True), 339.0, True, False),
        (make_pod("a", node="n1", ready=True, deleting=True), 1000.0, False, False),
        (make_pod("a", node="n1", tolerations=[{"key": nodelifecycle.UNREACHABLE_TAINT_KEY, "operator": "Exists",
                                                "effect": "NoExecute", "tolerationSeconds": 5}]), 45.0, False, True),
        (make_pod("a", node="n1", tolerations=[{"operator": "Exists"}]), 10000.0, False, False),
    ],
)
def test_pods_on_unreachable_nodes(pod, now, not_ready, evict):
    heartbeats = {n: nodelifecycle.Heartbeat(("t", None), 0.0 if n == "n1" else now, False) for n in ("n1", "n2")}
    decisions = nodelifecycle.decide([make_node("n1"), make_node("n2")], heartbeats, [pod], now,
                                     grace_period=GRACE, eviction_timeout=EVICT)
    assert (decisions.pods_not_ready == ("default/a",)) is not_ready
    assert (decisions.pods_to_evict == ("default/a",)) is evict


def test_node_changes_round_trip():
    node = make_node("n1", taints=[{"key": "other", "effect": "NoSchedule"}])
    unreachable = nodelifecycle.node_status_unknown(nodelifecycle.node_spec_unreachable(node, "T1"), "T1")
    ready = unreachable["status"]["conditions"][0]
    assert ready == {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                     "message": "Kubelet stopped posting node status.", "lastTransitionTime": "T1"}
    assert unreachable["spec"]["taints"][1] == {**UNREACHABLE, "timeAdded": "T1"}
    back = nodelifecycle.node_status_ready(nodelifecycle.node_spec_reachable(unreachable), "T2")
    assert back["spec"]["taints"] == [{"key": "other", "effect": "NoSchedule"}]
    assert back["status"]["conditions"][0]["status"] == "True"
    assert back["status"]["conditions"][0]["lastTransitionTime"] == "T2"
    assert node["status"]["conditions"] == [ready_condition("True")]  # input untouched
    pod = nodelifecycle.pod_status_not_ready(make_pod("a", ready=True), "T3")
    assert pod["status"]["conditions"] == [{"type": "Ready", "status": "False", "reason": "NodeNotReady",
                                            "lastTransitionTime": "T3"}]
