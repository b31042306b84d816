"""The audit log's pure cores: the policy (parse and evaluate, as kube-apiserver's checker), what a request is
(RequestInfoFactory), and the events written."""

from __future__ import annotations

import datetime

import pytest
from podnet.apiserver.audit import event as events
from podnet.apiserver.audit.policy import Attributes, PolicyError, evaluate, parse_policy
from podnet.apiserver.audit.requestinfo import RequestInfo, request_info
from podnet.apiserver.auth import User

from podnet.cluster.auditpolicy import default_policy
from podnet.cluster.credentials import COMPONENT_GROUPS

POLICY = parse_policy("""
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: [system:kube-proxy]
    verbs: [watch]
  - level: None
    nonResourceURLs: ["/healthz*", /version]
  - level: RequestResponse
    resources:
      - group: ""
        resources: [pods/log, "*/status"]
  - level: Metadata
    resources:
      - group: ""
        resources: [secrets, configmaps]
        resourceNames: [controller-leader]
  - level: Request
    userGroups: [team-a]
    namespaces: [team-a, ""]
    omitStages: [ResponseStarted]
  - level: Request
    resources:
      - group: apps
        resources: ["deployments/*"]
  - level: Metadata
    resources:
      - group: networking.k8s.io
  - level: Metadata
    verbs: [get]
""")


def _ask(user: str = "u", groups: tuple[str, ...] = (), verb: str = "get", resource_request: bool = True,
         namespace: str = "default", group: str = "", resource: str = "pods", subresource: str = "", name: str = "",
         path: str = "") -> tuple[str, frozenset[str]]:
    decision = evaluate(POLICY, Attributes(user, groups, verb, resource_request, namespace, group, resource,
                                           subresource, name, path))
    return decision.level, decision.omit_stages


@pytest.mark.parametrize(("question", "level"), [
    ({"user": "system:kube-proxy", "verb": "watch"}, "None"),
    ({"user": "system:kube-proxy", "verb": "list"}, "None"),  # no rule matches a list of pods by anyone
    ({"resource_request": False, "path": "/healthz/ready"}, "None"),
    ({"resource_request": False, "path": "/version", "verb": "get"}, "None"),
    ({"resource_request": False, "path": "/apis", "verb": "get"}, "Metadata"),
    ({"subresource": "log"}, "RequestResponse"),
    ({"resource": "services", "subresource": "status", "verb": "patch"}, "RequestResponse"),
    ({"resource": "secrets", "name": "controller-leader", "verb": "update"}, "Metadata"),
    ({"resource": "secrets", "name": "other", "verb": "update"}, "None"),
    ({"groups": ("team-a",), "namespace": "team-a", "verb": "delete"}, "Request"),
    ({"groups": ("team-a",), "namespace": "", "resource": "nodes", "verb": "delete"}, "Request"),
    ({"groups": ("team-a",), "namespace": "team-b", "verb": "delete"}, "None"),
    ({"groups": ("team-a",), "resource_request": False, "path": "/metrics", "verb": "post"}, "None"),
    ({"group": "apps", "resource": "deployments", "subresource": "scale", "verb": "update"}, "Request"),
    # As kube-apiserver's checker: `deployments/*` is the resource itself too.
    ({"group": "apps", "resource": "deployments", "verb": "update"}, "Request"),
    ({"group": "apps", "resource": "replicasets", "verb": "update"}, "None"),
    ({"group": "networking.k8s.io", "resource": "networkpolicies", "verb": "create"}, "Metadata"),
])
def test_the_first_matching_rule_decides(question: dict, level: str) -> None:
    assert _ask(**question)[0] == level


def test_omitted_stages_are_the_policys_and_the_rules() -> None:
    assert _ask(groups=("team-a",), namespace="team-a", verb="delete")[1] == {"RequestReceived", "ResponseStarted"}
    assert _ask(subresource="log")[1] == {"RequestReceived"}


def test_the_default_policy_podnet_up_writes_parses_and_keeps_secrets_out() -> None:
    policy = parse_policy(default_policy(COMPONENT_GROUPS.values()))

    def level(user: str, groups: tuple[str, ...], verb: str, group: str, resource: str, **more: str) -> str:
        return evaluate(policy, Attributes(user, groups, verb, True, more.get("namespace", "default"), group,
                                           resource, more.get("subresource", ""))).level

    assert level("admin", ("system:masters",), "create", "", "secrets") == "Metadata"
    assert level("admin", ("system:masters",), "create", "", "serviceaccounts", subresource="token") == "Metadata"
    assert level("admin", ("system:masters",), "create", "", "pods") == "Request"
    assert level("team-a", (), "list", "", "pods") == "Metadata"
    assert level("system:node:node-1", ("system:nodes",), "update", "coordination.k8s.io", "leases") == "None"
    assert level("system:node:node-1", ("system:nodes",), "watch", "", "pods") == "None"
    assert level("system:node:node-1", ("system:nodes",), "patch", "", "pods", subresource="status") == "Request"
    assert level("system:apiserver", ("system:masters",), "create", "", "pods") == "None"
    for group in COMPONENT_GROUPS.values():  # every component's reads, whichever components there are
        assert level("system:podnet:x", (group,), "watch", "", "services") == "None"


