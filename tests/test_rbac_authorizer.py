"""The RBAC authorizer, aggregation, bootstrap reconciliation, validation and escalation prevention
(apiserver/rbac/), without a server: table cases as Kubernetes' own RBAC authorizer tests have them."""

from __future__ import annotations

import pytest
from podnet.apiserver import protobuf
from podnet.apiserver.auth import AUTHENTICATED_GROUP, User
from podnet.apiserver.rbac import escalation
from podnet.apiserver.rbac.aggregation import aggregated_rules, settle
from podnet.apiserver.rbac.authorizer import Attributes, Policy, authorize, covers, rule_allows
from podnet.apiserver.rbac.defaults import AUTOUPDATE, cluster_role, default_policy, reconcile, rule, url_rule
from podnet.apiserver.status import ApiError
from podnet.apiserver.validation import Limits, validate, validate_update

from podnet.api.kinds import lookup
from podnet.cluster import credentials

RBAC = "rbac.authorization.k8s.io"


def attrs(verb: str, resource: str = "pods", namespace: str = "team-a", *, group: str = "", sub: str = "",
          name: str = "") -> Attributes:
    return Attributes(verb, namespace, group, resource, sub, name)


@pytest.mark.parametrize(
    "rule_, attributes, allowed",
    [
        (rule(["get"], [""], ["pods"]), attrs("get"), True),
        (rule(["get"], [""], ["pods"]), attrs("list"), False),
        (rule(["*"], [""], ["pods"]), attrs("deletecollection"), True),
        (rule(["get"], ["apps"], ["pods"]), attrs("get"), False),  # the wrong group
        (rule(["get"], ["*"], ["deployments"]), attrs("get", "deployments", group="apps"), True),
        (rule(["get"], [""], ["*"]), attrs("get", "services"), True),
        (rule(["get"], [""], ["*"]), attrs("get", "pods", sub="log"), True),  # `*` covers subresources too
        (rule(["get"], [""], ["pods"]), attrs("get", "pods", sub="log"), False),  # a subresource is its own
        (rule(["get"], [""], ["pods/log"]), attrs("get", "pods", sub="log"), True),
        (rule(["get"], [""], ["pods/log"]), attrs("get", "pods"), False),
        (rule(["create"], [""], ["pods/exec"]), attrs("create", "pods", sub="exec"), True),
        (rule(["create"], [""], ["pods/portforward"]), attrs("create", "pods", sub="exec"), False),
        (rule(["update"], ["apps"], ["deployments/scale"]), attrs("update", "deployments", group="apps", sub="scale"), True),
        (rule(["update"], ["*"], ["*/status"]), attrs("update", "deployments", group="apps", sub="status"), True),
        (rule(["update"], ["*"], ["*/status"]), attrs("update", "deployments", group="apps"), False),
        (rule(["get"], [""], ["pods"], ["web"]), attrs("get", name="web"), True),
        (rule(["get"], [""], ["pods"], ["web"]), attrs("get", name="db"), False),
        (rule(["list"], [""], ["pods"], ["web"]), attrs("list"), False),  # a list names no object
        (url_rule(["get"], ["/healthz"]), Attributes("get", path="/healthz"), True),
        (url_rule(["get"], ["/healthz"]), Attributes("get", path="/healthz/etcd"), False),
        (url_rule(["get"], ["/apis/*"]), Attributes("get", path="/apis/apps/v1"), True),
        (url_rule(["get"], ["/apis/*"]), Attributes("post", path="/apis/apps/v1"), False),
        (url_rule(["*"], ["*"]), Attributes("delete", path="/anything"), True),
        (url_rule(["get"], ["*"]), attrs("get"), False),  # URL rules grant no resource
        (rule(["get"], ["*"], ["*"]), Attributes("get", path="/version"), False),  # resource rules no URL
    ],
)
def test_a_rule_allows_exactly_what_it_names(rule_, attributes, allowed):
    assert rule_allows(rule_, attributes) is allowed


