"""RBAC through the real kubectl against a real API server over TLS (apiserver/rbac/): roles and bindings
made with `kubectl create role/rolebinding`, a user known only by a client certificate of the server's
CA, `kubectl auth can-i`, escalation refused, the default roles, aggregation and SubjectAccessReview."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.kubectl import KubectlServer

from podnet import kubeconfig, pki
from podnet.api import manifests

HOST = "127.0.115.10"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlServer]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH; these tests drive the real kubectl")
    started = KubectlServer(tmp_path_factory.mktemp("rbac"), host=HOST)
    try:
        for namespace in ("team-a", "team-b"):
            ok(started, "create", "namespace", namespace)
            ok(started, "run", "web", "--image=registry.k8s.io/e2e-test-images/agnhost:2.39", "-n", namespace)
        yield started
    finally:
        started.stop()


def ok(server: KubectlServer, *args: str, input: str | None = None) -> str:
    done = server.kubectl(*args, input=input)
    assert done.returncode == 0, done.stderr
    return done.stdout


def as_user(server: KubectlServer, name: str, *args: str, groups: tuple[str, ...] = (),
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl with a client certificate (CN `name`) from the server's own CA, as another person would have."""
    path = server.directory / f"{name}.kubeconfig"
    if not path.exists():
        cert = pki.make_client(server.ca, name, list(groups), datetime.datetime.now(datetime.UTC))
        path.write_text(kubeconfig.render(server.url, server.ca.cert_pem, name, cert_pem=cert.cert_pem,
                                          key_pem=cert.key_pem))
        path.chmod(0o600)
    env = server.kubectl_env() | {"KUBECONFIG": str(path)}
    return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env, timeout=60)


def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_a_role_and_binding_let_a_user_read_pods_in_one_namespace_only(server: KubectlServer):
    assert ok(server, "create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", "team-a") == (
        "role.rbac.authorization.k8s.io/pod-reader created\n")
    assert ok(server, "create", "rolebinding", "alice-reads", "--role=pod-reader", "--user=alice", "-n", "team-a") == (
        "rolebinding.rbac.authorization.k8s.io/alice-reads created\n")

    # The cache follows the write through the watch: the grant holds within moments.
    listed = eventually(lambda: (done := as_user(server, "alice", "get", "pods", "-n", "team-a")).returncode == 0 and done)
    assert listed, "alice never got to list pods in team-a"
    assert listed.stdout.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert listed.stdout.splitlines()[1].split()[0] == "web"
    assert as_user(server, "alice", "get", "pod", "web", "-n", "team-a", "-o", "name").stdout == "pod/web\n"

    other = as_user(server, "alice", "get", "pods", "-n", "team-b")
    assert (other.returncode, other.stdout) == (1, "")
    assert other.stderr == ('Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource '
                            '"pods" in API group "" in the namespace "team-b"\n')
    delete = as_user(server, "alice", "delete", "pod", "web", "-n", "team-a")
    assert delete.returncode == 1
    assert delete.stderr == ('Error from server (Forbidden): pods "web" is forbidden: User "alice" cannot delete '
                             'resource "pods" in API group "" in the namespace "team-a"\n')

    # An administrator asks what alice may do; alice asks herself.
    listing = [line.split() for line in ok(server, "auth", "can-i", "--list", "--as=alice", "-n", "team-a").splitlines()]
    assert ["pods", "[]", "[]", "[get", "list]"] in listing
    assert not [row for row in listing if row[0] == "*.*"]
    assert ok(server, "auth", "can-i", "get", "pods", "-n", "team-a", "--as=alice") == "yes\n"
    assert server.kubectl("auth", "can-i", "get", "pods", "-n", "team-b", "--as=alice").stdout == "no\n"
    assert as_user(server, "alice", "auth", "can-i", "list", "pods", "-n", "team-a").stdout == "yes\n"

    wide = ok(server, "get", "rolebindings", "-n", "team-a", "-o", "wide").splitlines()
    assert wide[0].split() == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    assert wide[1].split()[:2] == ["alice-reads", "Role/pod-reader"] and wide[1].split()[3] == "alice"
    roles = ok(server, "get", "roles", "-n", "team-a").splitlines()
    assert roles[0].split() == ["NAME", "CREATED", "AT"]
    assert roles[1].split()[0] == "pod-reader" and roles[1].split()[1].endswith("Z")


