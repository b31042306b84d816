"""The API server's pure rules: patches, defaulting, validation, selection, tokens and roles."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st
from podnet.apiserver.auth import Authenticator, TokenFileError, parse_token_file
from podnet.apiserver.defaults import apply_defaults
from podnet.apiserver.patch import PatchConflict, PatchError, json_patch, merge_patch, strategic_merge_patch
from podnet.apiserver.rbac.authorizer import Attributes, authorize
from podnet.apiserver.rbac.defaults import default_policy
from podnet.apiserver.selection import FieldSelectorError, make_filter
from podnet.apiserver.validation import Limits, validate, validate_update

from podnet.api.kinds import lookup
from podnet.api.openapi import structure

# --- merge patch (RFC 7386 appendix A) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386_examples(target, patch, result):
    assert merge_patch(target, patch) == result


# --- strategic merge patch ---------------------------------------------------------------------------------

POD = {
    "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
    "spec": {
        "containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]},
            {"name": "side", "image": "busybox"},
        ],
        "tolerations": [{"key": "a"}],
    },
    "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]},
}


@pytest.mark.parametrize(
    ("patch", "check"),
    [
        ({"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}},
         lambda p: [c["image"] for c in p["spec"]["containers"]] == ["nginx:2", "busybox"]
         and len(p["spec"]["containers"][0]["ports"]) == 2),
        ({"spec": {"containers": [{"name": "new", "image": "x"}]}},
         lambda p: [c["name"] for c in p["spec"]["containers"]] == ["web", "side", "new"]),
        ({"spec": {"containers": [{"name": "side", "$patch": "delete"}]}},
         lambda p: [c["name"] for c in p["spec"]["containers"]] == ["web"]),
        ({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80, "name": "web"}]}]}},
         lambda p: p["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]),
        ({"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
         lambda p: p["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]),
        ({"spec": {"tolerations": [{"key": "b"}]}}, lambda p: p["spec"]["tolerations"] == [{"key": "b"}]),
        ({"metadata": {"finalizers": ["y"]}}, lambda p: p["metadata"]["finalizers"] == ["x", "y"]),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}, lambda p: p["metadata"]["finalizers"] == []),
        ({"metadata": {"labels": {"a": None, "b": "2"}}}, lambda p: p["metadata"]["labels"] == {"b": "2"}),
        ({"spec": {"$patch": "replace", "containers": []}}, lambda p: p["spec"] == {"containers": []}),
        ({"spec": {"containers": [{"name": "only", "image": "i"}, {"$patch": "replace"}]}},
         lambda p: p["spec"]["containers"] == [{"name": "only", "image": "i"}]),
    ],
)
def test_strategic_merge_patch_merges_lists_by_their_keys(patch, check):
    original = copy.deepcopy(POD)
    assert check(strategic_merge_patch(POD, patch, "Pod"))
    assert original == POD  # the target is not modified


def test_strategic_merge_patch_merges_service_ports_by_port():
    service = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 53, "name": "dns"}]}}
    patched = strategic_merge_patch(service, {"spec": {"ports": [{"port": 53, "targetPort": 5353}]}}, "Service")
    assert patched["spec"]["ports"] == [{"port": 80, "name": "http"}, {"port": 53, "name": "dns", "targetPort": 5353}]


def test_strategic_merge_patch_replaces_lists_without_a_strategy():
    policy = {"spec": {"ingress": [{"from": [{"podSelector": {}}]}]}}
    assert strategic_merge_patch(policy, {"spec": {"ingress": []}}, "NetworkPolicy") == {"spec": {"ingress": []}}


@pytest.mark.parametrize(
    "patch",
    [["not", "a", "map"], {"spec": {"containers": [{"image": "no-name"}]}}, {"spec": {"$patch": "explode"}}],
)
def test_strategic_merge_patch_rejects_malformed_patches(patch):
    with pytest.raises(PatchError):
        strategic_merge_patch(POD, patch, "Pod")


# --- JSON patch (RFC 6902 appendix A) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "ops", "result"),
    [
        ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"foo": "bar", "baz": "qux"}),
        ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}], {"foo": ["bar", "qux", "baz"]}),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
        ({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}], {"baz": "boo", "foo": "bar"}),
        ({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
         [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
         {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
        ({"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
         {"foo": ["all", "cows", "eat", "grass"]}),
        ({"baz": "qux", "foo": ["a", 2, "c"]},
         [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
         {"baz": "qux", "foo": ["a", 2, "c"]}),
        ({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}], {"foo": "bar", "child": {"grandchild": {}}}),
        ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}], {"foo": ["bar", ["abc", "def"]]}),
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}, {"op": "copy", "from": "/~1", "path": "/x"}],
         {"/": 9, "~1": 10, "x": 9}),
        ({"a": [1, 2, 3]}, [{"op": "replace", "path": "/a/0", "value": 9}], {"a": [9, 2, 3]}),
    ],
)
def test_json_patch_rfc6902_examples(doc, ops, result):
    assert json_patch(doc, ops) == result


@pytest.mark.parametrize(
    ("doc", "ops"),
    [
        ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}]),
        ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}]),
        ({"foo": "bar"}, [{"op": "remove", "path": "/nope"}]),
        ({"foo": "bar"}, [{"op": "replace", "path": "/nope", "value": 1}]),
        ({"foo": [1]}, [{"op": "add", "path": "/foo/5", "value": 1}]),
        ({"foo": [1]}, [{"op": "remove", "path": "/foo/01"}]),
        ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/c"}]),
    ],
)
def test_json_patch_that_cannot_apply_is_a_conflict(doc, ops):
    with pytest.raises(PatchConflict):
        json_patch(doc, ops)


@pytest.mark.parametrize(
    "ops",
    [{"op": "add"}, [{"path": "/a"}], [{"op": "add", "path": "/a"}], [{"op": "frobnicate", "path": "/a"}], [{"op": "add", "path": "a", "value": 1}]],
)
def test_malformed_json_patch_is_an_error(ops):
    with pytest.raises(PatchError):
        json_patch({"a": 1}, ops)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@given(_json, _json)
def test_patches_never_fail_with_anything_but_their_errors(target, patch):
    for apply in (lambda: json_patch(target, patch), lambda: strategic_merge_patch(target, patch, "Pod"), lambda: merge_patch(target, patch)):
        try:
            apply()
        except (PatchError, PatchConflict):
            pass


# --- defaulting and validation -----------------------------------------------------------------------------

LIMITS = Limits()


def checked(kind_name: str, obj: dict) -> list[tuple[str, str]]:
    kind = lookup(kind_name)
    obj = copy.deepcopy(obj)
    obj.setdefault("metadata", {}).setdefault("name", "x")
    if kind.namespaced:
        obj["metadata"].setdefault("namespace", "default")
    apply_defaults(kind.kind, obj)
    return [(c.field, c.reason) for c in validate(kind.kind, obj, LIMITS, namespaced=kind.namespaced)]


def test_service_defaults():
    service = {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}
    apply_defaults("Service", service)
    spec = service["spec"]
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    assert spec["externalTrafficPolicy"] == "Cluster" and spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    cluster_ip = {"spec": {"ports": [{"port": 1}]}}
    apply_defaults("Service", cluster_ip)
    assert "externalTrafficPolicy" not in cluster_ip["spec"] and cluster_ip["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize(
    ("spec", "types"),
    [({}, ["Ingress"]), ({"egress": [{}]}, ["Ingress", "Egress"]), ({"policyTypes": ["Egress"]}, ["Egress"])],
)
def test_network_policy_types_default(spec, types):
    policy = {"spec": dict(spec)}
    apply_defaults("NetworkPolicy", policy)
    assert policy["spec"]["policyTypes"] == types


def test_namespace_label_is_the_name_whatever_was_sent():
    namespace = {"metadata": {"name": "team", "labels": {"kubernetes.io/metadata.name": "other"}}}
    apply_defaults("Namespace", namespace)
    assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team"


CONTAINER = {"name": "c", "image": "i"}


@pytest.mark.parametrize(
    ("kind", "obj", "errors"),
    [
        ("Pod", {"spec": {"containers": [CONTAINER]}}, []),
        ("Pod", {"metadata": {"name": "Bad_Name"}, "spec": {"containers": [CONTAINER]}}, [("metadata.name", "FieldValueInvalid")]),
        ("Pod", {"metadata": {"labels": {"bad key!": "v"}}, "spec": {"containers": [CONTAINER]}}, [("metadata.labels", "FieldValueInvalid")]),
        ("Pod", {"metadata": {"labels": {"k": "-v"}}, "spec": {"containers": [CONTAINER]}}, [("metadata.labels", "FieldValueInvalid")]),
        ("Pod", {"spec": {"containers": []}}, [("spec.containers", "FieldValueRequired")]),
        ("Pod", {"spec": {"containers": [CONTAINER, CONTAINER]}}, [("spec.containers[1].name", "FieldValueDuplicate")]),
        ("Pod", {"spec": {"containers": [{"name": "c"}]}}, [("spec.containers[0].image", "FieldValueRequired")]),
        ("Pod", {"spec": {"containers": [{**CONTAINER, "ports": [{"containerPort": 70000}]}]}},
         [("spec.containers[0].ports[0].containerPort", "FieldValueInvalid")]),
        ("Pod", {"spec": {"containers": [{**CONTAINER, "ports": [{"containerPort": 80, "protocol": "ICMP"}]}]}},
         [("spec.containers[0].ports[0].protocol", "FieldValueNotSupported")]),
        ("Pod", {"spec": {"containers": [{**CONTAINER, "ports": [{"containerPort": 80, "name": "much-too-long-port-name"}]}]}},
         [("spec.containers[0].ports[0].name", "FieldValueInvalid")]),
        ("Pod", {"spec": {"containers": [{**CONTAINER, "ports": [{"containerPort": 80, "name": "a"}, {"containerPort": 81, "name": "a"}]}]}},
         [("spec.containers[0].ports[1].name", "FieldValueDuplicate")]),
        ("Pod", {"spec": {"containers": [CONTAINER], "restartPolicy": "Sometimes"}}, [("spec.restartPolicy", "FieldValueNotSupported")]),
        ("Service", {"spec": {"ports": [{"port": 80}]}}, []),
        ("Service", {"metadata": {"name": "1abc"}, "spec": {"ports": [{"port": 80}]}}, [("metadata.name", "FieldValueInvalid")]),
        ("Service", {"spec": {"ports": []}}, [("spec.ports", "FieldValueRequired")]),
        ("Service", {"spec": {"clusterIP": "None", "ports": []}}, []),
        ("Service", {"spec": {"ports": [{"port": 80}, {"port": 81}]}},
         [("spec.ports[0].name", "FieldValueRequired"), ("spec.ports[1].name", "FieldValueRequired")]),
        ("Service", {"spec": {"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}}, [("spec.ports[1].name", "FieldValueDuplicate")]),
        ("Service", {"spec": {"ports": [{"port": 80, "targetPort": "not_a_name"}]}}, [("spec.ports[0].targetPort", "FieldValueInvalid")]),
        ("Service", {"spec": {"ports": [{"port": 80, "nodePort": 30001}]}}, [("spec.ports[0].nodePort", "FieldValueForbidden")]),
        ("Service", {"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}}, [("spec.ports[0].nodePort", "FieldValueInvalid")]),
        ("Service", {"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}, []),
        ("Service", {"spec": {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}}, [("spec.clusterIPs[0]", "FieldValueInvalid")]),
        ("Service", {"spec": {"clusterIP": "192.168.1.1", "ports": [{"port": 80}]}}, [("spec.clusterIPs", "FieldValueInvalid")]),
        ("Service", {"spec": {"type": "Weird", "ports": [{"port": 80}]}}, [("spec.type", "FieldValueNotSupported")]),
        ("Service", {"spec": {"ports": [{"port": 80}], "externalTrafficPolicy": "Local"}}, [("spec.externalTrafficPolicy", "FieldValueInvalid")]),
        ("Service", {"spec": {"ports": [{"port": 80}], "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}},
         [("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "FieldValueInvalid")]),
        ("Service", {"spec": {"ports": [{"port": 80}], "ipFamilies": ["IPv4", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}}, [("spec.ipFamilies[1]", "FieldValueDuplicate")]),
        ("Service", {"spec": {"type": "ExternalName"}}, [("spec.externalName", "FieldValueRequired")]),
        ("NetworkPolicy", {"spec": {"podSelector": {}}}, []),
        ("NetworkPolicy", {"spec": {"ingress": [{"ports": [{"port": 80, "endPort": 90}]}]}}, []),
        ("NetworkPolicy", {"spec": {"ingress": [{"ports": [{"endPort": 90}]}]}}, [("spec.ingress[0].ports[0].port", "FieldValueRequired")]),
        ("NetworkPolicy", {"spec": {"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}},
         [("spec.ingress[0].ports[0].endPort", "FieldValueForbidden")]),
        ("NetworkPolicy", {"spec": {"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}}, [("spec.ingress[0].ports[0].endPort", "FieldValueInvalid")]),
        ("NetworkPolicy", {"spec": {"egress": [{"ports": [{"protocol": "GRE"}]}]}}, [("spec.egress[0].ports[0].protocol", "FieldValueNotSupported")]),
        ("NetworkPolicy", {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}},
         [("spec.ingress[0].from[0].ipBlock.cidr", "FieldValueInvalid")]),
        ("NetworkPolicy", {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]}},
         [("spec.ingress[0].from[0].ipBlock.except[0]", "FieldValueInvalid")]),
        ("NetworkPolicy", {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}}, []),
        ("NetworkPolicy", {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}},
         [("spec.ingress[0].from[0]", "FieldValueForbidden")]),
        ("NetworkPolicy", {"spec": {"ingress": [{"from": [{}]}]}}, [("spec.ingress[0].from[0]", "FieldValueRequired")]),
        ("NetworkPolicy", {"spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}},
         [("spec.podSelector", "FieldValueInvalid")]),
        ("NetworkPolicy", {"spec": {"policyTypes": ["Ingress", "Sideways"]}}, [("spec.policyTypes[1]", "FieldValueNotSupported")]),
        ("Namespace", {"metadata": {"name": "has.dot"}}, [("metadata.name", "FieldValueInvalid")]),
        ("Deployment", {"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "c"}}, "spec": {"containers": [CONTAINER]}}}},
         [("spec.template.metadata.labels", "FieldValueInvalid")]),
        ("EndpointSlice", {"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.300"]}]}, [("endpoints[0].addresses[0]", "FieldValueInvalid")]),
    ],
)
def test_validation(kind, obj, errors):
    assert checked(kind, obj) == errors


@given(st.dictionaries(st.sampled_from(["spec", "metadata", "status", "subsets", "endpoints"]), _json, max_size=3))
def test_validation_never_raises_on_any_shape_the_schema_admits(obj):
    """As in the server: a body is decoded against its kind's schema first; validation sees what passed."""
    for kind in ("Pod", "Service", "NetworkPolicy", "Node", "Endpoints", "EndpointSlice", "Lease", "Deployment", "Namespace"):
        decoded = structure.decode(structure.members(copy.deepcopy(obj)), lookup(kind).definition)
        if decoded.type_error:
            continue
        candidate = decoded.value
        candidate["metadata"] = candidate.get("metadata") or {}
        apply_defaults(kind, candidate)
        validate(kind, candidate, LIMITS, namespaced=True)


