"""A user's session with kubectl against one cluster `podnet up` started (2 nodes, TLS, the kubeconfig it
wrote, unchanged): look around, apply a manifest as the Kubernetes docs give it, diff it, roll it out, scale
it, ask what one may do, run pods and reach them through a NetworkPolicy, read logs, forward a port to curl,
label, delete; and the mistakes a user makes on the way. Each step checks kubectl's own lines and exit codes
as it prints them against kube-apiserver 1.31.

The tests run in order, as the session does: each one starts from the cluster the one before left.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import yaml
from support.kubectl import KUBECTL_MISSING, PODNET, Kubectl, podnet_environment, podnet_up

from podnet.api.lastapplied import ANNOTATION as LAST_APPLIED
from podnet.api.lastapplied import recorded as last_applied_configuration

PREFIX = "127.0.100"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.47"
VIEWER = ("viola", ("view",))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(KUBECTL_MISSING, reason="kubectl is not on PATH")]

# The Deployment of the docs' "Deployments" page, the Service and the NetworkPolicy of "Declare Network
# Policy" (only pods labelled access=true may reach nginx), as a user copies them into one file.
APP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  selector:
    app: nginx
  ports:
  - protocol: TCP
    port: 80
    targetPort: 80
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: access-nginx
spec:
  podSelector:
    matchLabels:
      app: nginx
  ingress:
  - from:
    - podSelector:
        matchLabels:
          access: "true"
"""


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    with podnet_up(tmp_path_factory.mktemp("journey"), PREFIX, nodes=2) as home:
        (home / "app.yaml").write_text(APP)
        yield Kubectl(home)


def ok(kubectl: Kubectl, *args: str, **options: object) -> str:
    done = kubectl.run(*args, **options)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def header(table: str) -> list[str]:
    """The column names of kubectl's table (two spaces or more between columns; a name may hold one)."""
    return re.split(r"\s{2,}", table.splitlines()[0].strip())


def rows(table: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()[1:]]


def eventually(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)
    return value


def test_get_nodes_with_the_kubeconfig_podnet_up_wrote(kubectl: Kubectl):
    nodes = ok(kubectl, "get", "nodes", "-o", "wide")
    assert header(nodes) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
                             "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert [(r[0], r[1], r[5]) for r in rows(nodes)] == [("node-1", "Ready", f"{PREFIX}.11"),
                                                          ("node-2", "Ready", f"{PREFIX}.12")]


def test_describe_node_shows_what_it_holds_and_its_pods_share(kubectl: Kubectl):
    described = ok(kubectl, "describe", "nodes")
    assert re.search(r"^Capacity:\n  cpu: +\d+\n  memory: +\d+Ki\n  pods: +110\nAllocatable:\n", described, re.M), described
    # Each pod's share of the node's allocatable CPU and memory: 0% for pods that request nothing.
    [dns_pod] = [line for line in described.splitlines() if "coredns-" in line]
    assert dns_pod.split()[2:10] == ["0", "(0%)"] * 4, dns_pod


def test_apply_twice_then_diff_then_server_side_apply(kubectl: Kubectl):
    app = str(kubectl.home / "app.yaml")
    assert ok(kubectl, "apply", "-f", app) == (
        "deployment.apps/nginx-deployment created\nservice/nginx created\n"
        "networkpolicy.networking.k8s.io/access-nginx created\n")
    assert ok(kubectl, "apply", "-f", app) == (
        "deployment.apps/nginx-deployment unchanged\nservice/nginx unchanged\n"
        "networkpolicy.networking.k8s.io/access-nginx unchanged\n")
    # As kube-apiserver 1.31's registry strategies: workloads and policies count generations, Services do not.
    generations = {kind: ok(kubectl, "get", kind, name, "-o", "jsonpath={.metadata.generation}")
                   for kind, name in (("deployment", "nginx-deployment"), ("service", "nginx"),
                                      ("networkpolicy", "access-nginx"))}
    assert generations == {"deployment": "1", "service": "", "networkpolicy": "1"}
    unchanged = kubectl.run("diff", "-f", app)
    assert (unchanged.returncode, unchanged.stdout, unchanged.stderr) == (0, "", "")
    changed = kubectl.home / "app-2.yaml"
    changed.write_text(APP.replace("replicas: 3", "replicas: 2"))
    diff = kubectl.run("diff", "-f", str(changed))
    assert diff.returncode == 1, diff.stderr
    assert "-  replicas: 3\n+  replicas: 2\n" in diff.stdout
    assert "-  generation: 1\n+  generation: 2\n" in diff.stdout
    # The same values under another manager: server-side apply takes them over without a conflict.
    assert ok(kubectl, "apply", "--server-side", "-f", app) == (
        "deployment.apps/nginx-deployment serverside-applied\nservice/nginx serverside-applied\n"
        "networkpolicy.networking.k8s.io/access-nginx serverside-applied\n")