def test_a_user_cannot_grant_what_they_do_not_hold(server: KubectlServer):
    ok(server, "create", "role", "role-maker", "--verb=create,get,list", "--resource=roles.rbac.authorization.k8s.io,pods",
       "-n", "team-a")
    ok(server, "create", "rolebinding", "bob-makes-roles", "--role=role-maker", "--user=bob", "-n", "team-a")
    assert eventually(lambda: as_user(server, "bob", "auth", "can-i", "create", "roles", "-n", "team-a").stdout == "yes\n")

    refused = as_user(server, "bob", "create", "role", "everything", "--verb=*", "--resource=*", "-n", "team-a")
    assert refused.returncode == 1
    assert refused.stderr == (
        'Error from server (Forbidden): roles.rbac.authorization.k8s.io "everything" is forbidden: user "bob" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["*"], Verbs:["*"]}\n')
    # What bob holds he may hand on.
    assert as_user(server, "bob", "create", "role", "reader", "--verb=get", "--resource=pods", "-n", "team-a").stdout == (
        "role.rbac.authorization.k8s.io/reader created\n")
    # Binding himself cluster-admin takes rights over rolebindings first, then the bind verb.
    ok(server, "create", "role", "binder", "--verb=create", "--resource=rolebindings.rbac.authorization.k8s.io", "-n", "team-a")
    ok(server, "create", "rolebinding", "bob-binds", "--role=binder", "--user=bob", "-n", "team-a")
    assert eventually(lambda: as_user(server, "bob", "auth", "can-i", "create", "rolebindings", "-n", "team-a").stdout == "yes\n")
    escalating = as_user(server, "bob", "create", "rolebinding", "bob-admin", "--clusterrole=cluster-admin", "--user=bob",
                         "-n", "team-a")
    assert escalating.returncode == 1
    assert "is attempting to grant RBAC permissions not currently held" in escalating.stderr


def test_the_default_cluster_roles_and_bindings_are_there(server: KubectlServer):
    rows = [line.split() for line in ok(server, "get", "clusterroles").splitlines()]
    assert rows[0] == ["NAME", "CREATED", "AT"]
    names = {row[0] for row in rows[1:]}
    assert {"cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user",
            "system:public-info-viewer", "system:podnet:node", "system:podnet:kube-proxy"} <= names
    view = json.loads(ok(server, "get", "clusterrole", "view", "-o", "json"))
    assert view["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
    assert view["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    assert view["aggregationRule"] == {"clusterRoleSelectors": [{"matchLabels": {
        "rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces"]} in view["rules"]
    bindings = [line.split() for line in ok(server, "get", "clusterrolebindings", "-o", "wide").splitlines()]
    assert ["system:discovery", "ClusterRole/system:discovery"] == bindings[
        [row[0] for row in bindings].index("system:discovery")][:2]


def test_a_labelled_cluster_role_is_aggregated_into_view_edit_and_admin(server: KubectlServer):
    manifest = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "lease-reader", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]}
    ok(server, "apply", "-f", "-", input=json.dumps(manifest))

    def aggregated() -> bool:
        return all(manifest["rules"][0] in json.loads(ok(server, "get", "clusterrole", role, "-o", "json"))["rules"]
                   for role in ("view", "edit", "admin"))

    assert server.kubectl("auth", "can-i", "get", "leases", "-n", "team-b", "--as=carol").stdout == "no\n"
    assert eventually(aggregated), "lease-reader's rule never reached view, edit and admin"
    ok(server, "create", "rolebinding", "carol-views", "--clusterrole=view", "--user=carol", "-n", "team-b")
    assert eventually(lambda: server.kubectl("auth", "can-i", "get", "leases", "-n", "team-b",
                                             "--as=carol").stdout == "yes\n")


