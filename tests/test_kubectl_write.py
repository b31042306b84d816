"""kubectl's writing verbs against a real API server process, over TLS with bearer tokens, as against
kube-apiserver: apply (client- and server-side), diff, server dry runs, auth can-i, run, expose, label,
annotate, create, patch, replace. Each checks kubectl's own output lines and exit codes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.apiserver import ApiServerProcess

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.47"
ROLES = ("admin", "viewer", "editor")  # tokens of the support server's token file


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Kubectl:
    kubeconfig: Path
    directory: Path
    server: ApiServerProcess

    def http(self, method: str, path: str, body: dict | None = None, content_type: str = "application/json") -> tuple[int, dict]:
        """A request of the admin's straight to the API, for what kubectl does not show (a Status's causes)."""
        request = urllib.request.Request(
            self.server.url + path, data=None if body is None else json.dumps(body).encode(), method=method,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {self.server.token}"},
        )
        try:
            with urllib.request.urlopen(request, context=self.server.ssl_context(), timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def __call__(self, *args: str, context: str = "admin", stdin: str | None = None, **env: str) -> Result:
        done = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "--context", context, *args],
            input=stdin, capture_output=True, text=True, timeout=60,
            env=dict(os.environ, HOME=str(self.directory), **env),  # kubectl's caches stay with this server
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, context: str = "admin", stdin: str | None = None) -> str:
        result = self(*args, context=context, stdin=stdin)
        assert result.code == 0, result
        return result.out

    def json(self, *args: str) -> dict:
        return json.loads(self.ok(*args, "-o", "json", "--show-managed-fields"))

    def manifest(self, name: str, obj: dict) -> str:
        path = self.directory / name
        path.write_text(yaml.safe_dump(obj))
        return str(path)


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    directory = tmp_path_factory.mktemp("kubectl")
    # No controllers: nothing writes to the objects between kubectl's read and its write (a rollout's
    # status would make a replace stale); the cluster test has them.
    server = ApiServerProcess(directory, f"sqlite:///{directory / 'store.db'}", controllers=False)
    server.start()
    kubeconfig = directory / "kubectl.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "podnet", "cluster": {"server": server.url, "certificate-authority": str(server.ca_file)}}],
        "users": [{"name": role, "user": {"token": server.tokens[role]}} for role in ROLES],
        "contexts": [{"name": role, "context": {"cluster": "podnet", "user": role}} for role in ROLES],
        "current-context": "admin",
    }))
    try:
        yield Kubectl(kubeconfig, directory, server)
    finally:
        server.kill()


@pytest.fixture
def ns(kubectl: Kubectl, request: pytest.FixtureRequest) -> str:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40].strip("-")
    assert kubectl.ok("create", "namespace", name) == f"namespace/{name} created\n"
    return name


def deployment(name: str, ns: str, *, replicas: int = 2, labels: dict | None = None, env: dict | None = None) -> dict:
    container: dict = {"name": "web", "image": IMAGE, "ports": [{"containerPort": 8080}]}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }


def managers(obj: dict) -> dict[str, str]:
    """Who manages the object's own fields (the controllers' status writes, racing the test, left out)."""
    entries = obj["metadata"].get("managedFields", [])
    return {entry["manager"]: entry["operation"] for entry in entries if "subresource" not in entry}


# --- client-side apply and diff -----------------------------------------------------------------------


def test_apply_twice_is_created_then_unchanged_and_a_dropped_field_goes(kubectl: Kubectl, ns: str):
    path = kubectl.manifest("web.yaml", deployment("web", ns, labels={"app": "web", "tier": "front"}, env={"A": "1", "B": "2"}))
    assert kubectl.ok("apply", "-f", path) == "deployment.apps/web created\n"
    assert kubectl.ok("apply", "-f", path) == "deployment.apps/web unchanged\n"
    live = kubectl.json("get", "-n", ns, "deployment", "web")
    assert managers(live) == {"kubectl-client-side-apply": "Update"}

    path = kubectl.manifest("web.yaml", deployment("web", ns, env={"B": "2"}))
    assert kubectl.ok("apply", "-f", path) == "deployment.apps/web configured\n"
    live = kubectl.json("get", "-n", ns, "deployment", "web")
    assert live["metadata"]["labels"] == {"app": "web"}
    assert live["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    assert kubectl.ok("apply", "-f", path) == "deployment.apps/web unchanged\n"


def test_diff_exits_1_with_the_change_and_0_without_and_writes_nothing(kubectl: Kubectl, ns: str):
    path = kubectl.manifest("diff.yaml", deployment("diffed", ns, replicas=2))
    new = kubectl("diff", "-f", path)  # against nothing: the whole object, created by a dry run
    assert new.code == 1 and "+kind: Deployment\n" in new.out and "+  replicas: 2\n" in new.out, new
    assert kubectl("get", "-n", ns, "deployment", "diffed").code == 1
    kubectl.ok("apply", "-f", path)
    unchanged = kubectl("diff", "-f", path)
    assert (unchanged.code, unchanged.out, unchanged.err) == (0, "", "")

    path = kubectl.manifest("diff.yaml", deployment("diffed", ns, replicas=3))
    changed = kubectl("diff", "-f", path)
    assert changed.code == 1, changed
    assert "-  replicas: 2\n+  replicas: 3\n" in changed.out
    assert changed.out.startswith("diff -u -N ")
    server_side = kubectl("diff", "--server-side", "--force-conflicts", "-f", path)
    assert server_side.code == 1 and "-  replicas: 2\n+  replicas: 3\n" in server_side.out, server_side
    assert kubectl.json("get", "-n", ns, "deployment", "diffed")["spec"]["replicas"] == 2


# --- server dry runs ----------------------------------------------------------------------------------


def test_server_dry_runs_write_nothing_and_allocate_nothing(kubectl: Kubectl, ns: str):
    path = kubectl.manifest("dry.yaml", deployment("dry", ns))
    assert kubectl.ok("apply", "--dry-run=server", "-f", path) == "deployment.apps/dry created (server dry run)\n"
    assert kubectl.ok("apply", "--server-side", "--dry-run=server", "-f", path) == (
        "deployment.apps/dry serverside-applied (server dry run)\n"
    )
    missing = kubectl("get", "-n", ns, "deployment", "dry")
    assert (missing.code, missing.err) == (1, 'Error from server (NotFound): deployments.apps "dry" not found\n')

    jsonpath = "-o=jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}"
    preview = kubectl.ok("create", "-n", ns, "service", "nodeport", "np", "--tcp=80:8080", "--dry-run=server", jsonpath)
    assert kubectl("get", "-n", ns, "service", "np").code == 1
    # Nothing was reserved and the allocators did not move: the real create gets what the dry run showed.
    assert kubectl.ok("create", "-n", ns, "service", "nodeport", "np", "--tcp=80:8080", jsonpath) == preview

    kubectl.ok("run", "-n", ns, "keep", f"--image={IMAGE}")
    assert kubectl.ok("delete", "-n", ns, "pod", "keep", "--dry-run=server") == 'pod "keep" deleted (server dry run)\n'
    assert kubectl.ok("delete", "-n", ns, "service", "np", "--dry-run=server") == 'service "np" deleted (server dry run)\n'
    assert kubectl.json("get", "-n", ns, "pod", "keep")["metadata"]["name"] == "keep"
    code, listed = kubectl.http("DELETE", f"/api/v1/namespaces/{ns}/pods?dryRun=All")
    assert (code, [p["metadata"]["name"] for p in listed["items"]]) == (200, ["keep"])
    assert kubectl.json("get", "-n", ns, "pod", "keep")["metadata"]["name"] == "keep"
    assert kubectl.ok("create", "namespace", f"{ns}-x", "--dry-run=server") == f"namespace/{ns}-x created (server dry run)\n"
    assert kubectl("get", "namespace", f"{ns}-x").code == 1
    assert kubectl.ok("delete", "namespace", ns, "--dry-run=server") == f'namespace "{ns}" deleted (server dry run)\n'
    assert kubectl.json("get", "namespace", ns)["status"]["phase"] == "Active"


# --- server-side apply --------------------------------------------------------------------------------


def test_server_side_apply_twice_then_conflicts_as_kube_apiserver(kubectl: Kubectl, ns: str):
    path = kubectl.manifest("ssa.yaml", deployment("ssa", ns, labels={"app": "ssa", "tier": "x"}))
    for _ in range(2):
        assert kubectl.ok("apply", "--server-side", "-f", path) == "deployment.apps/ssa serverside-applied\n"
    live = kubectl.json("get", "-n", ns, "deployment", "ssa")
    assert managers(live)["kubectl"] == "Apply"
    entry = next(e for e in live["metadata"]["managedFields"] if e["manager"] == "kubectl")
    assert entry["apiVersion"] == "apps/v1" and entry["fieldsType"] == "FieldsV1" and entry["time"].endswith("Z")
    assert "f:tier" in entry["fieldsV1"]["f:metadata"]["f:labels"]

    unknown = deployment("ssa", ns)
    unknown["spec"]["foo"] = "bar"
    refused = kubectl("apply", "--server-side", "-f", kubectl.manifest("unknown.yaml", unknown))
    assert (refused.code, refused.err) == (1, (
        f"Error from server (BadRequest): failed to create typed patch object ({ns}/ssa; apps/v1, Kind=Deployment): "
        ".spec.foo: field not declared in schema\n"))

    path = kubectl.manifest("ssa.yaml", deployment("ssa", ns))  # the applier drops a label: it goes
    kubectl.ok("apply", "--server-side", "-f", path)
    assert kubectl.json("get", "-n", ns, "deployment", "ssa")["metadata"]["labels"] == {"app": "ssa"}


def test_server_side_apply_over_client_side_apply_conflicts_until_forced(kubectl: Kubectl, ns: str):
    path = kubectl.manifest("csa.yaml", deployment("csa", ns, replicas=2))
    kubectl.ok("apply", "-f", path)
    path = kubectl.manifest("csa.yaml", deployment("csa", ns, replicas=3))
    refused = kubectl("apply", "--server-side", "-f", path)
    assert refused.code == 1
    lines = refused.err.splitlines()
    assert lines[0] == 'error: Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'
    assert lines[1] == "Please review the fields above--they currently have other managers. Here"
    assert kubectl.json("get", "-n", ns, "deployment", "csa")["spec"]["replicas"] == 2

    forced = kubectl.ok("apply", "--server-side", "--force-conflicts", "-f", path)
    assert forced == "deployment.apps/csa serverside-applied\n"
    live = kubectl.json("get", "-n", ns, "deployment", "csa")
    assert live["spec"]["replicas"] == 3
    assert managers(live)["kubectl"] == "Apply"
    # kubectl moved the client-side fields to its apply manager; applying again prunes the defaulted
    # ones it no longer applies, the server defaults them back: the spec, and its generation, stay.
    assert kubectl.ok("apply", "--server-side", "-f", path) == "deployment.apps/csa serverside-applied\n"
    again = kubectl.json("get", "-n", ns, "deployment", "csa")
    assert (again["spec"], again["metadata"]["generation"]) == (live["spec"], live["metadata"]["generation"])


def test_kubectl_scale_owns_the_replicas_through_the_scale_subresource(kubectl: Kubectl, ns: str):
    path = kubectl.manifest("scaled.yaml", deployment("scaled", ns, replicas=2))
    kubectl.ok("apply", "--server-side", "-f", path)
    assert kubectl.ok("scale", "-n", ns, "deployment", "scaled", "--replicas=4") == "deployment.apps/scaled scaled\n"
    entries = kubectl.json("get", "-n", ns, "deployment", "scaled")["metadata"]["managedFields"]
    assert {"manager": "kubectl", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}}.items() <= \
        next(e for e in entries if e.get("subresource") == "scale").items()
    refused = kubectl("apply", "--server-side", "-f", path)
    assert refused.err.splitlines()[0] == (
        'error: Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas'
    )


def test_server_side_apply_conflict_is_a_409_with_field_manager_causes(kubectl: Kubectl, ns: str):
    kubectl.ok("create", "-n", ns, "deployment", "owned", f"--image={IMAGE}", "--replicas=1")
    config = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "owned"}, "spec": {"replicas": 4}}
    code, answer = kubectl.http("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/owned?fieldManager=me", config,
                                "application/apply-patch+yaml")
    assert (code, answer["reason"], answer["code"]) == (409, "Conflict", 409)
    assert answer["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-create" using apps/v1: .spec.replicas'
    assert answer["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl-create" using apps/v1', "field": ".spec.replicas"}
    ]
    code, answer = kubectl.http("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/owned", config, "application/apply-patch+yaml")
    assert (code, answer["message"]) == (
        422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )
    code, answer = kubectl.http("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/owned?fieldManager={'m' * 129}",
                                {"spec": {"replicas": 1}}, "application/merge-patch+json")
    assert (code, answer["message"]) == (
        422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be more than 128 bytes'
    )
    # Create by apply: a name that does not exist yet is created (201) and owned by its applier.
    config["metadata"]["name"] = "fresh"
    config["spec"] |= {"selector": {"matchLabels": {"app": "f"}}, "template": {
        "metadata": {"labels": {"app": "f"}}, "spec": {"containers": [{"name": "c", "image": IMAGE}]}}}
    code, answer = kubectl.http("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/fresh?fieldManager=me", config,
                                "application/apply-patch+yaml")
    assert code == 201 and managers(answer) == {"me": "Apply"}


# --- access reviews -----------------------------------------------------------------------------------


def test_auth_can_i_answers_from_the_users_rights(kubectl: Kubectl):
    assert kubectl("auth", "can-i", "create", "deployments") == Result(0, "yes\n", "")
    assert kubectl("auth", "can-i", "create", "deployments", context="viewer") == Result(1, "no\n", "")
    assert kubectl("auth", "can-i", "list", "pods", "-A", context="viewer") == Result(0, "yes\n", "")
    assert kubectl("auth", "can-i", "get", "/version", context="viewer") == Result(0, "yes\n", "")
    assert kubectl("auth", "can-i", "delete", "pods", "-n", "team-a", context="editor") == Result(0, "yes\n", "")
    assert kubectl("auth", "can-i", "delete", "pods", "-n", "team-b", context="editor") == Result(1, "no\n", "")
    # kubectl's own warning, as against kube-apiserver: the context's namespace means nothing here.
    assert kubectl("auth", "can-i", "create", "namespaces", context="editor") == Result(
        1, "no\n", "Warning: resource 'namespaces' is not namespace scoped\n\n")
    impersonating = kubectl("auth", "can-i", "get", "pods", "--as=bob", context="viewer")
    assert impersonating.code == 1
    assert impersonating.err == (
        'Error from server (Forbidden): users "bob" is forbidden: User "victor" cannot impersonate resource "users" '
        'in API group "" at the cluster scope\n'
    )
    # An administrator may impersonate; bob, with no groups, may not create deployments.
    assert kubectl("auth", "can-i", "create", "deployments", "--as=bob") == Result(1, "no\n", "")

    listing = kubectl.ok("auth", "can-i", "--list", context="viewer").splitlines()
    assert listing[0].split() == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    rows = [line.split() for line in listing]
    # view reads every resource but Secrets, as Kubernetes' view role does.
    assert ["pods.*", "[]", "[]", "[get", "list", "watch]"] in rows
    assert not [row for row in rows if row[0].startswith("secrets")]
    assert "selfsubjectaccessreviews" in kubectl.ok("api-resources", "--api-group=authorization.k8s.io")
    whoami = [line.split() for line in kubectl.ok("auth", "whoami", context="viewer").splitlines()]
    assert whoami == [["ATTRIBUTE", "VALUE"], ["Username", "victor"], ["UID", "victor-uid"], ["Groups", "[view", "system:authenticated]"]]


# --- run, expose, label, annotate, create, patch, replace ----------------------------------------------


def test_run_expose_label_and_annotate(kubectl: Kubectl, ns: str):
    n = ("-n", ns)
    assert kubectl.ok(*n, "run", "web", f"--image={IMAGE}", "--port", "8080") == "pod/web created\n"
    assert kubectl.ok(*n, "expose", "pod/web", "--port", "80", "--target-port", "8080") == "service/web exposed\n"
    service = kubectl.json(*n, "get", "service", "web")
    assert service["spec"]["selector"] == {"run": "web"}
    assert service["spec"]["ports"][0] | {} == {"port": 80, "targetPort": 8080, "protocol": "TCP"}
    assert kubectl.ok(*n, "create", "deployment", "api", f"--image={IMAGE}") == "deployment.apps/api created\n"
    assert kubectl.ok(*n, "expose", "deployment", "api", "--port", "81", "--target-port", "8080") == "service/api exposed\n"
    assert kubectl.json(*n, "get", "service", "api")["spec"]["selector"] == {"app": "api"}

    assert kubectl.ok(*n, "label", "pod", "web", "tier=front") == "pod/web labeled\n"
    refused = kubectl(*n, "label", "pod", "web", "run=other")
    assert (refused.code, refused.err) == (1, "error: 'run' already has a value (web), and --overwrite is false\n")
    assert kubectl.ok(*n, "label", "pod", "web", "run=other", "--overwrite") == "pod/web labeled\n"
    assert kubectl.ok(*n, "label", "pod", "web", "tier-") == "pod/web unlabeled\n"
    assert kubectl.ok(*n, "annotate", "pod", "web", "note=hi") == "pod/web annotated\n"
    refused = kubectl(*n, "annotate", "pod", "web", "note=again")
    assert refused.code == 1
    assert refused.err == "error: --overwrite is false but found the following declared annotation(s): 'note' already has a value (hi)\n"
    pod = kubectl.json(*n, "get", "pod", "web")
    assert pod["metadata"]["labels"] == {"run": "other"} and pod["metadata"]["annotations"] == {"note": "hi"}
    assert managers(pod) == {"kubectl-run": "Update", "kubectl-label": "Update", "kubectl-annotate": "Update"}


def test_patch_in_each_type_and_replace(kubectl: Kubectl, ns: str):
    n = ("-n", ns)
    kubectl.ok(*n, "create", "deployment", "d", f"--image={IMAGE}")
    assert kubectl.ok(*n, "patch", "deployment", "d", "--type", "merge", "-p", '{"spec":{"replicas":2}}') == "deployment.apps/d patched\n"
    json_patch = '[{"op":"replace","path":"/spec/replicas","value":3}]'
    assert kubectl.ok(*n, "patch", "deployment", "d", "--type", "json", "-p", json_patch) == "deployment.apps/d patched\n"
    strategic = '{"spec":{"template":{"spec":{"containers":[{"name":"agnhost","image":"agnhost:2.48"}]}}}}'
    assert kubectl.ok(*n, "patch", "deployment", "d", "-p", strategic) == "deployment.apps/d patched\n"
    # A patch that changes nothing writes nothing (on a Service: no controller writes to it meanwhile).
    kubectl.ok(*n, "create", "service", "clusterip", "s", "--tcp=80:8080")
    selector = '{"spec":{"selector":{"app":"d"}}}'
    assert kubectl.ok(*n, "patch", "service", "s", "-p", selector) == "service/s patched\n"
    assert kubectl.ok(*n, "patch", "service", "s", "-p", selector) == "service/s patched (no change)\n"
    live = kubectl.json(*n, "get", "deployment", "d")
    assert live["spec"]["replicas"] == 3
    assert [(c["name"], c["image"]) for c in live["spec"]["template"]["spec"]["containers"]] == [("agnhost", "agnhost:2.48")]
    assert managers(live) == {"kubectl-create": "Update", "kubectl-patch": "Update"}

    edited = kubectl(*n, "edit", "deployment", "d", KUBE_EDITOR="sed -i s/replicas:\\ 3/replicas:\\ 4/")
    assert (edited.code, edited.out) == (0, "deployment.apps/d edited\n"), edited
    live = kubectl.json(*n, "get", "deployment", "d")
    assert live["spec"]["replicas"] == 4 and managers(live)["kubectl-edit"] == "Update"

    live["spec"]["replicas"] = 1
    path = kubectl.manifest("replace.yaml", live)
    assert kubectl.ok(*n, "replace", "-f", path) == "deployment.apps/d replaced\n"
    assert kubectl.json(*n, "get", "deployment", "d")["spec"]["replicas"] == 1
    stale = kubectl(*n, "replace", "-f", path)  # the resourceVersion it carries is old now
    assert stale.code == 1
    assert stale.err.startswith('Error from server (Conflict): error when replacing "')
    assert 'Operation cannot be fulfilled on deployments.apps "d": the object has been modified' in stale.err