BOUND = {"spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i:1", "ports": [{"containerPort": 80}]}]}}
UNBOUND = {"spec": {"containers": [{"name": "c", "image": "i:1", "ports": [{"containerPort": 80}]}]}}


@pytest.mark.parametrize(
    ("old", "change", "errors"),
    [
        (BOUND, lambda s: s["containers"][0].update(image="i:2"), []),
        (BOUND, lambda s: s.update(tolerations=[{"key": "k", "operator": "Exists"}], activeDeadlineSeconds=5), []),
        (BOUND, lambda s: s["containers"][0]["ports"][0].update(containerPort=81), [("spec", "FieldValueForbidden")]),
        (BOUND, lambda s: s["containers"].append({"name": "d", "image": "i"}), [("spec", "FieldValueForbidden")]),
        (BOUND, lambda s: s.update(nodeName="node-2"), [("spec", "FieldValueForbidden")]),
        (UNBOUND, lambda s: s.update(nodeName="node-2"), []),
    ],
)
def test_pod_updates_change_only_what_kubernetes_lets_change(old, change, errors):
    new = copy.deepcopy(old)
    change(new["spec"])
    assert [(c.field, c.reason) for c in validate_update("Pod", old, new)] == errors


def test_a_service_keeps_its_cluster_ip():
    old = {"spec": {"clusterIP": "10.96.0.5"}}
    assert validate_update("Service", old, {"spec": {"clusterIP": "10.96.0.5", "ports": []}}) == []
    assert validate_update("Service", old, {"spec": {"type": "ExternalName", "externalName": "x"}}) == []
    assert [c.field for c in validate_update("Service", old, {"spec": {"clusterIP": "10.96.0.6"}})] == ["spec.clusterIPs[0]"]


