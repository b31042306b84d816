"""CiliumNetworkPolicy compilation, the HTTP rule matcher and the verdict combined with NetworkPolicies,
without sockets. Policies are the examples of Cilium's documentation (Layer 7 Policies, Deny Policies,
the Star Wars demo) unless a case says otherwise."""

from __future__ import annotations

import pytest
import yaml
from podnet.nodeagent.l7.cilium import CiliumPolicyIndex
from podnet.nodeagent.l7.explain import explain_request, parse_request_line
from podnet.nodeagent.l7.verdict import ACCESS_DENIED_BODY, access_denied_response, combine, judge_request
from podnet.nodeagent.policy import EGRESS, INGRESS, Flow, compile_objects
from podnet.nodeagent.policy.compile import pod_info
from support.l7pods import running_pod

from podnet.api.ciliumpolicy import parse_cilium_policy
from podnet.api.httprules import HttpRequestHead, RuleError, parse_http_rule

PODS = [
    running_pod("backend", "10.244.1.10", "backend"),
    running_pod("frontend", "10.244.1.20", "frontend"),
    running_pod("stranger", "10.244.1.30", "stranger"),
    running_pod("frontend-other-ns", "10.244.1.40", "frontend", namespace="shop"),
]
BACKEND, FRONTEND, STRANGER, FRONTEND_SHOP = (p["status"]["podIP"] for p in PODS)

BACKEND_L7 = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-l7, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: frontend}
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http:
        - method: GET
          path: "/api/.*"