ALICE = User("alice", "", (AUTHENTICATED_GROUP,))
BOB = User("bob", "", ("devs", AUTHENTICATED_GROUP))
ROBOT = User("system:serviceaccount:team-a:robot", "",
             ("system:serviceaccounts", "system:serviceaccounts:team-a", AUTHENTICATED_GROUP))
MASTER = User("root", "", ("system:masters", AUTHENTICATED_GROUP))


def binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict], namespace: str = "") -> dict:
    metadata = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": metadata,
            "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role}, "subjects": subjects}


def policy() -> Policy:
    made = default_policy()
    made.roles[("team-a", "pod-reader")] = {"metadata": {"name": "pod-reader", "namespace": "team-a"},
                                            "rules": [rule(["get", "list"], [""], ["pods"])]}
    made.role_bindings[("team-a", "alice-reads")] = binding(
        "RoleBinding", "alice-reads", "Role", "pod-reader", [{"kind": "User", "apiGroup": RBAC, "name": "alice"}], "team-a")
    made.role_bindings[("team-a", "devs-edit")] = binding(
        "RoleBinding", "devs-edit", "ClusterRole", "edit", [{"kind": "Group", "apiGroup": RBAC, "name": "devs"}], "team-a")
    made.role_bindings[("team-a", "robot-view")] = binding(
        "RoleBinding", "robot-view", "ClusterRole", "view", [{"kind": "ServiceAccount", "name": "robot"}], "team-a")
    made.role_bindings[("team-b", "ghost")] = binding(
        "RoleBinding", "ghost", "Role", "missing", [{"kind": "User", "apiGroup": RBAC, "name": "alice"}], "team-b")
    return made


@pytest.mark.parametrize(
    "user, attributes, allowed",
    [
        (ALICE, attrs("get"), True),
        (ALICE, attrs("list"), True),
        (ALICE, attrs("delete"), False),
        (ALICE, attrs("get", namespace="team-b"), False),  # a RoleBinding counts in its namespace only
        (ALICE, attrs("list", namespace=""), False),  # nor across all namespaces
        (ALICE, attrs("get", "secrets"), False),
        (BOB, attrs("create", "pods", sub="exec"), True),  # edit, bound in team-a, aggregated from its parts
        (BOB, attrs("update", "deployments", group="apps", sub="scale"), True),
        (BOB, attrs("create", "roles", group=RBAC), False),  # edit does not manage RBAC; admin does
        (BOB, attrs("create", "pods", namespace="team-b"), False),
        (ROBOT, attrs("get", "pods", sub="log"), True),  # a ServiceAccount subject of the binding's namespace
        (ROBOT, attrs("create", "pods"), False),
        (MASTER, attrs("delete", "nodes", namespace=""), True),  # system:masters bypasses RBAC
        (ALICE, Attributes("get", path="/version"), True),  # system:discovery / public-info-viewer
        (ALICE, Attributes("get", path="/metrics"), False),  # system:monitoring only
        (ALICE, attrs("create", "selfsubjectaccessreviews", namespace="", group="authorization.k8s.io"), True),
        (User("eve", "", ("edit:team-c", AUTHENTICATED_GROUP)), attrs("delete", "pods", "team-c"), True),  # legacy group
        (User("eve", "", ("edit:team-c", AUTHENTICATED_GROUP)), attrs("delete", "nodes", ""), False),
        (User("vic", "", ("view", AUTHENTICATED_GROUP)), attrs("list", "nodes", ""), True),
        (User("vic", "", ("view", AUTHENTICATED_GROUP)), attrs("create", "pods"), False),
    ],
)
def test_bindings_give_their_subjects_their_roles_rules(user, attributes, allowed):
    assert authorize(user, attributes, policy()).allowed is allowed