# --- selection ---------------------------------------------------------------------------------------------


def test_field_and_label_selection():
    pod = {"metadata": {"name": "a", "namespace": "n", "labels": {"app": "web"}}, "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}}
    assert make_filter("app=web", "spec.nodeName=node-1,status.phase!=Pending", lookup("pods")).matches(pod)
    assert not make_filter(None, "spec.nodeName=", lookup("pods")).matches(pod)
    assert make_filter(None, "metadata.name==a", lookup("pods")).name() == "a"
    with pytest.raises(FieldSelectorError):
        make_filter(None, "spec.nodeName=x", lookup("services"))
    with pytest.raises(ValueError):
        make_filter("a in (", None, lookup("pods"))


# --- tokens and roles --------------------------------------------------------------------------------------


def test_token_file_and_roles():
    users = parse_token_file('# comment\nt1,alice,1,"system:masters"\nt2,victor,2,"view,other"\nt3,eddie,3,"edit:team-a"\nt4,nora,4\n')
    authenticator = Authenticator(users)
    alice, victor, eddie, nora = (authenticator.authenticate(f"Bearer {t}") for t in ("t1", "t2", "t3", "t4"))
    assert authenticator.authenticate("Bearer nope") is None and authenticator.authenticate(None) is None
    assert authenticator.authenticate("Basic t1") is None
    assert victor is not None and victor.groups == ("view", "other", "system:authenticated")
    # The token file's groups mean, under the default RBAC policy, what they meant before RBAC.
    policy = default_policy()

    def may(user, verb, namespace="", resource="pods", group=""):
        return authorize(user, Attributes(verb, namespace, group, resource), policy).allowed

    assert may(alice, "delete", resource="nodes")
    assert may(victor, "watch", "x") and not may(victor, "create", "x")
    assert may(eddie, "create", "team-a") and may(eddie, "list", "team-a")
    assert not may(eddie, "create", "team-b")
    assert not may(eddie, "list")  # all namespaces is not its namespace
    assert not may(eddie, "create", resource="namespaces")
    assert not may(nora, "get", "x")
    assert Authenticator(None).authenticate(None) is not None
    with pytest.raises(TokenFileError):
        parse_token_file("only-a-token\n")
