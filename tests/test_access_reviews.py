"""Self access reviews and impersonation (apiserver/accessreview.py, apiserver/impersonation.py),
without a server, on the default RBAC policy: the answers must be those the authorizer gives the same requests."""

from __future__ import annotations

import pytest
from podnet.apiserver.accessreview import ACCESS_REVIEW, API_VERSION, RULES_REVIEW, SUBJECT_REVIEW, review
from podnet.apiserver.auth import AUTHENTICATED_GROUP, User
from podnet.apiserver.impersonation import impersonate
from podnet.apiserver.rbac.defaults import default_policy
from podnet.apiserver.status import ApiError

ADMIN = User("alice", "", ("system:masters", AUTHENTICATED_GROUP))
VIEWER = User("victor", "", ("view", AUTHENTICATED_GROUP))
EDITOR = User("eddie", "", ("edit:team-a", AUTHENTICATED_GROUP))
NOBODY = User("nora", "", (AUTHENTICATED_GROUP,))
POLICY = default_policy()


def can(user: User, **attributes: str) -> bool:
    body = {"apiVersion": API_VERSION, "kind": ACCESS_REVIEW, "spec": {"resourceAttributes": attributes}}
    return review(ACCESS_REVIEW, body, user, POLICY)["status"]["allowed"]


@pytest.mark.parametrize(
    "user, attributes, allowed",
    [
        (ADMIN, {"verb": "create", "group": "apps", "resource": "deployments", "namespace": "default"}, True),
        (ADMIN, {"verb": "delete", "resource": "nodes"}, True),
        (VIEWER, {"verb": "create", "group": "apps", "resource": "deployments", "namespace": "default"}, False),
        (VIEWER, {"verb": "get", "resource": "pods", "namespace": "default"}, True),
        (VIEWER, {"verb": "list", "resource": "pods"}, True),
        (VIEWER, {"verb": "get", "resource": "pods", "subresource": "log", "namespace": "x", "name": "p"}, True),
        (VIEWER, {"verb": "get", "resource": "configmaps", "namespace": "default"}, True),
        (VIEWER, {"verb": "list", "resource": "secrets", "namespace": "default"}, False),  # as Kubernetes' view role
        (EDITOR, {"verb": "get", "resource": "secrets", "namespace": "team-a"}, True),
        (EDITOR, {"verb": "delete", "resource": "pods", "namespace": "team-a"}, True),
        (EDITOR, {"verb": "delete", "resource": "pods", "namespace": "team-b"}, False),
        (EDITOR, {"verb": "create", "resource": "namespaces", "namespace": "team-a"}, False),  # cluster-scoped
        # A Namespace is asked about in itself, as its GET is authorized: edit reads its own namespace's.
        (EDITOR, {"verb": "get", "resource": "namespaces", "namespace": "team-a", "name": "team-a"}, True),
        (EDITOR, {"verb": "get", "resource": "namespaces", "name": "team-a"}, False),
        (EDITOR, {"verb": "update", "resource": "services", "subresource": "status", "namespace": "team-a"}, False),
        (EDITOR, {"verb": "create", "group": "discovery.k8s.io", "resource": "endpointslices", "namespace": "team-a"},
         False),
        (NOBODY, {"verb": "get", "resource": "pods", "namespace": "default"}, False),
        (NOBODY, {"verb": "create", "group": "authorization.k8s.io", "resource": "selfsubjectaccessreviews"}, True),
    ],
)
def test_an_access_review_answers_as_authorize(user, attributes, allowed):
    assert can(user, **attributes) is allowed


def test_a_denial_carries_no_reason_and_the_review_comes_back_whole():
    body = {"apiVersion": API_VERSION, "kind": ACCESS_REVIEW, "metadata": {"creationTimestamp": None},
            "spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "default"}}}
    answer = review(ACCESS_REVIEW, body, VIEWER, POLICY)
    assert answer == body | {"status": {"allowed": False}}


@pytest.mark.parametrize("user, verb, allowed", [(VIEWER, "get", True), (NOBODY, "get", True), (VIEWER, "post", False), (ADMIN, "post", True)])
def test_non_resource_paths_are_readable_by_every_user_and_writable_by_admins(user, verb, allowed):
    body = {"spec": {"nonResourceAttributes": {"path": "/version", "verb": verb}}}
    assert review(ACCESS_REVIEW, body, user, POLICY)["status"]["allowed"] is allowed


@pytest.mark.parametrize("body, code", [({"spec": {}}, 422), ({"spec": []}, 400), ([], 400), ({"kind": "Pod", "spec": {}}, 400)])
def test_a_review_without_a_question_is_refused(body, code):
    with pytest.raises(ApiError) as raised:
        review(ACCESS_REVIEW, body, VIEWER, POLICY)
    assert raised.value.code == code


def rules(user: User, namespace: str) -> dict:
    return review(RULES_REVIEW, {"spec": {"namespace": namespace}}, user, POLICY)["status"]


def test_rules_reviews_list_what_each_role_may_do():
    assert rules(ADMIN, "default")["resourceRules"][0] == {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
    viewing = rules(VIEWER, "default")["resourceRules"][0]
    assert (viewing["verbs"], viewing["apiGroups"]) == (["get", "list", "watch"], ["*"])
    assert {"pods", "configmaps", "deployments"} <= set(viewing["resources"]) and "secrets" not in viewing["resources"]
    editing = rules(EDITOR, "team-a")["resourceRules"]  # ClusterRole edit's, as a RoleBinding in team-a gives
    assert {"verbs": ["create", "delete", "deletecollection", "patch", "update"], "apiGroups": ["apps"],
            "resources": ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
                          "replicasets/scale", "statefulsets", "statefulsets/scale"]} in editing
    assert not any("services/status" in r["resources"] and "update" in r["verbs"] for r in editing)
    assert [r["verbs"] for r in rules(EDITOR, "team-b")["resourceRules"]] == [["create"], ["create"]]  # only the self reviews
    assert rules(NOBODY, "default")["incomplete"] is False


def test_impersonation_is_refused_to_users_who_may_not_impersonate():
    with pytest.raises(ApiError) as raised:
        impersonate(VIEWER, {"Impersonate-User": "bob"}, [], POLICY)
    assert raised.value.code == 403
    assert raised.value.status["message"] == (
        'users "bob" is forbidden: User "victor" cannot impersonate resource "users" in API group "" at the cluster scope'
    )


def test_an_administrator_acts_as_the_user_and_groups_asked_for():
    assert impersonate(ADMIN, {"Impersonate-User": "bob"}, ["view"], POLICY) == User("bob", "", ("view", AUTHENTICATED_GROUP))
    assert impersonate(VIEWER, {}, [], POLICY) is VIEWER
    with pytest.raises(ApiError):
        impersonate(ADMIN, {}, ["view"], POLICY)  # groups without a user


def test_a_subject_review_says_who_the_server_takes_the_caller_for():
    answer = review(SUBJECT_REVIEW, {"apiVersion": "authentication.k8s.io/v1", "kind": SUBJECT_REVIEW}, User("victor", "v-1", ("view",)), POLICY)
    assert answer["status"] == {"userInfo": {"username": "victor", "uid": "v-1", "groups": ["view"]}}
    with pytest.raises(ApiError):
        review(SUBJECT_REVIEW, {"apiVersion": API_VERSION, "kind": SUBJECT_REVIEW}, VIEWER, POLICY)  # the wrong group
