"""The agent's L7 enforcer between the informers and the pipeline, without a server: its informers' caches
filled as a list would fill them, then the verdicts the pipeline's hook gives and the L7 verdict a
virtual pod's stack picks up; HTTP rules the agent cannot enforce refuse the connection instead of
letting it through unfiltered."""

from __future__ import annotations

import yaml
from podnet.nodeagent.l7enforcer import L7Enforcer
from podnet.nodeagent.netpol import PolicyEnforcer
from podnet.nodeagent.policy import EGRESS, INGRESS, Flow
from support.l7pods import running_pod

from podnet.client import ApiClient

BACKEND, FRONTEND, STRANGER = "10.244.1.10", "10.244.2.20", "10.244.2.30"
POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-l7, namespace: default, resourceVersion: "7"}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules: {http: [{method: GET, path: "/api/.*"}]}
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
    toPorts:
    - ports: [{port: "5432"}]
      rules: {http: [{method: GET}]}
"""


def enforcer(proxied=(BACKEND,)) -> tuple[PolicyEnforcer, L7Enforcer]:
    client = ApiClient("http://127.0.0.1:9")  # never asked: the caches are filled below
    policies = PolicyEnforcer(client, "node-1")
    l7 = L7Enforcer(client, policies)
    l7.proxied = lambda ip: ip in proxied
    objects = {
        "Namespace": [{"kind": "Namespace", "metadata": {"name": "default", "resourceVersion": "1"}}],
        "Pod": [
            running_pod("backend", BACKEND, "backend"),
            running_pod("frontend", FRONTEND, "frontend", node="node-2"),
            running_pod("stranger", STRANGER, "stranger", node="node-2"),
            running_pod("db", "10.244.2.40", "db", node="node-2"),
        ],
        "NetworkPolicy": [],
    }
    for kind, items in objects.items():
        informer = policies.informers[kind]
        for obj in items:
            informer.store[f"default/{obj['metadata']['name']}"] = obj
            informer._emit("ADDED", None, obj)
        informer.synced = True
    cnp = yaml.safe_load(POLICY)
    l7.informers["CiliumNetworkPolicy"].store["default/backend-l7"] = cnp
    l7.informers["CiliumNetworkPolicy"]._emit("ADDED", None, cnp)
    return policies, l7


def test_l7_connection_is_allowed_and_its_rules_handed_to_the_stack_once():
    policies, l7 = enforcer()
    verdict = policies.verdict(INGRESS, Flow("TCP", FRONTEND, 40001, BACKEND, 8080))
    assert verdict.allowed
    assert verdict.reason == "allowed at L4 by default/backend-l7 ingress rule 0; HTTP filtered"
    assert verdict.l7 == (
        "each HTTP request goes through the L7 proxy on node-1: allowed if it matches default/backend-l7 "
        "ingress rule 0 http[0] method='GET' path='/api/.*'; otherwise answered 403 Access denied"
    )
    handed = l7.l7_for(FRONTEND, 40001, BACKEND, 8080)
    assert handed is not None and [r.rule.text for r in handed.l7] == ["method='GET' path='/api/.*'"]
    assert l7.l7_for(FRONTEND, 40001, BACKEND, 8080) is None
    # the flow log records the combined verdict
    (record,) = list(policies.flowlog.records())
    assert record.reason == verdict.reason


def test_cilium_default_deny_refuses_other_peers_and_ports():
    policies, l7 = enforcer()
    assert not policies.verdict(INGRESS, Flow("TCP", STRANGER, 40002, BACKEND, 8080)).allowed
    assert not policies.verdict(INGRESS, Flow("TCP", FRONTEND, 40003, BACKEND, 9090)).allowed
    assert l7.l7_for(STRANGER, 40002, BACKEND, 8080) is None


def test_http_rules_without_a_proxy_refuse_rather_than_let_requests_through_unfiltered():
    policies, _ = enforcer(proxied=())
    refused = policies.verdict(INGRESS, Flow("TCP", FRONTEND, 40004, BACKEND, 8080))
    assert not refused.allowed
    assert refused.reason == (
        "denied: HTTP rules of default/backend-l7 cover it and podnet has no L7 proxy for a relayed pod's ports yet"
    )
    egress = policies.verdict(EGRESS, Flow("TCP", BACKEND, 40005, "10.244.2.40", 5432))
    assert not egress.allowed and "no L7 proxy for a relayed pod's ports" in egress.reason


def test_egress_http_rules_hand_the_verdict_to_the_dataplane_by_source():
    policies, l7 = enforcer()
    assert not l7.pending_egress
    egress = policies.verdict(EGRESS, Flow("TCP", BACKEND, 40007, "10.244.2.40", 5432))
    assert egress.allowed and egress.reason.endswith("HTTP filtered")
    assert list(l7.pending_egress) == [(BACKEND, 40007)]
    handed = l7.l7_egress_for(BACKEND, 40007)
    assert handed is not None and handed.direction == EGRESS
    assert [r.rule.text for r in handed.l7] == ["method='GET'"]
    assert l7.l7_egress_for(BACKEND, 40007) is None and not l7.pending_egress


def test_invalid_policy_is_reported_and_not_enforced():
    policies, l7 = enforcer()
    bad = yaml.safe_load(POLICY)
    bad["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"][0]["path"] = "/api/("
    l7.informers["CiliumNetworkPolicy"].store["default/backend-l7"] = bad
    l7.informers["CiliumNetworkPolicy"]._emit("MODIFIED", None, bad)
    assert policies.verdict(INGRESS, Flow("TCP", STRANGER, 40006, BACKEND, 8080)).allowed
    assert list(l7.errors) == ["CiliumNetworkPolicy/default/backend-l7"]


def test_host_entity_is_the_judging_nodes_address_from_its_node_object():
    policies, l7 = enforcer()
    for name, address in (("node-1", "127.0.0.11"), ("node-2", "127.0.0.12")):
        node = {"kind": "Node", "metadata": {"name": name, "resourceVersion": "1"},
                "status": {"addresses": [{"type": "InternalIP", "address": address}]}}
        l7.nodes.store[name] = node
        l7.nodes._emit("ADDED", None, node)
    to_host = yaml.safe_load("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-host, namespace: default, resourceVersion: "8"}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  egress:
  - toEntities: [host]
    toPorts: [{ports: [{port: "10250"}]}]
""")
    l7.informers["CiliumNetworkPolicy"].store["default/backend-host"] = to_host
    l7.informers["CiliumNetworkPolicy"]._emit("ADDED", None, to_host)
    assert policies.verdict(EGRESS, Flow("TCP", BACKEND, 40008, "127.0.0.11", 10250)).allowed
    denied = policies.verdict(EGRESS, Flow("TCP", BACKEND, 40009, "127.0.0.12", 10250))
    assert not denied.allowed, denied