def test_kubectl_applies_over_what_podnet_applied(kubectl: Kubectl):
    # podnet apply records the manifest as kubectl does, byte for byte ...
    for document in yaml.safe_load_all(APP):
        document["metadata"]["namespace"] = "default"
        kind = document["kind"].lower()
        live = json.loads(ok(kubectl, "get", kind, document["metadata"]["name"], "-o", "json"))
        assert live["metadata"]["annotations"][LAST_APPLIED] == last_applied_configuration(document), kind
    # ... so that kubectl apply over a `podnet apply` (the demo's) finds nothing to change nor to warn of.
    ok(kubectl, "create", "namespace", "podnet-applied")
    done = subprocess.run([*PODNET, "apply", "-n", "podnet-applied", "-f", str(kubectl.home / "app.yaml"),
                           "--kubeconfig", str(kubectl.admin)], capture_output=True, text=True, timeout=60,
                          env=podnet_environment())
    assert done.returncode == 0, done.stderr
    again = kubectl.run("apply", "-n", "podnet-applied", "-f", str(kubectl.home / "app.yaml"))
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == ("deployment.apps/nginx-deployment unchanged\nservice/nginx unchanged\n"
                            "networkpolicy.networking.k8s.io/access-nginx unchanged\n")
    ok(kubectl, "delete", "namespace", "podnet-applied", "--wait=false")


def test_diff_of_what_kubectl_created_is_empty(kubectl: Kubectl):
    # kubectl diff sends `annotations: {}` for objects created without one: no difference, as the server
    # leaves out ObjectMeta's empty maps.
    ok(kubectl, "create", "namespace", "kubectl-created")
    ok(kubectl, "create", "-n", "kubectl-created", "-f", str(kubectl.home / "app.yaml"))
    diff = kubectl.run("diff", "-n", "kubectl-created", "-f", str(kubectl.home / "app.yaml"))
    assert (diff.returncode, diff.stdout, diff.stderr) == (0, "", "")
    ok(kubectl, "delete", "namespace", "kubectl-created", "--wait=false")


def test_rollout_restart_history_undo_then_scale_and_wait(kubectl: Kubectl):
    deployment = "deployment/nginx-deployment"
    status = ok(kubectl, "rollout", "status", deployment, "--timeout=60s")
    assert status.splitlines()[-1] == 'deployment "nginx-deployment" successfully rolled out'
    first = rows(ok(kubectl, "get", "rs", "-o", "wide"))
    assert len(first) == 1 and first[0][1:4] == ["3", "3", "3"]
    assert ok(kubectl, "rollout", "restart", deployment) == "deployment.apps/nginx-deployment restarted\n"
    ok(kubectl, "rollout", "status", deployment, "--timeout=60s")
    assert ok(kubectl, "rollout", "history", deployment) == (
        "deployment.apps/nginx-deployment \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n")
    assert ok(kubectl, "rollout", "undo", deployment) == "deployment.apps/nginx-deployment rolled back\n"
    ok(kubectl, "rollout", "status", deployment, "--timeout=60s")
    # Undo rolls the first template forward as revision 3, and revision 1 is no more.
    assert ok(kubectl, "rollout", "history", deployment) == (
        "deployment.apps/nginx-deployment \nREVISION  CHANGE-CAUSE\n2         <none>\n3         <none>\n\n")
    replica_sets = {r[0]: r[1:4] for r in rows(ok(kubectl, "get", "rs"))}
    assert replica_sets == {first[0][0]: ["3", "3", "3"], **{n: ["0", "0", "0"] for n in replica_sets
                                                            if n != first[0][0]}}
    assert len(replica_sets) == 2

    assert ok(kubectl, "scale", deployment, "--replicas=2") == "deployment.apps/nginx-deployment scaled\n"
    eventually(lambda: len(rows(ok(kubectl, "get", "pods", "-l", "app=nginx"))) == 2, 30, "2 nginx pods")
    waited = ok(kubectl, "wait", "--for=condition=Ready", "pod", "-l", "app=nginx", "--timeout=60s")
    assert re.fullmatch(r"(pod/nginx-deployment-[a-z0-9]+-[a-z0-9]{5} condition met\n){2}", waited), waited