def test_an_allowed_decision_says_which_binding_allowed_it():
    assert authorize(ALICE, attrs("get"), policy()).reason == (
        'RBAC: allowed by RoleBinding "team-a/alice-reads" of Role "pod-reader" to User "alice"')
    assert authorize(ROBOT, attrs("get"), policy()).reason == (
        'RBAC: allowed by RoleBinding "team-a/robot-view" of ClusterRole "view" to ServiceAccount "team-a/robot"')
    assert authorize(ALICE, attrs("delete"), policy()).reason == ""


def test_aggregation_gathers_the_rules_of_the_labelled_roles():
    extra = cluster_role("widgets", [rule(["get"], ["example.com"], ["widgets"])],
                         labels={"rbac.authorization.k8s.io/aggregate-to-view": "true"})
    roles = settle(default_policy().cluster_roles | {"widgets": extra})
    for aggregate in ("view", "edit", "admin"):  # view is aggregated into edit, edit into admin
        assert rule(["get"], ["example.com"], ["widgets"]) in roles[aggregate]["rules"]
    assert rule(["get"], ["example.com"], ["widgets"]) not in roles["cluster-admin"]["rules"]
    assert aggregated_rules(roles["cluster-admin"], roles) is None  # not an aggregated role
    edit_rules = roles["edit"]["rules"]
    assert len(edit_rules) == len({repr(r) for r in edit_rules})  # each rule once


def test_reconciliation_adds_missing_rules_and_respects_autoupdate_false():
    default = cluster_role("x", [rule(["get"], [""], ["pods"])])
    assert reconcile(default, None) == default
    assert reconcile(default, default) is None
    changed = reconcile(default, default | {"rules": [rule(["list"], [""], ["pods"])]})
    assert changed["rules"] == [rule(["list"], [""], ["pods"]), rule(["get"], [""], ["pods"])]  # added, none removed
    pinned = default | {"metadata": default["metadata"] | {"annotations": {AUTOUPDATE: "false"}}, "rules": []}
    assert reconcile(default, pinned) is None


def test_covers_breaks_a_rule_into_its_single_grants():
    held = [rule(["get", "list"], [""], ["pods", "pods/log"]), rule(["*"], ["apps"], ["deployments"], ["web"])]
    assert covers(held, rule(["get"], [""], ["pods/log"]))
    assert not covers(held, rule(["get"], [""], ["pods/exec"]))
    assert covers(held, rule(["delete"], ["apps"], ["deployments"], ["web"]))
    assert not covers(held, rule(["delete"], ["apps"], ["deployments"]))  # every name is more than one
    assert not covers(held, rule(["*"], ["*"], ["*"]))
    assert covers([url_rule(["get"], ["/apis/*"])], url_rule(["get"], ["/apis/apps"]))


def test_a_role_granting_more_than_its_writer_holds_is_refused():
    editor = User("dana", "", ("devs", AUTHENTICATED_GROUP))
    role = {"metadata": {"name": "everything", "namespace": "team-a"}, "rules": [rule(["*"], ["*"], ["*"])]}
    with pytest.raises(ApiError) as refused:
        escalation.check(editor, "Role", role, policy())
    assert refused.value.code == 403
    assert refused.value.status["message"] == (
        'roles.rbac.authorization.k8s.io "everything" is forbidden: user "dana" (groups=["devs" '
        '"system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}')
    held = role | {"rules": [rule(["get"], [""], ["pods"])]}
    escalation.check(editor, "Role", held, policy())  # what edit gives in team-a: allowed
    cluster_admin = binding("RoleBinding", "me", "ClusterRole", "cluster-admin",
                            [{"kind": "User", "apiGroup": RBAC, "name": "dana"}], "team-a")
    with pytest.raises(ApiError):
        escalation.check(editor, "RoleBinding", cluster_admin, policy())
    escalation.check(MASTER, "RoleBinding", cluster_admin, policy())