"""


def index(*policies, pods=PODS):
    specs = [parse_cilium_policy(yaml.safe_load(p) if isinstance(p, str) else p) for p in policies]
    return CiliumPolicyIndex(specs, [pod_info(p) for p in pods])


def decide(idx, src, dst=BACKEND, port=8080, objects=()):
    flow = Flow("TCP", src, 40000, dst, port)
    np = compile_objects([*PODS, *objects]).verdict(INGRESS, flow)
    return combine(np, idx.decide(INGRESS, flow))


def request(method, target, **headers):
    return HttpRequestHead(method, target, tuple((k.replace("_", "-"), v) for k, v in headers.items()))


# -- the HTTP matcher ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule, req, matches",
    [
        # path is a regular expression matched against the whole path
        ({"method": "GET", "path": "/public"}, request("GET", "/public"), True),
        ({"method": "GET", "path": "/public"}, request("GET", "/public/secret"), False),
        ({"method": "GET", "path": "/public"}, request("GET", "/publicity"), False),
        ({"method": "GET", "path": "/public"}, request("GET", "/private"), False),
        ({"path": "/api/.*"}, request("GET", "/api/items"), True),
        ({"path": "/api/.*"}, request("GET", "/admin/api/items"), False),
        ({"path": "/v1/request-landing"}, request("POST", "/v1/request-landing"), True),
        # method is a regular expression too
        ({"method": "GET|HEAD"}, request("HEAD", "/"), True),
        ({"method": "GET|HEAD"}, request("GET", "/"), True),
        ({"method": "GET|HEAD"}, request("DELETE", "/"), False),
        ({"method": "GET"}, request("GETX", "/"), False),
        ({"method": "POST", "path": "/v1/request-landing"}, request("PUT", "/v1/request-landing"), False),
        # headers: presence, or `Name: value` for an exact value; names without regard to case
        (
            {"path": "/path2$", "headers": ["X-My-Header: true"]},
            request("PUT", "/path2", x_my_header="true"),
            True,
        ),
        (
            {"path": "/path2$", "headers": ["X-My-Header: true"]},
            request("PUT", "/path2", X_MY_HEADER="true"),
            True,
        ),
        (
            {"path": "/path2$", "headers": ["X-My-Header: true"]},
            request("PUT", "/path2", x_my_header="false"),
            False,
        ),
        ({"path": "/path2$", "headers": ["X-My-Header: true"]}, request("PUT", "/path2"), False),
        ({"headers": ["X-Token"]}, request("GET", "/", X_Token="anything"), True),
        ({"headers": ["X-Token"]}, request("GET", "/"), False),
        # host, against the Host header as sent
        ({"host": r"backend\.shop(:8080)?"}, request("GET", "/", Host="backend.shop:8080"), True),
        ({"host": r"backend\.shop(:8080)?"}, request("GET", "/", Host="evil.backend.shop"), False),
        ({"host": r"backend\.shop(:8080)?"}, request("GET", "/"), False),
        # an empty rule matches every request
        ({}, request("PATCH", "/anything"), True),
    ],
)
def test_http_rule_matches_like_cilium(rule, req, matches):
    assert parse_http_rule(rule, "http[0]").matches(req) is matches


@pytest.mark.parametrize(
    "rule, field, detail",
    [
        ({"path": "/api/(items"}, "http[0].path", "invalid regular expression"),
        ({"path": "/(?=x)"}, "http[0].path", "not RE2"),
        ({"method": "FETCH"}, "http[0].method", "matches no HTTP method"),
        ({"method": "GET["}, "http[0].method", "invalid regular expression"),
        ({"host": 7}, "http[0].host", "must be a string"),
        ({"headers": "X-Token"}, "http[0].headers", "must be a list"),
    ],
)
def test_bad_http_rules_name_their_field(rule, field, detail):
    with pytest.raises(RuleError) as e:
        parse_http_rule(rule, "http[0]")
    assert e.value.field == field
    assert detail in e.value.detail


def test_bad_rule_deep_in_a_policy_names_the_whole_path():
    bad = yaml.safe_load(BACKEND_L7)
    bad["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"][0]["method"] = "YANK"
    with pytest.raises(RuleError) as e:
        parse_cilium_policy(bad)
    assert e.value.field == "spec.ingress[0].toPorts[0].rules.http[0].method"


# -- Cilium's policies alone -------------------------------------------------------------------------


def test_l7_rule_filters_requests_from_the_selected_peers_only():
    idx = index(BACKEND_L7)
    allowed = decide(idx, FRONTEND)
    assert allowed.allowed and allowed.l7 is not None
    assert judge_request(allowed, request("GET", "/api/items")).allowed
    denied = judge_request(allowed, request("DELETE", "/api/items"))
    assert not denied.allowed
    assert denied.reason == "denied by default/backend-l7 ingress rule 0: no HTTP rule matched"
    assert not judge_request(allowed, request("GET", "/admin")).allowed
    # a pod without the label gets no connection at all
    stranger = decide(idx, STRANGER)
    assert not stranger.allowed and stranger.l7 is None
    # nor does a frontend of another namespace: the selector names no namespace, so it means the policy's
    assert not decide(idx, FRONTEND_SHOP).allowed
    # another port of the backend is not allowed either: the pod is in default deny at ingress
    assert not decide(idx, FRONTEND, port=9090).allowed


def test_namespace_label_opens_a_peer_selector_to_another_namespace():
    policy = yaml.safe_load(BACKEND_L7)
    policy["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"]["k8s:io.kubernetes.pod.namespace"] = (
        "shop"
    )
    idx = index(policy)
    assert decide(idx, FRONTEND_SHOP).allowed
    assert not decide(idx, FRONTEND).allowed


def test_clusterwide_policy_selects_pods_of_every_namespace():
    ccnp = {
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "frontends-closed"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "frontend"}}, "ingress": [{}]},
    }
    idx = index(ccnp)
    assert not decide(idx, BACKEND, dst=FRONTEND).allowed
    assert not decide(idx, BACKEND, dst=FRONTEND_SHOP).allowed
    assert decide(idx, FRONTEND, dst=BACKEND).allowed  # the backend is not selected


def test_rule_with_ports_and_no_peer_field_allows_every_peer():
    idx = index(
        {
            "metadata": {"name": "l4-any", "namespace": "default"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "backend"}},
                "ingress": [{"toPorts": [{"ports": [{"port": "8080"}]}]}],
            },
        }
    )
    assert decide(idx, STRANGER).allowed
    assert decide(idx, STRANGER).l7 is None
    assert not decide(idx, STRANGER, port=9090).allowed


def test_default_deny_can_be_switched_off():
    policy = yaml.safe_load(BACKEND_L7)
    policy["spec"]["enableDefaultDeny"] = {"ingress": False}
    idx = index(policy)
    assert decide(idx, STRANGER).allowed
    assert decide(idx, FRONTEND).l7 is not None


def test_l4_rule_on_the_same_port_makes_the_l7_rules_void_for_its_peers():
    """'If a layer 4 rule is specified in the policy, and a similar layer 4 rule with layer 7 rules is
    also specified, then the layer 7 portions of the latter rule will have no effect.'"""
    policy = yaml.safe_load(BACKEND_L7)
    policy["spec"]["ingress"].append(
        {"fromEndpoints": [{"matchLabels": {"app": "frontend"}}], "toPorts": [{"ports": [{"port": "8080"}]}]}
    )
    verdict = decide(index(policy), FRONTEND)
    assert verdict.allowed and verdict.l7 is None
    assert verdict.reason == "allowed by default/backend-l7 ingress rule 1"


