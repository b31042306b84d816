"""The real kubectl against a real API server: server-side Tables, OpenAPI, explain and fieldValidation.

What kubectl prints here is what it prints against kube-apiserver 1.31: the column headers of
`get -o wide`, the error line and exit code of an unknown field under the default `--validate=strict`,
the warning under `--validate=warn`, and the `explain` layout read from /openapi/v3.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

pytestmark = pytest.mark.slow

OBJECTS = """
apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels: {node-role.kubernetes.io/control-plane: ""}
status:
  conditions: [{type: Ready, status: "True"}]
  addresses: [{type: InternalIP, address: 127.0.0.11}]
  nodeInfo: {kubeletVersion: v1.31.0-podnet, osImage: podnet, kernelVersion: "6.1", containerRuntimeVersion: podnet://1,
             machineID: "", systemUUID: "", bootID: "", kubeProxyVersion: "", operatingSystem: linux, architecture: amd64}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers: [{name: web, image: registry.k8s.io/e2e-test-images/agnhost:2.39, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-rs}
spec:
  replicas: 2
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: agnhost, image: agnhost:2.39}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: "", port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.1.5]}]
---
apiVersion: v1
kind: Event
metadata: {name: web.1}
involvedObject: {kind: Pod, name: web, namespace: default}
reason: Scheduled
message: Successfully assigned default/web to node-1
type: Normal
source: {component: default-scheduler}
"""

DEPLOYMENT = """
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
      securityContext:
        runAsNonRoot: true
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
        env:
        - name: MODE
          value: demo
        resources:
          requests:
            cpu: 250m
            memory: 64Mi
          limits:
            cpu: 1
            memory: 128Mi
        livenessProbe:
          httpGet:
            path: /
            port: 80
          initialDelaySeconds: 3
        readinessProbe:
          tcpSocket:
            port: 80
        volumeMounts:
        - name: cache
          mountPath: /cache
      volumes:
      - name: cache
        emptyDir: {}