def test_service_account_subjects_and_subject_access_reviews(server: KubectlServer):
    ok(server, "create", "rolebinding", "robot-views", "--clusterrole=view", "--serviceaccount=team-a:robot",
       "-n", "team-a")
    robot = "--as=system:serviceaccount:team-a:robot"
    assert eventually(lambda: server.kubectl("auth", "can-i", "get", "pods/log", "-n", "team-a", robot).stdout == "yes\n")
    assert server.kubectl("auth", "can-i", "create", "pods", "-n", "team-a", robot).stdout == "no\n"

    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "team-a"}}}
    # --validate=false: the review kinds are not (yet) in podnet's OpenAPI documents, which kubectl validates by.
    answer = json.loads(ok(server, "create", "--validate=false", "-f", "-", "-o", "json", input=json.dumps(review)))
    assert answer["status"] == {"allowed": True, "reason": (
        'RBAC: allowed by RoleBinding "team-a/alice-reads" of Role "pod-reader" to User "alice"')}
    # Creating one is an administrator's right, not every user's.
    refused = as_user(server, "dave", "create", "--validate=false", "-f", "-", input=json.dumps(review))
    assert refused.returncode == 1
    assert refused.stderr == (
        'Error from server (Forbidden): error when creating "STDIN": subjectaccessreviews.authorization.k8s.io is '
        'forbidden: User "dave" cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" '
        'at the cluster scope\n')


def test_non_resource_paths_are_authorized_by_their_rules(server: KubectlServer):
    assert as_user(server, "erin", "get", "--raw", "/version").returncode == 0  # system:discovery, every user
    metrics = as_user(server, "erin", "get", "--raw", "/metrics")
    assert (metrics.returncode, metrics.stderr) == (
        1, 'Error from server (Forbidden): forbidden: User "erin" cannot get path "/metrics"\n')
    assert as_user(server, "mona", "get", "--raw", "/metrics", groups=("system:monitoring",)).returncode == 0


def test_a_demo_tenant_edits_its_namespace_and_nothing_else(server: KubectlServer):
    demo = Path(__file__).resolve().parent.parent / "deploy" / "demo" / "02-multi-tenancy.yaml"
    bindings = [obj for obj in manifests.load(demo.read_text(), str(demo)) if obj["kind"] == "RoleBinding"]
    assert [b["metadata"]["name"] for b in bindings] == ["team-a-edit", "team-b-edit"]
    for binding in bindings:
        ok(server, "apply", "-f", "-", input=json.dumps(binding))

    assert eventually(lambda: as_user(server, "team-a", "auth", "can-i", "delete", "pods", "-n", "team-a").stdout == "yes\n")
    assert as_user(server, "team-a", "auth", "can-i", "delete", "pods", "-n", "team-b").stdout == "no\n"
    assert as_user(server, "team-a", "auth", "can-i", "create", "rolebindings", "-n", "team-a").stdout == "no\n"
    # kubectl reads the pod before it execs: that read is refused first, as against kube-apiserver.
    exec_ = as_user(server, "team-a", "exec", "-n", "team-b", "web", "--", "hostname")
    assert (exec_.returncode, exec_.stderr) == (1, (
        'Error from server (Forbidden): pods "web" is forbidden: User "team-a" cannot get resource "pods" in API '
        'group "" in the namespace "team-b"\n'))
    assert as_user(server, "team-a", "auth", "can-i", "create", "pods", "--subresource=exec", "-n", "team-b").stdout == "no\n"
    assert as_user(server, "team-a", "auth", "can-i", "create", "pods", "--subresource=exec", "-n", "team-a").stdout == "yes\n"


def test_a_namespace_is_authorized_in_itself(server: KubectlServer):
    ok(server, "create", "rolebinding", "frank-views", "--clusterrole=view", "--user=frank", "-n", "team-a")
    assert eventually(lambda: as_user(server, "frank", "get", "namespace", "team-a", "-o", "name").stdout
                      == "namespace/team-a\n")
    other = as_user(server, "frank", "get", "namespace", "team-b")
    assert (other.returncode, other.stderr) == (1, (
        'Error from server (Forbidden): namespaces "team-b" is forbidden: User "frank" cannot get resource '
        '"namespaces" in API group "" in the namespace "team-b"\n'))
    listing = as_user(server, "frank", "get", "namespaces")
    assert listing.stderr == ('Error from server (Forbidden): namespaces is forbidden: User "frank" cannot list '
                              'resource "namespaces" in API group "" at the cluster scope\n')