def test_http_rules_of_two_policies_on_one_port_add_up():
    second = yaml.safe_load(BACKEND_L7.replace("backend-l7", "backend-health"))
    second["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"] = [{"method": "HEAD", "path": "/healthz"}]
    verdict = decide(index(BACKEND_L7, second), FRONTEND)
    assert judge_request(verdict, request("HEAD", "/healthz")).allowed
    assert judge_request(verdict, request("GET", "/api/x")).allowed
    assert not judge_request(verdict, request("GET", "/healthz")).allowed


# -- together with Kubernetes NetworkPolicies -------------------------------------------------------

NP_FRONTEND_TO_BACKEND = {
    "kind": "NetworkPolicy",
    "metadata": {"name": "backend-l4", "namespace": "default"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "backend"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}], "ports": [{"port": 8080}]}
        ],
    },
}
NP_BACKEND_CLOSED = {
    "kind": "NetworkPolicy",
    "metadata": {"name": "backend-closed", "namespace": "default"},
    "spec": {"podSelector": {"matchLabels": {"app": "backend"}}, "policyTypes": ["Ingress"]},
}
DENY_STRANGER = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-strangers, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {app: stranger}
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
"""


def test_no_policy_at_all_allows_without_filtering():
    verdict = decide(index(), STRANGER)
    assert verdict.allowed and verdict.l7 is None


def test_networkpolicy_isolation_with_an_l7_allow_filters_requests():
    verdict = decide(index(BACKEND_L7), FRONTEND, objects=[NP_BACKEND_CLOSED])
    assert verdict.allowed and verdict.l7 is not None
    assert not judge_request(verdict, request("DELETE", "/api/items")).allowed
    assert not decide(index(BACKEND_L7), STRANGER, objects=[NP_BACKEND_CLOSED]).allowed


def test_networkpolicy_allow_at_l4_makes_the_l7_rule_void_for_its_peers():
    verdict = decide(index(BACKEND_L7), FRONTEND, objects=[NP_FRONTEND_TO_BACKEND])
    assert verdict.allowed and verdict.l7 is None
    assert verdict.policy == "default/backend-l4"


def test_networkpolicy_isolates_even_when_no_cilium_policy_selects_the_pod():
    assert not decide(index(), STRANGER, objects=[NP_FRONTEND_TO_BACKEND]).allowed


def test_deny_wins_over_every_allow_of_both_kinds():
    policy = yaml.safe_load(BACKEND_L7)
    policy["spec"]["ingress"].append({"toPorts": [{"ports": [{"port": "8080"}]}]})
    everyone = {
        **NP_FRONTEND_TO_BACKEND,
        "spec": {"podSelector": {"matchLabels": {"app": "backend"}}, "ingress": [{}]},
    }
    verdict = decide(index(policy, DENY_STRANGER), STRANGER, objects=[everyone])
    assert not verdict.allowed
    assert verdict.reason == "denied by default/no-strangers ingressDeny rule 0"
    # the deny names a port: others stay as the allows say
    assert decide(index(policy, DENY_STRANGER), STRANGER, port=9090, objects=[everyone]).allowed


def test_deny_only_policy_puts_the_pod_in_default_deny_like_cilium():
    assert not decide(index(DENY_STRANGER), FRONTEND).allowed


def test_deny_rules_cannot_carry_l7_rules():
    bad = yaml.safe_load(DENY_STRANGER)
    bad["spec"]["ingressDeny"][0]["toPorts"][0]["rules"] = {"http": [{"method": "GET"}]}
    with pytest.raises(RuleError) as e:
        parse_cilium_policy(bad)
    assert e.value.field == "spec.ingressDeny[0].toPorts[0].rules"


def test_denied_request_gets_ciliums_exact_403():
    assert ACCESS_DENIED_BODY == b"Access denied\r\n"
    assert access_denied_response() == (
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n\r\nAccess denied\r\n"
    )
    assert b"connection: close\r\n" in access_denied_response(keep_alive=False)


def test_explain_names_the_rule_deciding_a_request():
    objects = [*PODS, yaml.safe_load(BACKEND_L7) | {"kind": "CiliumNetworkPolicy"}]
    denied = explain_request(objects, FRONTEND, BACKEND, 8080, "DELETE", "/api/items")
    assert not denied.allowed
    assert denied.text() == (
        "http DELETE /api/items: denied: answered 403 by the proxy\n"
        "  egress at the source: allowed: no policy selects the pod\n"
        "  ingress at the destination: allowed at L4 by default/backend-l7 ingress rule 0; HTTP filtered\n"
        "    DELETE /api/items: denied by default/backend-l7 ingress rule 0: no HTTP rule matched"
    )
    assert explain_request(objects, FRONTEND, BACKEND, 8080, "GET", "/api/items").allowed
    stranger = explain_request(objects, STRANGER, BACKEND, 8080, "GET", "/api/items")
    assert stranger.text().startswith("http GET /api/items: denied at L3/L4 (no connection)")


@pytest.mark.parametrize("text", ["DELETE", "/api", "DELETE api", "GET /a /b"])
def test_explain_request_line_is_checked(text):
    with pytest.raises(ValueError, match="METHOD /PATH"):
        parse_request_line(text)


# -- CIDR and entity peers (Cilium's "Layer 3 Examples") --------------------------------------------
NODE_1, NODE_2, OUTSIDE = "127.0.0.11", "127.0.0.12", "203.0.113.7"


def peers_index(rule: dict, direction: str = "ingress"):
    policy = {
        "metadata": {"name": "peers", "namespace": "default"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "backend"}}, direction: [rule]},
    }
    spec = parse_cilium_policy(policy)
    return CiliumPolicyIndex([spec], [pod_info(p) for p in PODS], host_addresses=[NODE_1],
                             node_addresses=[NODE_1, NODE_2])


def ingress_from(idx, src) -> bool:
    return bool(idx.decide(INGRESS, Flow("TCP", src, 40000, BACKEND, 8080)).allows)


def egress_to(idx, dst) -> bool:
    return bool(idx.decide(EGRESS, Flow("TCP", BACKEND, 40000, dst, 443)).allows)


@pytest.mark.parametrize(
    ("entities", "allowed"),
    [
        (["world"], {OUTSIDE}),
        (["cluster"], {FRONTEND, NODE_1, NODE_2}),
        (["host"], {NODE_1}),
        (["remote-node"], {NODE_2}),
        (["all"], {FRONTEND, NODE_1, NODE_2, OUTSIDE}),
        (["none"], set()),
        (["world", "host"], {OUTSIDE, NODE_1}),
    ],
)
def test_entities_match_their_kind_of_peer(entities, allowed):
    idx = peers_index({"fromEntities": entities})
    assert {src for src in (FRONTEND, NODE_1, NODE_2, OUTSIDE) if ingress_from(idx, src)} == allowed


def test_cidr_matches_addresses_outside_the_cluster_only_less_its_exceptions():
    idx = peers_index({"toCIDRSet": [{"cidr": "0.0.0.0/0", "except": ["203.0.113.0/28"]}],
                       "toCIDR": ["10.244.0.0/16"]}, "egress")
    # A pod's address and a node's are never a CIDR's, even inside it (Cilium: CIDR rules do not apply
    # to traffic between endpoints it manages or nodes of the cluster).
    assert not egress_to(idx, FRONTEND) and not egress_to(idx, NODE_2)
    assert egress_to(idx, "198.51.100.1") and egress_to(idx, "10.244.9.9")
    assert not egress_to(idx, OUTSIDE)  # in the exception


def test_cidr_rule_with_http_rules_filters_requests_to_the_outside():
    idx = peers_index({"toCIDR": ["198.51.100.0/24"], "toPorts": [
        {"ports": [{"port": "443"}], "rules": {"http": [{"method": "GET"}]}}]}, "egress")
    decision = idx.decide(EGRESS, Flow("TCP", BACKEND, 40000, "198.51.100.1", 443))
    assert [a.http is not None for a in decision.allows] == [True] and decision.isolated


@pytest.mark.parametrize(
    ("rule", "field", "detail"),
    [
        ({"fromCIDR": ["10.0.0.0/33"]}, "spec.ingress[0].fromCIDR[0]", "invalid CIDR"),
        ({"fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["x"]}]}, "spec.ingress[0].fromCIDRSet[0].except[0]",
         "invalid CIDR"),
        ({"fromEntities": ["everyone"]}, "spec.ingress[0].fromEntities[0]", "must be one of all, world"),
    ],
)
def test_bad_peers_name_their_field(rule, field, detail):
    with pytest.raises(RuleError) as error:
        peers_index(rule)
    assert error.value.field == field and detail in str(error.value)


def test_entities_podnet_does_not_tell_apart_are_reported_and_match_nothing():
    policy = {
        "metadata": {"name": "peers", "namespace": "default"},
        "spec": {"endpointSelector": {}, "ingress": [{"fromEntities": ["kube-apiserver"]}]},
    }
    spec = parse_cilium_policy(policy)
    assert spec.unsupported == ("spec.ingress[0].fromEntities[0]: kube-apiserver",)
    assert not ingress_from(CiliumPolicyIndex([spec], [pod_info(p) for p in PODS]), OUTSIDE)