"""

# kube-apiserver 1.31's columns, as `kubectl get -o wide` prints their names.
WIDE_HEADERS = {
    "pods": ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
    "nodes": ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION",
              "CONTAINER-RUNTIME"],
    "svc": ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"],
    "netpol": ["NAME", "POD-SELECTOR", "AGE"],
    "rs": ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
    "events": ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT", "NAME"],
    "ns": ["NAME", "STATUS", "AGE"],
    "deploy": ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
    "endpointslices": ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
}


def _columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _table(output: str) -> dict[str, list[str]]:
    """A printed table by its first cell; the header under ''."""
    lines = output.strip().splitlines()
    return {"": _columns(lines[0])} | {_columns(line)[0]: _columns(line) for line in lines[1:]}


def _without_age(output: str) -> list[list[str]]:
    """The table minus AGE, which may tick between two commands."""
    rows = [_columns(line) for line in output.strip().splitlines()]
    at = rows[0].index("AGE")
    return [row[:at] + row[at + 1:] for row in rows]


@pytest.fixture(scope="module")
def populated(kubectl_server):
    created = kubectl_server.kubectl("create", "-f", "-", input=OBJECTS)
    assert created.returncode == 0, created.stderr
    applied = kubectl_server.kubectl("apply", "-f", "-", input=DEPLOYMENT)
    assert applied.returncode == 0, applied.stderr
    return kubectl_server


@pytest.mark.parametrize("resource", sorted(WIDE_HEADERS))
def test_get_wide_prints_kube_apiservers_columns(populated, resource):
    result = populated.kubectl("get", resource, "-o", "wide")
    assert result.returncode == 0, result.stderr
    assert _table(result.stdout)[""] == WIDE_HEADERS[resource]


def test_get_prints_the_servers_cells(populated):
    pods = _table(populated.kubectl("get", "pods", "-o", "wide").stdout)
    assert pods["web"][1:4] == ["0/1", "Pending", "0"]
    assert pods["web"][5:] == ["<none>", "<none>", "<none>", "<none>"]
    nodes = _table(populated.kubectl("get", "nodes", "-o", "wide").stdout)
    assert nodes["node-1"][1:3] == ["Ready", "control-plane"]
    assert nodes["node-1"][4:] == ["v1.31.0-podnet", "127.0.0.11", "<none>", "podnet", "6.1", "podnet://1"]
    services = _table(populated.kubectl("get", "svc", "web", "-o", "wide").stdout)
    assert services["web"][1] == "ClusterIP" and services["web"][4] == "80/TCP" and services["web"][6] == "app=web"
    assert services["web"][2].startswith("10.")
    replica_sets = _table(populated.kubectl("get", "rs", "-o", "wide").stdout)
    assert replica_sets["web-rs"][1:4] == ["2", "0", "0"] and replica_sets["web-rs"][5:] == ["agnhost", "agnhost:2.39", "app=rs"]
    events = _table(populated.kubectl("get", "events").stdout)
    assert events[""] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    slices = _table(populated.kubectl("get", "endpointslices").stdout)
    assert slices["web-abc"][1:4] == ["IPv4", "8080", "10.244.1.5"]
    policies = _table(populated.kubectl("get", "netpol").stdout)
    assert policies["deny"][1] == "app=web"


def test_get_all_lists_the_all_category(populated):
    result = populated.kubectl("get", "all")
    assert result.returncode == 0, result.stderr
    for name in ("pod/web", "service/web", "deployment.apps/nginx-deployment", "replicaset.apps/web-rs"):
        assert name in result.stdout


def test_api_resources_lists_kinds_as_kube_apiserver(populated):
    result = populated.kubectl("api-resources", "-o", "wide")
    assert result.returncode == 0, result.stderr
    table = _table(result.stdout)
    assert table[""] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND", "VERBS", "CATEGORIES"]
    assert table["replicasets"][:5] == ["replicasets", "rs", "apps/v1", "true", "ReplicaSet"]
    assert table["replicasets"][-1] == "all"
    assert table["pods"][-2] == "create,delete,deletecollection,get,list,patch,update,watch"


def test_podnet_get_prints_what_kubectl_prints(populated):
    for resource in ("pods", "nodes", "svc", "rs", "deploy", "endpointslices", "netpol"):
        ours = populated.podnet("get", resource, "-o", "wide")
        theirs = populated.kubectl("get", resource, "-o", "wide")
        assert ours.returncode == 0, ours.stderr
        assert _without_age(ours.stdout) == _without_age(theirs.stdout)


def test_apply_of_a_docs_manifest_validates_and_is_idempotent(populated):
    again = populated.kubectl("apply", "-f", "-", input=DEPLOYMENT)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "deployment.apps/nginx-deployment unchanged"
    assert again.stderr == ""
    stored = json.loads(populated.kubectl("get", "deploy", "nginx-deployment", "-o", "json").stdout)
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": 1, "memory": "128Mi"}
    assert container["readinessProbe"] == {"tcpSocket": {"port": 80}}


def test_an_unknown_field_fails_under_strict_validation(populated):
    manifest = DEPLOYMENT.replace("name: nginx-deployment", "name: typo").replace("  replicas: 3", "  replicas: 3\n  replicaz: 4")
    result = populated.kubectl("apply", "-f", "-", input=manifest)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error from server (BadRequest): error when creating "STDIN": Deployment in version "v1" cannot be handled '
        'as a Deployment: strict decoding error: unknown field "spec.replicaz"'
    )
    assert populated.kubectl("get", "deploy", "typo").returncode == 1


def test_an_unknown_field_is_a_warning_under_warn_validation(populated):
    manifest = DEPLOYMENT.replace("name: nginx-deployment", "name: warned").replace(
        "        image: nginx:1.14.2", "        image: nginx:1.14.2\n        imagePullPolicyy: Always")
    result = populated.kubectl("apply", "--validate=warn", "-f", "-", input=manifest)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deployment.apps/warned created"
    assert result.stderr.strip() == 'Warning: unknown field "spec.template.spec.containers[0].imagePullPolicyy"'
    stored = json.loads(populated.kubectl("get", "deploy", "warned", "-o", "json").stdout)
    assert "imagePullPolicyy" not in stored["spec"]["template"]["spec"]["containers"][0]


def test_an_unknown_field_in_an_update_fails_the_patch(populated):
    manifest = DEPLOYMENT.replace("  replicas: 3", "  replicas: 3\n  paused: true\n  pausedd: true")
    result = populated.kubectl("apply", "-f", "-", input=manifest)
    assert result.returncode == 1
    assert 'patch: Invalid value: "map[' in result.stderr
    assert result.stderr.strip().endswith('strict decoding error: unknown field "spec.pausedd"')


def test_duplicate_fields_by_directive(populated, tmp_path):
    body = tmp_path / "pod.json"
    body.write_text('{"apiVersion":"v1","kind":"Pod","metadata":{"name":"dup","name":"dup"},'
                    '"spec":{"containers":[{"name":"c","image":"agnhost:2.39"}]}}')
    path = "/api/v1/namespaces/default/pods?fieldValidation="
    strict = populated.kubectl("create", "--raw", path + "Strict", "-f", str(body))
    assert strict.returncode == 1
    assert strict.stderr.strip() == (
        'Error from server (BadRequest): Pod in version "v1" cannot be handled as a Pod: '
        'strict decoding error: duplicate field "metadata.name"'
    )
    warned = populated.kubectl("create", "--raw", path + "Warn", "-f", str(body))
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr.strip() == 'Warning: duplicate field "metadata.name"'
    bogus = populated.kubectl("create", "--raw", path + "Bogus", "-f", str(body))
    assert bogus.returncode == 1
    assert bogus.stderr.strip() == (
        'The CreateOptions "" is invalid: fieldValidation: Unsupported value: "Bogus": supported values: "", "Ignore", '
        '"Strict", "Warn"'
    )
    body.write_text(body.read_text().replace('"dup"', '"quiet"'))
    ignored = populated.kubectl("create", "--raw", path + "Ignore", "-f", str(body))
    assert ignored.returncode == 0, ignored.stderr
    assert ignored.stderr == ""


def test_a_wrong_type_is_a_bad_request(populated):
    manifest = DEPLOYMENT.replace("name: nginx-deployment", "name: typed").replace("- containerPort: 80", "- containerPort: web")
    result = populated.kubectl("apply", "--validate=false", "-f", "-", input=manifest)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error from server (BadRequest): error when creating "STDIN": Deployment in version "v1" cannot be handled '
        "as a Deployment: json: cannot unmarshal string into Go struct field "
        "ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"
    )


# kube-apiserver 1.31's explain of the field, but for the `enum:` line and "Possible enum values" that its
# schema adds under `type`: the vendored definitions (kubernetes-validate's copy) do not carry enums.
EXPLAIN_STRATEGY = (
    "GROUP:      apps\n"
    "KIND:       Deployment\n"
    "VERSION:    v1\n"
    "\n"
    "FIELD: strategy <DeploymentStrategy>\n"
    "\n"
    "\n"
    "DESCRIPTION:\n"
    "    The deployment strategy to use to replace existing pods with new ones.\n"
    "    DeploymentStrategy describes how to replace existing pods with new ones.\n"
    "    \n"
    "FIELDS:\n"
    "  rollingUpdate\t<RollingUpdateDeployment>\n"
    "    Rolling update config params. Present only if DeploymentStrategyType =\n"
    "    RollingUpdate.\n"
    "\n"
    "  type\t<string>\n"
    '    Type of deployment. Can be "Recreate" or "RollingUpdate". Default is\n'
    "    RollingUpdate.\n"
    "\n"
    "\n"
)


def test_explain_reads_the_openapi_v3_documents(populated):
    strategy = populated.kubectl("explain", "deployment.spec.strategy")
    assert strategy.returncode == 0, strategy.stderr
    assert strategy.stdout == EXPLAIN_STRATEGY
    containers = populated.kubectl("explain", "pod.spec.containers")
    assert containers.stdout.startswith("KIND:       Pod\nVERSION:    v1\n\nFIELD: containers <[]Container>\n")
    assert "\n  name\t<string> -required-\n" in containers.stdout
    assert "\n  ports\t<[]ContainerPort>\n" in containers.stdout
    probe = populated.kubectl("explain", "pod.spec.containers.livenessProbe.httpGet")
    assert "\n  port\t<IntOrString> -required-\n" in probe.stdout
    resources = populated.kubectl("explain", "pod.spec.containers.resources")
    assert "\n  limits\t<map[string]Quantity>\n" in resources.stdout
    ingress = populated.kubectl("explain", "networkpolicy.spec.ingress")
    assert ingress.stdout.startswith(
        "GROUP:      networking.k8s.io\nKIND:       NetworkPolicy\nVERSION:    v1\n\n"
        "FIELD: ingress <[]NetworkPolicyIngressRule>\n"
    )
    assert "\n  from\t<[]NetworkPolicyPeer>\n" in ingress.stdout and "\n  ports\t<[]NetworkPolicyPort>\n" in ingress.stdout
    missing = populated.kubectl("explain", "pod.spec.nosuchfield")
    assert missing.returncode == 1
    assert missing.stderr.strip() == 'error: field "nosuchfield" does not exist'


def test_get_watch_prints_table_rows_of_each_event(populated):
    env = populated.kubectl_env()
    # The pod exists before the watch starts and goes once kubectl has listed it: kubectl watches from the
    # list's resourceVersion, so the deletion reaches it however late its watch request comes. (Made and
    # deleted while kubectl still started, the pod would be in neither its list nor its watch.)
    created = populated.kubectl("run", "watched", "--image=agnhost:2.39", "--labels=app=watched")
    assert created.returncode == 0, created.stderr
    with subprocess.Popen(["kubectl", "get", "pods", "--watch", "--output-watch-events", "-l", "app=watched"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as watcher:
        try:
            lines = [watcher.stdout.readline() for _ in range(2)]
            deleted = populated.kubectl("delete", "pod", "watched", "--wait=false")
            assert deleted.returncode == 0, deleted.stderr
            lines.append(watcher.stdout.readline())
        finally:
            watcher.kill()
    assert _columns(lines[0]) == ["EVENT", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [_columns(line)[:4] for line in lines[1:]] == [["ADDED", "watched", "0/1", "Pending"],
                                                          ["DELETED", "watched", "0/1", "Pending"]]


def test_an_unknown_field_in_a_replace_fails_as_a_create_does(populated):
    own = DEPLOYMENT.replace("name: nginx-deployment", "name: replaced")
    created = populated.kubectl("create", "-f", "-", input=own)
    assert created.returncode == 0, created.stderr
    manifest = own.replace("  replicas: 3", "  replicas: 3\n  minReadySecondz: 5")
    result = populated.kubectl("replace", "-f", "-", input=manifest)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error from server (BadRequest): error when replacing "STDIN": Deployment in version "v1" cannot be handled '
        'as a Deployment: strict decoding error: unknown field "spec.minReadySecondz"'
    )
    ignored = populated.kubectl("replace", "--validate=false", "-f", "-", input=manifest)
    assert ignored.returncode == 0, ignored.stderr
    assert ignored.stdout.strip() == "deployment.apps/replaced replaced" and ignored.stderr == ""


def test_kubectl_patch_warns_of_an_unknown_field_by_default(populated):
    result = populated.kubectl("patch", "svc", "web", "--type", "merge", "-p", '{"spec":{"sessionAffinityy":"None"}}')
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == 'Warning: unknown field "spec.sessionAffinityy"'
    assert result.stdout.strip() == "service/web patched (no change)"


def test_kubectl_debug_finds_no_ephemeral_containers_as_against_a_cluster_without_them(populated):
    # kubectl debug adds its container through pods/ephemeralcontainers, which is not served here. It tells a
    # missing path from a missing pod by the Status's empty details; without details it crashed.
    debug = populated.kubectl("debug", "web", "--image=busybox", "--", "true")
    assert debug.returncode == 1, debug
    assert debug.stderr.strip().splitlines()[-1] == (
        'error: ephemeral containers are disabled for this cluster (error from server: "the server could not find '
        'the requested resource")'), debug.stderr
    missing = populated.kubectl("debug", "nosuch", "--image=busybox", "--", "true")
    assert (missing.returncode, missing.stderr) == (1, 'Error from server (NotFound): pods "nosuch" not found\n')


def test_openapi_documents_as_kubectl_fetches_them(populated):
    index = json.loads(populated.kubectl("get", "--raw", "/openapi/v3").stdout)
    link = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert link.startswith("/openapi/v3/apis/apps/v1?hash=")
    document = json.loads(populated.kubectl("get", "--raw", link).stdout)
    assert document["openapi"] == "3.0.0" and "io.k8s.api.apps.v1.ReplicaSet" in document["components"]["schemas"]
    stale = json.loads(populated.kubectl("get", "--raw", "/openapi/v3/apis/apps/v1?hash=0").stdout)  # redirected
    assert stale == document
    assert json.loads(populated.kubectl("get", "--raw", "/openapi/v2").stdout)["swagger"] == "2.0"
    missing = populated.kubectl("get", "--raw", "/openapi/v3/apis/nosuch.example.com/v1")
    assert missing.returncode == 1 and "NotFound" in missing.stderr
