"""The web UI's view models, pure: API objects, flow records, process states and matrices in, the JSON the
page draws out; and its session table."""

from __future__ import annotations

import json

import pytest
from podnet.nodeagent.policy import Matrix
from podnet.nodeagent.policy.flowlog import FlowRecord
from podnet.nodeagent.policy.matrix import Cell
from support import pipelines

from podnet.rpc.agentmethods import PEER_RX, PEER_TX
from podnet.ui import access, model


def node(name: str, ready: bool, address: str, cidr: str) -> dict:
    status = "True" if ready else "Unknown"
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": address}],
                       "conditions": [{"type": "Ready", "status": status,
                                       "reason": "KubeletReady" if ready else "NodeStatusUnknown"}]}}


def pod(namespace: str, name: str, node_name: str | None, ip: str | None, *, ready: bool = True,
        owner: tuple[str, str] | None = None, labels: dict | None = None) -> dict:
    meta: dict = {"namespace": namespace, "name": name, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1]}]
    return {"metadata": meta, "spec": {"nodeName": node_name},
            "status": {"phase": "Running" if node_name else "Pending", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def deployed(namespace: str, app: str, suffix: str, node_name: str, ip: str) -> dict:
    return pod(namespace, f"{app}-7d9cf8b6c4-{suffix}", node_name, ip, owner=("ReplicaSet", f"{app}-7d9cf8b6c4"),
               labels={"app": app, "pod-template-hash": "7d9cf8b6c4"})


def record(time: float, direction: str, src: str, sport: int, dst: str, port: int, allowed: bool, *,
           node_name: str = "node-1", src_pod: str | None = None, dst_pod: str | None = None,
           policy: str | None = None, rule: int | None = None) -> FlowRecord:
    reason = "allowed: by policy" if allowed else "denied: selected by shop/default-deny and no rule matched"
    return FlowRecord(time, node_name, direction, "TCP", src, sport, dst, port, allowed, reason, policy, rule,
                      src_pod, dst_pod)


FRONTEND = deployed("shop", "frontend", "aaaaa", "node-1", "10.244.0.2")
BACKEND = deployed("shop", "backend", "bbbbb", "node-2", "10.244.1.2")
DATABASE = deployed("shop", "database", "ccccc", "node-2", "10.244.1.3")
DNS = pod("kube-system", "coredns-0", "node-1", "10.244.0.9", owner=("DaemonSet", "coredns"))
PODS = [FRONTEND, BACKEND, DATABASE, DNS]
SERVICES = [{"metadata": {"namespace": "shop", "name": "backend"},
             "spec": {"selector": {"app": "backend"}, "clusterIP": "10.96.0.3",
                      "ports": [{"port": 8080, "protocol": "TCP"}]}}]


@pytest.mark.parametrize(("obj", "workload"), [
    (FRONTEND, "shop/frontend"),  # a Deployment's pod: its ReplicaSet less the template hash
    (DNS, "kube-system/coredns"),  # another owner: its name
    (pod("default", "bare", "node-1", "10.244.0.5"), "default/bare"),  # no owner: the pod itself
    (pod("default", "web-0", "node-1", "10.244.0.6", owner=("StatefulSet", "web")), "default/web"),
])
def test_a_pod_belongs_to_the_workload_that_made_it(obj, workload):
    assert model.workload_of(obj) == workload


def test_topology_greys_the_pods_of_a_node_that_is_not_ready_and_of_pods_that_are_not():
    nodes = [node("node-1", True, "127.0.0.11", "10.244.0.0/24"), node("node-2", False, "127.0.0.12", "10.244.1.0/24")]
    unready = pod("shop", "starting", "node-1", "10.244.0.7", ready=False)
    processes = [model.ProcessState("apiserver", True, True), model.ProcessState("node-1/agent", True),
                 model.ProcessState("node-1/kube-proxy", True), model.ProcessState("node-2/agent", False),
                 model.ProcessState("node-2/kube-proxy", True, False)]
    view = model.topology(nodes, [*PODS, unready, pod("shop", "pending", None, None)], processes,
                          {"node-1": {"tx": 2.0, "rx": 1.5}})
    first, second = view["nodes"]
    assert (first["name"], first["address"], first["podCIDR"], first["ready"], first["agent"]) == (
        "node-1", "127.0.0.11", "10.244.0.0/24", True, True)
    assert (second["ready"], second["reason"], second["agent"]) == (False, "NodeStatusUnknown", False)
    assert first["rates"] == {"tx": 2.0, "rx": 1.5} and second["rates"] == {}
    assert {p["key"]: p["greyed"] for p in first["pods"]} == {
        "kube-system/coredns-0": False, "shop/frontend-7d9cf8b6c4-aaaaa": False, "shop/starting": True}
    assert all(p["greyed"] for p in second["pods"]) and len(second["pods"]) == 2
    assert second["processes"] == [{"name": "agent", "running": False, "healthy": None},
                                   {"name": "kube-proxy", "running": True, "healthy": False}]
    assert view["tunnels"] == [{"a": "node-1", "b": "node-2", "encapsulation": "vxlan", "up": False,
                                "rates": {"ab": None, "ba": None}, "bgp": []}]
    assert view["control"] == [{"name": "apiserver", "running": True, "healthy": True}]


def test_tunnel_rates_come_from_two_reads_of_the_counters():
    before = {"node-1": {"tunnel.tx": 100, "tunnel.rx": 50}, "node-2": {"tunnel.tx": 900, "tunnel.rx": 900}}
    after = {"node-1": {"tunnel.tx": 110, "tunnel.rx": 54}, "node-2": {"tunnel.tx": 3, "tunnel.rx": 1},
             "node-3": {"tunnel.tx": 5, "tunnel.rx": 5}}
    # node-2's agent restarted (its counters went back), node-3 was not read before: no rate for either.
    assert model.rates(before, after, 2.0) == {"node-1": {"tx": 5.0, "rx": 2.0, "peers": {}}}
    assert model.rates(before, after, 0.0) == {}


def test_each_tunnel_has_the_rate_each_way_from_its_senders_counters():
    nodes = [node("node-1", True, "127.0.0.11", "10.244.0.0/24"), node("node-2", True, "127.0.0.12", "10.244.1.0/24"),
             node("node-3", True, "127.0.0.13", "10.244.2.0/24")]
    before = {"node-1": {"tunnel.tx": 10, "tunnel.rx": 10, f"{PEER_TX}127.0.0.12": 4, f"{PEER_TX}127.0.0.13": 6,
                         f"{PEER_RX}127.0.0.12": 10},
              "node-2": {"tunnel.tx": 10, "tunnel.rx": 4, f"{PEER_TX}127.0.0.11": 10, f"{PEER_RX}127.0.0.11": 4}}
    after = {"node-1": {"tunnel.tx": 30, "tunnel.rx": 20, f"{PEER_TX}127.0.0.12": 24, f"{PEER_TX}127.0.0.13": 6,
                        f"{PEER_RX}127.0.0.12": 20},
             "node-2": {"tunnel.tx": 20, "tunnel.rx": 22, f"{PEER_TX}127.0.0.11": 20, f"{PEER_RX}127.0.0.11": 22}}
    found = model.rates(before, after, 2.0)
    assert found["node-1"] == {"tx": 10.0, "rx": 5.0, "peers": {"127.0.0.12": {"tx": 10.0, "rx": 5.0},
                                                                "127.0.0.13": {"tx": 0.0, "rx": 0.0}}}
    tunnels = {(t["a"], t["b"]): t["rates"] for t in model.topology(nodes, [], [], found)["tunnels"]}
    # node-3 was not read: what it sends is unknown; node-2 has counted nothing for node-3: it sent it nothing
    assert tunnels == {("node-1", "node-2"): {"ab": 10.0, "ba": 5.0}, ("node-1", "node-3"): {"ab": 0.0, "ba": None},
                       ("node-2", "node-3"): {"ab": 0.0, "ba": None}}


def test_verdicts_on_one_connection_make_one_connection_denied_if_either_side_denied_it():
    records = [
        record(1.0, "egress", "10.244.0.2", 40000, "10.244.1.3", 5432, True, src_pod="shop/frontend-7d9cf8b6c4-aaaaa"),
        record(1.1, "ingress", "10.244.0.2", 40000, "10.244.1.3", 5432, False, node_name="node-2"),
        record(2.1, "ingress", "10.244.0.2", 40000, "10.244.1.3", 5432, False, node_name="node-2"),  # a retransmission
        record(3.0, "egress", "10.244.0.2", 40001, "10.244.1.2", 8080, True, policy="shop/frontend-to-backend", rule=0),
    ]
    first, second = model.connections(records)
    assert (first["port"], first["allowed"], first["srcPod"], first["time"]) == (
        5432, False, "shop/frontend-7d9cf8b6c4-aaaaa", 2.1)
    assert first["verdicts"]["egress"]["verdict"] == "allowed" and first["verdicts"]["ingress"]["node"] == "node-2"
    assert (second["port"], second["allowed"]) == (8080, True)
    assert second["verdicts"]["egress"]["policy"] == "shop/frontend-to-backend"


def test_the_service_map_draws_workloads_services_and_the_connections_between_them():
    seen = model.connections([
        record(1.0, "egress", "10.244.0.2", 40000, "10.244.1.2", 8080, True),
        record(1.0, "ingress", "10.244.0.2", 40000, "10.244.1.2", 8080, True, node_name="node-2"),
        record(2.0, "egress", "10.244.0.2", 40001, "10.244.1.2", 8080, True),
        record(3.0, "egress", "10.244.0.2", 40002, "10.244.1.3", 5432, True),
        record(3.0, "ingress", "10.244.0.2", 40002, "10.244.1.3", 5432, False, node_name="node-2"),
        record(4.0, "egress", "10.244.0.2", 40003, "10.244.1.2", 80, False),
        record(5.0, "egress", "10.244.0.2", 40004, "10.244.0.9", 53, True),  # to another namespace's pod
        record(6.0, "egress", "10.244.0.2", 40005, "192.0.2.1", 443, False),  # to no pod at all
        record(7.0, "egress", "10.244.0.9", 40006, "10.244.0.10", 80, True),  # none of shop's business
    ])
    view = model.service_map("shop", PODS, SERVICES, seen)
    boxes = {b["id"]: b for b in view["boxes"]}
    assert set(boxes) == {"shop/frontend", "shop/backend", "shop/database", "service:shop/backend",
                          "kube-system/coredns", "192.0.2.1"}
    assert boxes["service:shop/backend"]["selects"] == ["shop/backend"]
    assert boxes["kube-system/coredns"]["kind"] == "peer" and boxes["shop/frontend"]["pods"] == [
        "shop/frontend-7d9cf8b6c4-aaaaa"]
    edges = {(e["from"], e["to"]): e for e in view["edges"]}
    assert set(edges) == {("shop/frontend", "shop/backend"), ("shop/frontend", "shop/database"),
                          ("shop/frontend", "kube-system/coredns"), ("shop/frontend", "192.0.2.1")}
    to_backend = edges["shop/frontend", "shop/backend"]
    assert (to_backend["allowed"], to_backend["denied"], to_backend["verdict"]) == (2, 1, "mixed")
    assert to_backend["ports"] == {"8080/TCP": {"allowed": 2, "denied": 0}, "80/TCP": {"allowed": 0, "denied": 1}}
    assert [f["srcPort"] for f in to_backend["flows"]] == [40000, 40001, 40003]
    assert edges["shop/frontend", "shop/database"]["verdict"] == "denied"
    assert edges["shop/frontend", "kube-system/coredns"]["verdict"] == "allowed"


def test_an_edge_keeps_only_its_latest_connections():
    seen = model.connections([record(float(i), "egress", "10.244.0.2", 40000 + i, "10.244.1.2", 8080, True)
                              for i in range(model.EDGE_FLOWS + 5)])
    (edge,) = model.service_map("shop", PODS, SERVICES, seen)["edges"]
    assert edge["allowed"] == model.EDGE_FLOWS + 5
    assert [f["srcPort"] for f in edge["flows"]] == [40005 + i for i in range(model.EDGE_FLOWS)]


def test_the_matrix_view_puts_policies_and_probes_side_by_side():
    pods = ("shop/a", "shop/b")
    static = Matrix(pods, (Cell("shop/a", "shop/a", 80, "TCP", True), Cell("shop/a", "shop/b", 80, "TCP", False),
                           Cell("shop/b", "shop/a", 80, "TCP", True), Cell("shop/b", "shop/b", 80, "TCP", False)))
    probed = Matrix(pods, (Cell("shop/a", "shop/a", 80, "TCP", True), Cell("shop/a", "shop/b", 80, "TCP", True),
                           Cell("shop/b", "shop/a", 80, "TCP", True), Cell("shop/b", "shop/b", 80, "TCP", True)))
    where = {"shop/a": ("10.244.0.2", "node-1"), "shop/b": ("10.244.1.2", "node-2")}
    view = model.matrix(static, probed, where)
    assert view["nodes"] == {"shop/a": "node-1", "shop/b": "node-2"}
    assert view["combinations"] == [{"port": 80, "protocol": "TCP"}] and view["probed"]
    cells = {(c["from"], c["to"]): (c["policy"], c["probed"], c["disagree"], c["self"]) for c in view["cells"]}
    assert cells == {("shop/a", "shop/a"): (True, True, False, True), ("shop/a", "shop/b"): (False, True, True, False),
                     ("shop/b", "shop/a"): (True, True, False, False), ("shop/b", "shop/b"): (False, True, False, True)}
    assert view["disagreements"] == 1
    unprobed = model.matrix(static, None, where)
    assert not unprobed["probed"] and {c["probed"] for c in unprobed["cells"]} == {None}


def test_a_journey_places_each_stage_on_its_node():
    stages = [{"stage": s, "detail": s} for s in ("probe", "conntrack", "vxlan-encap", "vxlan-decap", "ingress-policy",
                                                  "deliver", "result")]
    view = model.journey("shop/a", "node-1", "10.244.1.2:8080", "TCP", stages, split=3, far=3, far_node="node-2",
                         answered=True)
    assert [(s["n"], s["stage"], s["node"], s["leg"]) for s in view["stages"]] == [
        (1, "probe", "node-1", "out"), (2, "conntrack", "node-1", "out"), (3, "vxlan-encap", "node-1", "out"),
        (4, "vxlan-decap", "node-2", "far"), (5, "ingress-policy", "node-2", "far"), (6, "deliver", "node-2", "far"),
        (7, "result", "node-1", "back")]
    assert view["nodes"] == ["node-1", "node-2"] and view["answered"]
    local = model.journey("shop/a", "node-1", "10.244.0.3:80", "TCP", stages[:2], split=2, far=0, far_node=None,
                          answered=False)
    assert local["nodes"] == ["node-1"] and {s["leg"] for s in local["stages"]} == {"out"}


def test_a_stage_that_holds_the_packet_shows_its_layers_and_bytes():
    pipeline_a, pipeline_b = pipelines.node(pipelines.N1, pipelines.A), pipelines.node(pipelines.N2, pipelines.B)
    recorded: list = []
    out = pipeline_a.from_pod(pipelines.A, pipelines.udp_packet(pipelines.A.ip, pipelines.B.ip), 0.0, recorded)
    pipeline_b.from_tunnel(pipelines.N1.address, out[0].datagram, 0.0, recorded)
    stages = [stage.as_dict() for stage in recorded]
    view = model.journey("default/a", "node-1", "10.244.2.2:53", "UDP", stages, split=7, far=len(stages) - 7,
                         far_node="node-2", answered=True)
    shown = {s["stage"]: s for s in view["stages"]}
    encap = shown["vxlan-encap"]
    assert [layer["protocol"] for layer in encap["layers"]] == ["ip", "udp", "vxlan", "eth", "ip", "udp", "data"]
    assert encap["layers"][0]["title"] == "Internet Protocol Version 4, Src: 127.0.0.11, Dst: 127.0.0.12"
    assert ["VXLAN Network Identifier (VNI)", "1"] in encap["layers"][2]["fields"]
    assert encap["length"] == len(recorded[6].packet) and encap["hex"][0].startswith(f"0000  45 00 00 {encap['length']:02x}")
    assert "layers" not in shown["conntrack"] and "packet" not in shown["conntrack"]
    assert json.loads(json.dumps(view)) == view  # what the page is sent: no bytes left in it


def test_sessions_end_at_their_expiry_or_at_logout():
    sessions = access.Sessions(ttl=60.0)
    who = access.Identity("viewer", ("view",), False)
    first = sessions.open("token-1", who, now=1000.0)
    second = sessions.open("token-2", who, now=1000.0)
    assert first != second
    assert sessions.get(first, 1059.0).token == "token-1"
    assert sessions.get(first, 1060.0) is None and sessions.get(first, 1000.0) is None  # gone for good
    assert sessions.get(None, 1000.0) is None and sessions.get("made-up", 1000.0) is None
    assert sessions.tokens() == {"token-2"} and len(sessions) == 1
    assert sessions.close(second).token == "token-2" and len(sessions) == 0
    for now in (1000.0, 1010.0, 1020.0):
        sessions.open(f"token-{now}", who, now)
    assert sessions.expire(1075.0) == 2 and sessions.tokens() == {"token-1020.0"}


def test_nodes_are_listed_in_their_numbers_order():
    nodes = [node(f"node-{i}", True, f"127.0.0.{10 + i}", f"10.244.{i}.0/24") for i in (10, 2, 1)]
    assert [n["name"] for n in model.topology(nodes, [], [], {})["nodes"]] == ["node-1", "node-2", "node-10"]


def test_bgp_sessions_are_shown_on_their_nodes_and_tunnels():
    nodes = [node(f"node-{i}", True, f"127.0.0.{10 + i}", f"10.244.{i}.0/24") for i in (1, 2, 3)]
    bgp = {"node-1": [{"peer": "127.0.0.12", "state": "ESTABLISHED", "prefixes_received": 1},
                      {"peer": "127.0.0.13", "state": "ACTIVE", "prefixes_received": 0}],
           "node-2": [{"peer": "127.0.0.11", "state": "ESTABLISHED", "prefixes_received": 1}]}
    view = model.topology(nodes, [], [], {}, "fou", bgp)
    assert view["nodes"][0]["bgp"] == [{"peer": "node-2", "state": "ESTABLISHED", "prefixes": 1},
                                       {"peer": "node-3", "state": "ACTIVE", "prefixes": 0}]
    assert {(t["a"], t["b"]): t["bgp"] for t in view["tunnels"]} == {
        ("node-1", "node-2"): ["ESTABLISHED", "ESTABLISHED"], ("node-1", "node-3"): ["ACTIVE"], ("node-2", "node-3"): []}