def test_get_wide_prints_kube_apiservers_columns(kubectl: Kubectl):
    columns = {
        "pods": ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        "svc": ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"],
        "netpol": ["NAME", "POD-SELECTOR", "AGE"],
        "rs": ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
        "events": ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT",
                   "NAME"],
    }
    tables = {resource: ok(kubectl, "get", resource, "-o", "wide") for resource in columns}
    assert {resource: header(table) for resource, table in tables.items()} == columns
    pods = rows(tables["pods"])
    assert {tuple(p[1:4]) for p in pods} == {("1/1", "Running", "0")}
    assert {p[6] for p in pods} <= {"node-1", "node-2"} and all(p[5].startswith("10.244.") for p in pods)
    nginx = {r[0]: r for r in rows(tables["svc"])}["nginx"]
    assert (nginx[1], nginx[3], nginx[4], nginx[6]) == ("ClusterIP", "<none>", "80/TCP", "app=nginx")
    assert [r[:2] for r in rows(tables["netpol"])] == [["access-nginx", "app=nginx"]]
    reasons = {r[2] for r in rows(tables["events"])}
    assert {"Scheduled", "Started", "ScalingReplicaSet", "SuccessfulCreate", "Killing"} <= reasons, reasons


def test_auth_can_i_for_the_admin_and_a_view_only_user(kubectl: Kubectl):
    assert ok(kubectl, "auth", "can-i", "create", "deployments") == "yes\n"
    denied = kubectl.run("auth", "can-i", "create", "deployments", user=VIEWER)
    assert (denied.returncode, denied.stdout, denied.stderr) == (1, "no\n", "")
    assert ok(kubectl, "auth", "can-i", "list", "pods", user=VIEWER) == "yes\n"


def test_explain_a_field(kubectl: Kubectl):
    assert ok(kubectl, "explain", "deployment.spec.replicas") == (
        "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: replicas <integer>\n\n\n"
        "DESCRIPTION:\n    Number of desired pods. This is a pointer to distinguish between explicit\n"
        "    zero and not specified. Defaults to 1.\n    \n\n")


def test_run_expose_and_exec_through_the_network_policy(kubectl: Kubectl):
    assert ok(kubectl, "run", "web", f"--image={AGNHOST}", "--port=8080") == "pod/web created\n"
    assert ok(kubectl, "run", "client", f"--image={AGNHOST}", "--labels=access=true") == "pod/client created\n"
    assert ok(kubectl, "run", "stranger", f"--image={AGNHOST}") == "pod/stranger created\n"
    assert ok(kubectl, "expose", "pod", "web", "--port=80", "--target-port=8080") == "service/web exposed\n"
    ok(kubectl, "wait", "--for=condition=Ready", "pod/web", "pod/client", "pod/stranger", "--timeout=60s")

    def connect(pod: str, target: str) -> subprocess.CompletedProcess[str]:
        return kubectl.run("exec", pod, "--", "/agnhost", "connect", target, "--timeout=1s", "--protocol=tcp")

    allowed = connect("client", "nginx:80")
    assert (allowed.returncode, allowed.stdout, allowed.stderr) == (0, "", "")
    denied = connect("stranger", "nginx:80")
    assert (denied.returncode, denied.stderr) == (1, "TIMEOUT\ncommand terminated with exit code 1\n")
    # No policy selects web: anyone reaches it, through its Service's name.
    assert connect("stranger", "web:80").returncode == 0
    assert ok(kubectl, "exec", "web", "--", "hostname") == "web\n"