def test_escalate_and_bind_let_a_user_grant_what_they_do_not_hold():
    granted = policy()
    granted.roles[("team-a", "rbac-manager")] = {"rules": [rule(["create", "escalate", "bind"], [RBAC], ["roles"])]}
    granted.role_bindings[("team-a", "alice-manages")] = binding(
        "RoleBinding", "alice-manages", "Role", "rbac-manager", [{"kind": "User", "apiGroup": RBAC, "name": "alice"}], "team-a")
    role = {"metadata": {"name": "everything", "namespace": "team-a"}, "rules": [rule(["*"], ["*"], ["*"])]}
    escalation.check(ALICE, "Role", role, granted)
    granted.roles[("team-a", "everything")] = role
    escalation.check(ALICE, "RoleBinding", binding("RoleBinding", "b", "Role", "everything", [], "team-a"), granted)


def causes(kind: str, obj: dict, *, namespaced: bool) -> list[tuple[str, str]]:
    obj = {"metadata": {"name": "x"} | ({"namespace": "team-a"} if namespaced else {})} | obj
    return [(c.field, c.message) for c in validate(kind, obj, Limits(), namespaced=namespaced)]


@pytest.mark.parametrize(
    "kind, obj, namespaced, expected",
    [
        ("Role", {"rules": [{"apiGroups": [""], "resources": ["pods"]}]}, True,
         [("rules[0].verbs", "Required value: verbs must contain at least one value")]),
        ("Role", {"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}, True,
         [("rules[0].nonResourceURLs", 'Invalid value: []string{"/x"}: namespaced rules cannot apply to non-resource URLs')]),
        ("ClusterRole", {"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}, False, []),
        ("ClusterRole", {"rules": [{"verbs": ["get"]}]}, False,
         [("rules[0].apiGroups", "Required value: resource rules must supply at least one api group"),
          ("rules[0].resources", "Required value: resource rules must supply at least one resource")]),
        ("RoleBinding", {"roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "r"},
                         "subjects": [{"kind": "User", "apiGroup": RBAC, "name": "a"}]}, True, []),
        ("ClusterRoleBinding", {"roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "r"}}, False,
         [("roleRef.kind", 'Unsupported value: "Role": supported values: "ClusterRole"')]),
        ("ClusterRoleBinding", {"roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "r"},
                                "subjects": [{"kind": "ServiceAccount", "name": "robot"}]}, False,
         [("subjects[0].namespace", "Required value")]),
        ("RoleBinding", {"roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "r"},
                         "subjects": [{"kind": "Robot", "name": "r"}]}, True,
         [("subjects[0].kind", 'Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group"')]),
    ],
)
def test_rbac_objects_are_validated_as_kubernetes_does(kind, obj, namespaced, expected):
    assert causes(kind, obj, namespaced=namespaced) == expected


def test_a_bindings_role_cannot_change():
    old = {"roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "a"}}
    new = {"roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "b"}}
    assert [(c.field, c.message) for c in validate_update("RoleBinding", old, new)] == [("roleRef", (
        'Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"b"}: cannot change '
        "roleRef"))]



# kubectl 1.32's `create rolebinding x --role=r --user=alice -n team-a` body, as it sent it (-v=8).
ROLE_BINDING_PROTOBUF = bytes.fromhex(
    "6b387300 0a2b0a1c 72626163 2e617574 686f7269 7a617469 6f6e2e6b 38732e69 6f2f7631 120b526f 6c654269"
    "6e64696e 67126b0a 170a0178 12001a06 7465616d 2d612200 2a003200 38004200 122a0a04 55736572 12197262"
    "61632e61 7574686f 72697a61 74696f6e 2e6b3873 2e696f1a 05616c69 63652200 1a240a19 72626163 2e617574"
    "686f7269 7a617469 6f6e2e6b 38732e69 6f120452 6f6c651a 01721a00 2200")


def test_a_protobuf_role_binding_decodes_as_its_json():
    assert protobuf.decode(ROLE_BINDING_PROTOBUF) == {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "x", "namespace": "team-a"},
        "subjects": [{"kind": "User", "apiGroup": RBAC, "name": "alice"}],
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "r"},
    }


@pytest.mark.parametrize("cut", [5, 20, 60, 100, len(ROLE_BINDING_PROTOBUF) - 1])
def test_a_truncated_protobuf_body_is_a_decode_error(cut):
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(ROLE_BINDING_PROTOBUF[:cut])


def test_protobuf_of_other_kinds_is_refused():
    with pytest.raises(protobuf.ProtobufError, match='kind "Pod"'):
        protobuf.decode(b"k8s\x00" + bytes.fromhex("0a090a0276311203506f64"))


def test_every_component_group_podnet_up_gives_is_bound_by_default():
    bound = {s["name"] for b in default_policy().cluster_role_bindings.values() for s in b["subjects"]}
    assert set(credentials.COMPONENT_GROUPS.values()) <= bound
    node = User("system:node:node-1", "", (credentials.component_groups("node-1/agent")[0], AUTHENTICATED_GROUP))
    assert authorize(node, attrs("patch", "pods", sub="status"), default_policy()).allowed
    assert not authorize(node, attrs("create", "pods", sub="exec"), default_policy()).allowed


def test_an_aggregated_cluster_role_takes_escalate():
    aggregated = cluster_role("sneaky", [], aggregate="admin")
    with pytest.raises(ApiError) as refused:
        escalation.check(BOB, "ClusterRole", aggregated, policy())
    assert refused.value.status["message"] == (
        'clusterroles.rbac.authorization.k8s.io "sneaky" is forbidden: must have cluster-admin privileges to use '
        "the aggregationRule")
    escalation.check(MASTER, "ClusterRole", aggregated, policy())


def test_a_binding_to_a_missing_role_is_its_not_found():
    dangling = binding("RoleBinding", "b", "Role", "nowhere", [], "team-a")
    with pytest.raises(ApiError) as missing:
        escalation.check(BOB, "RoleBinding", dangling, policy())
    assert (missing.value.code, missing.value.status["message"]) == (
        404, 'roles.rbac.authorization.k8s.io "nowhere" not found')
    escalation.check(MASTER, "RoleBinding", dangling, policy())  # masters may bind ahead of the role


# --- the authorization matrix ---------------------------------------------------------------------------
# The demo's tenants (edit in their namespace), a view-only user (ClusterRole view, cluster-wide), a
# ServiceAccount with view in team-a and an administrator, on every kind podnet serves: R is get/list/watch,
# W create/update/patch/delete/deletecollection, as the same objects give on Kubernetes.
READS, WRITES = ("get", "list", "watch"), ("create", "update", "patch", "delete", "deletecollection")
NAMESPACED = ("pods", "services", "endpoints", "events", "endpointslices", "networkpolicies", "leases", "deployments",
              "replicasets", "roles", "rolebindings")
CLUSTER = ("namespaces", "nodes", "clusterroles", "clusterrolebindings")
TENANT = {"pods": "RW", "services": "RW", "endpoints": "R", "events": "RW", "endpointslices": "R",
          "networkpolicies": "RW", "leases": "RW", "deployments": "RW", "replicasets": "RW", "roles": "", "rolebindings": ""}
VIEWER = {"pods": "R", "services": "R", "endpoints": "R", "events": "R", "endpointslices": "R", "networkpolicies": "R",
          "leases": "", "deployments": "R", "replicasets": "R", "roles": "", "rolebindings": ""}
NOTHING = dict.fromkeys(NAMESPACED, "")
EVERYTHING = dict.fromkeys(NAMESPACED + CLUSTER, "RW")
MATRIX = {
    # user: (in team-a, in team-b, cluster-wide: all namespaces and the cluster-scoped kinds)
    "admin": (EVERYTHING, EVERYTHING, EVERYTHING),
    "team-a": (TENANT, NOTHING, dict.fromkeys(NAMESPACED + CLUSTER, "")),
    "team-b": (NOTHING, TENANT, dict.fromkeys(NAMESPACED + CLUSTER, "")),
    "vera": (VIEWER, VIEWER, VIEWER | {"namespaces": "R", "nodes": "", "clusterroles": "", "clusterrolebindings": ""}),
    "robot": (VIEWER, NOTHING, dict.fromkeys(NAMESPACED + CLUSTER, "")),
}


def matrix_policy() -> Policy:
    made = default_policy()
    for tenant in ("team-a", "team-b"):
        made.role_bindings[(tenant, f"{tenant}-edit")] = binding(
            "RoleBinding", f"{tenant}-edit", "ClusterRole", "edit", [{"kind": "User", "apiGroup": RBAC, "name": tenant}],
            tenant)
    made.cluster_role_bindings["vera-views"] = binding(
        "ClusterRoleBinding", "vera-views", "ClusterRole", "view", [{"kind": "User", "apiGroup": RBAC, "name": "vera"}])
    made.role_bindings[("team-a", "robot-views")] = binding(
        "RoleBinding", "robot-views", "ClusterRole", "view", [{"kind": "ServiceAccount", "name": "robot"}], "team-a")
    return made


def matrix_user(name: str) -> User:
    if name == "admin":
        return MASTER
    if name == "robot":
        return ROBOT
    return User(name, "", (AUTHENTICATED_GROUP,))


def granted(user: User, namespace: str, plural: str, policy_: Policy) -> str:
    kind = lookup(plural)
    def may(verb: str) -> bool:
        return authorize(user, Attributes(verb, namespace, kind.group, plural), policy_).allowed
    reads, writes = [may(v) for v in READS], [may(v) for v in WRITES]
    assert len(set(reads)) == 1 and len(set(writes)) == 1, (user.name, namespace, plural, reads, writes)
    return ("R" if reads[0] else "") + ("W" if writes[0] else "")


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_the_authorization_matrix(name):
    policy_ = matrix_policy()
    user = matrix_user(name)
    in_a, in_b, cluster_wide = MATRIX[name]
    assert {p: granted(user, "team-a", p, policy_) for p in NAMESPACED} == {p: in_a[p] for p in NAMESPACED}
    assert {p: granted(user, "team-b", p, policy_) for p in NAMESPACED} == {p: in_b[p] for p in NAMESPACED}
    assert {p: granted(user, "", p, policy_) for p in NAMESPACED + CLUSTER} == cluster_wide


def test_escalation_attempts_of_a_tenant_are_refused():
    policy_ = matrix_policy()
    tenant = matrix_user("team-a")
    with pytest.raises(ApiError) as refused:  # binding cluster-admin to oneself
        escalation.check(tenant, "RoleBinding", binding("RoleBinding", "me", "ClusterRole", "cluster-admin",
                                                        [{"kind": "User", "apiGroup": RBAC, "name": "team-a"}], "team-a"),
                         policy_)
    assert refused.value.code == 403
    with pytest.raises(ApiError):  # a Role of `*`
        escalation.check(tenant, "Role", {"metadata": {"name": "all", "namespace": "team-a"},
                                          "rules": [rule(["*"], ["*"], ["*"])]}, policy_)


def test_a_node_agent_reads_what_its_pods_take_from_configmaps_and_secrets():
    node = User("system:node:node-1", "", (credentials.component_groups("node-1/agent")[0], AUTHENTICATED_GROUP))
    for plural in ("configmaps", "secrets"):
        assert authorize(node, Attributes("watch", "", "", plural), default_policy()).allowed
        assert not authorize(node, Attributes("create", "team-a", "", plural), default_policy()).allowed