@pytest.mark.parametrize(("text", "message"), [
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n", "loaded illegal policy with 0 rules"),
    ("apiVersion: v1\nkind: Policy\nrules: [{level: None}]\n", "want kind Policy of apiVersion audit.k8s.io/v1"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]\n",
     'rules[0].level: Unsupported value: "Everything": supported values: "None", "Metadata", "Request", "RequestResponse"'),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Done]\nrules: [{level: None}]\n",
     'omitStages[0]: Unsupported value: "Done"'),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, users: admin}]\n",
     "rules[0].users: must be a list of strings"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [/x], namespaces: [a]}]\n",
     "rules cannot apply to both regular resources and non-resource URLs"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, resources: [{resources: [a/b/c]}]}]\n",
     'rules[0].resources[0].resources: Invalid value: "a/b/c"'),
    ("[", "not YAML"),
])
def test_bad_policies_are_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(text)


@pytest.mark.parametrize(("method", "path", "query", "info"), [
    ("GET", "/api/v1/namespaces/a/pods", {}, RequestInfo("list", True, "", "", "v1", "a", "pods")),
    ("GET", "/api/v1/namespaces/a/pods", {"watch": "true"}, RequestInfo("watch", True, "", "", "v1", "a", "pods")),
    ("GET", "/api/v1/watch/namespaces/a/pods/p", {}, RequestInfo("watch", True, "", "", "v1", "a", "pods", "", "p")),
    ("GET", "/api/v1/namespaces/a/pods/p/log", {}, RequestInfo("get", True, "", "", "v1", "a", "pods", "log", "p")),
    ("POST", "/api/v1/namespaces/a/pods/p/exec", {}, RequestInfo("create", True, "", "", "v1", "a", "pods", "exec", "p")),
    ("DELETE", "/apis/apps/v1/namespaces/a/deployments", {},
     RequestInfo("deletecollection", True, "", "apps", "v1", "a", "deployments")),
    ("PATCH", "/apis/apps/v1/namespaces/a/deployments/d/scale", {},
     RequestInfo("patch", True, "", "apps", "v1", "a", "deployments", "scale", "d")),
    ("GET", "/api/v1/namespaces/team-a", {}, RequestInfo("get", True, "", "", "v1", "team-a", "namespaces", "", "team-a")),
    ("PUT", "/api/v1/namespaces/team-a/finalize", {},
     RequestInfo("update", True, "", "", "v1", "team-a", "namespaces", "finalize", "team-a")),
    ("GET", "/api/v1/nodes", {}, RequestInfo("list", True, "", "", "v1", "", "nodes")),
    ("GET", "/apis/apps/v1", {}, RequestInfo("get")),
    ("GET", "/healthz", {}, RequestInfo("get")),
    ("POST", "/openid/v1/jwks", {}, RequestInfo("post")),
])
def test_request_info_as_kube_apiserver_reads_paths(method: str, path: str, query: dict, info: RequestInfo) -> None:
    from dataclasses import replace
    assert request_info(method, path, query) == replace(info, path=path)


def test_long_running_requests() -> None:
    assert request_info("GET", "/api/v1/pods", {"watch": "1"}).long_running
    assert request_info("POST", "/api/v1/namespaces/a/pods/p/exec", {}).long_running
    assert not request_info("GET", "/api/v1/pods", {}).long_running


def test_an_event_as_kube_apiserver_writes_it() -> None:
    received = datetime.datetime(2026, 12, 4, 16, 0, 0, 123456, tzinfo=datetime.UTC)
    info = request_info("POST", "/apis/apps/v1/namespaces/team-a/deployments", {})
    user = User("alice", "", ("dev", "system:authenticated"))
    forbidden = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
                 "message": "no", "code": 403, "details": {"kind": "deployments", "group": "apps"}}
    written = events.event(
        audit_id="id-1", stage="ResponseComplete", level="Request", info=info,
        request_uri="/apis/apps/v1/namespaces/team-a/deployments?fieldManager=kubectl-create", user=user,
        acting=User("bob", "", ("system:authenticated",)), source_ips=["127.0.0.1"], user_agent="kubectl/v1.31.0",
        received=received, at=received + datetime.timedelta(milliseconds=5),
        response=events.response_status(403, forbidden), authorization=events.Authorization(False, ""),
        request_object={"kind": "Deployment"}, response_object=forbidden)
    assert written == {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": "id-1",
        "stage": "ResponseComplete", "requestURI": "/apis/apps/v1/namespaces/team-a/deployments?fieldManager=kubectl-create",
        "verb": "create", "user": {"username": "alice", "groups": ["dev", "system:authenticated"]},
        "impersonatedUser": {"username": "bob", "groups": ["system:authenticated"]},
        "sourceIPs": ["127.0.0.1"], "userAgent": "kubectl/v1.31.0",
        "objectRef": {"resource": "deployments", "namespace": "team-a", "apiGroup": "apps", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "status": "Failure", "message": "no", "reason": "Forbidden",
                           "details": {"kind": "deployments", "group": "apps"}, "code": 403},
        "requestObject": {"kind": "Deployment"},  # the response object needs RequestResponse
        "requestReceivedTimestamp": "2026-12-04T16:00:00.123456Z", "stageTimestamp": "2026-12-04T16:00:00.128456Z",
        "annotations": {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""},
    }


def test_a_success_has_only_its_code_and_metadata_level_no_bodies() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    written = events.event(audit_id="a", stage="ResponseComplete", level="Metadata",
                           info=request_info("GET", "/version", {}), request_uri="/version", user=None, acting=None,
                           source_ips=[], user_agent="", received=now, at=now,
                           response=events.response_status(200, {"major": "1"}), request_object={"x": 1})
    assert written["responseStatus"] == {"metadata": {}, "code": 200}
    assert "requestObject" not in written and "objectRef" not in written and "userAgent" not in written
    assert written["user"] == {} and written["verb"] == "get"