def port_forward(kubectl: Kubectl, target: str, remote: int, pod_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """`kubectl port-forward TARGET :REMOTE`, and the local port it chose, read from its first line, which names
    the pod's port (a Service's port is its target port)."""
    process = kubectl.popen("port-forward", target, f":{remote}")
    line = process.stdout.readline().decode()
    match = re.fullmatch(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {pod_port}\n", line)
    if match is None:
        process.kill()
        pytest.fail(f"kubectl port-forward: {line}{process.stderr.read().decode()}")
    return process, int(match.group(1))


def curl(port: int, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "-m", "10", f"http://127.0.0.1:{port}{path}"], capture_output=True,
                          text=True, timeout=20)


def test_port_forward_curl_and_logs(kubectl: Kubectl):
    for target, remote, path, answer in (("pod/web", 8080, "/hostname", "web"),
                                         ("svc/web", 80, "/echo?msg=journey", "journey")):
        process, port = port_forward(kubectl, target, remote, 8080)
        try:
            reply = curl(port, path)
            assert (reply.returncode, reply.stdout) == (0, answer), reply.stderr
        finally:
            process.terminate()
            process.wait(10)
    assert ok(kubectl, "logs", "web").splitlines() == ["GET /hostname", "GET /echo?msg=journey"]


def test_label_and_annotate(kubectl: Kubectl):
    assert ok(kubectl, "label", "pod", "web", "tier=front") == "pod/web labeled\n"
    assert ok(kubectl, "annotate", "pod", "web", "owner=journey") == "pod/web annotated\n"
    assert rows(ok(kubectl, "get", "pod", "web", "--show-labels"))[0][-1] == "run=web,tier=front"
    assert ok(kubectl, "get", "pod", "web", "-o", "jsonpath={.metadata.annotations.owner}") == "journey"


def test_an_unknown_field_fails_under_strict_validation(kubectl: Kubectl):
    manifest = kubectl.home / "typo.yaml"
    manifest.write_text(APP.split("---\n")[0].replace("nginx-deployment", "typo").replace(
        "replicas: 3", "replicas: 3\n  replica: 2"))
    done = kubectl.run("apply", "--validate=strict", "-f", str(manifest))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f'Error from server (BadRequest): error when creating "{manifest}": Deployment in version '
                           '"v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.replica"\n')


def test_exec_into_a_missing_container(kubectl: Kubectl):
    done = kubectl.run("exec", "web", "-c", "nope", "--", "hostname")
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", "Error from server (BadRequest): container nope is not valid for pod web\n")


def test_port_forward_to_a_closed_port(kubectl: Kubectl):
    process, port = port_forward(kubectl, "pod/web", 9999, 9999)
    try:
        assert curl(port, "/").returncode == 52  # the connection closes without a reply
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 1
    lines = stderr.decode().splitlines()
    assert re.search(r'"Unhandled Error" err="an error occurred forwarding \d+ -> 9999: error forwarding port 9999 '
                     r'to pod [0-9a-f-]+, uid : .*connect: connection refused"$', lines[0]), lines
    assert lines[1:] == ["error: lost connection to pod"]


def test_a_view_only_user_may_not_exec(kubectl: Kubectl):
    done = kubectl.run("exec", "web", "--", "hostname", user=VIEWER)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", (
        'Error from server (Forbidden): pods "web" is forbidden: User "viola" cannot create resource "pods/exec" '
        'in API group "" in the namespace "default"\n'))


def test_delete_waits_and_the_collector_removes_what_was_owned(kubectl: Kubectl):
    assert ok(kubectl, "delete", "pod", "stranger", "--wait") == 'pod "stranger" deleted\n'
    gone = kubectl.run("get", "pod", "stranger")
    assert (gone.returncode, gone.stderr) == (1, 'Error from server (NotFound): pods "stranger" not found\n')
    assert ok(kubectl, "delete", "-f", str(kubectl.home / "app.yaml"), "--wait") == (
        'deployment.apps "nginx-deployment" deleted\nservice "nginx" deleted\n'
        'networkpolicy.networking.k8s.io "access-nginx" deleted\n')
    eventually(lambda: kubectl.run("get", "rs,pods", "-l", "app=nginx").stderr
               == "No resources found in default namespace.\n", 30, "the ReplicaSets and their pods collected")
