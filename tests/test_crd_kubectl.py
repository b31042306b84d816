"""CustomResourceDefinitions through the real kubectl against a real API server process (127.0.145.10, its own
CA, a SQLite store), as people install them: the CronTab CRD of Kubernetes' documentation applied, its
objects created, listed in the CRD's columns, found by short name, refused with kube-apiserver's 422 field
errors, explained from the OpenAPI v3 document, and deleted with their CRD; Cilium's own
CiliumNetworkPolicy CRD applied and the L7 `GET /public` policy of its documentation created and read back;
a cluster-scoped CRD with the status and scale subresources; RBAC by resource name.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.kubectl import KubectlServer, running_kubectl_server

from podnet import kubeconfig, pki

DATA = Path(__file__).parent / "data" / "crds"
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlServer]:
    with running_kubectl_server(tmp_path_factory.mktemp("crds"), host="127.0.145.10") as running:
        yield running


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def install(server: KubectlServer, manifest: str, name: str) -> None:
    """kubectl apply of a CRD, then kubectl wait for Established, as its documentation advises."""
    assert ok(server.kubectl("apply", "-f", str(DATA / manifest))) == \
        f"customresourcedefinition.apiextensions.k8s.io/{name} created\n"
    ok(server.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=10s"))


def wait_gone(server: KubectlServer, *args: str) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + 10
    while True:
        done = server.kubectl(*args)
        if done.returncode != 0 or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


def test_crontab_from_the_documentation(server: KubectlServer) -> None:
    install(server, "crontab-crd.yaml", "crontabs.stable.example.com")
    crd = json.loads(ok(server.kubectl("get", "crd", "crontabs.stable.example.com", "-o", "json")))
    assert {c["type"]: (c["status"], c["reason"]) for c in crd["status"]["conditions"]} == {
        "NamesAccepted": ("True", "NoConflicts"), "Established": ("True", "InitialNamesAccepted")}
    assert crd["status"]["acceptedNames"]["shortNames"] == ["ct"] and crd["status"]["storedVersions"] == ["v1"]
    assert crd["spec"]["names"]["listKind"] == "CronTabList"

    assert ok(server.kubectl("apply", "-f", str(DATA / "my-crontab.yaml"))) == \
        "crontab.stable.example.com/my-new-cron-object created\n"
    table = ok(server.kubectl("get", "crontabs")).splitlines()
    assert table[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert table[1].split()[:7] == ["my-new-cron-object", "*", "*", "*", "*", "*/5", "1"]  # replicas defaulted to 1
    assert ok(server.kubectl("get", "ct", "-o", "name")) == "crontab.stable.example.com/my-new-cron-object\n"
    got = json.loads(ok(server.kubectl("get", "crontab", "my-new-cron-object", "-o", "json")))
    assert got["spec"] == {"cronSpec": "* * * * */5", "image": "my-awesome-cron-image", "replicas": 1}
    assert got["metadata"]["generation"] == 1

    refused = server.kubectl("apply", "-f", str(DATA / "bad-crontab.yaml"))
    assert refused.returncode == 1
    assert refused.stderr == (
        'The CronTab "my-bad-cron-object" is invalid: \n'
        "* spec.cronSpec: Invalid value: \"* * * *\": spec.cronSpec in body should match "
        "'^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'\n"
        "* spec.replicas: Invalid value: 15: spec.replicas in body should be less than or equal to 10\n")

    explained = ok(server.kubectl("explain", "crontab.spec"))
    assert "KIND:       CronTab" in explained and "VERSION:    v1" in explained
    assert "cronSpec\t<string>" in explained and "replicas\t<integer>" in explained
    v2 = json.loads(ok(server.kubectl("get", "--raw", "/openapi/v2")))
    assert v2["definitions"]["com.example.stable.v1.CronTab"]["x-kubernetes-group-version-kind"] == [
        {"group": "stable.example.com", "kind": "CronTab", "version": "v1"}]
    patch = v2["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in patch["consumes"]
    assert "io.k8s.api.core.v1.Pod" in v2["definitions"]  # the built-in kinds' are there as before


def test_a_schema_that_is_not_structural_is_refused(server: KubectlServer) -> None:
    crd = yaml.safe_load((DATA / "crontab-crd.yaml").read_text())
    crd["spec"]["names"] = {"plural": "untyped", "kind": "Untyped"}
    crd["metadata"]["name"] = "untyped.stable.example.com"
    del crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["type"]
    refused = server.kubectl("apply", "-f", "-", input=json.dumps(crd))
    assert refused.returncode == 1
    assert refused.stderr == (
        'The CustomResourceDefinition "untyped.stable.example.com" is invalid: spec.versions[0].schema.openAPIV3Schema'
        ".properties[spec].type: Required value: must not be empty for specified object fields\n")


def test_crontab_writes(server: KubectlServer) -> None:
    """Patches as Kubernetes takes them for custom resources, server-side apply, unknown fields, watch."""
    assert ok(server.kubectl("patch", "ct", "my-new-cron-object", "--type=merge", "-p", '{"spec":{"replicas":3}}')) == \
        "crontab.stable.example.com/my-new-cron-object patched\n"
    ok(server.kubectl("patch", "ct", "my-new-cron-object", "--type=json",
                      "-p", '[{"op":"replace","path":"/spec/image","value":"other"}]'))
    strategic = server.kubectl("patch", "ct", "my-new-cron-object", "-p", '{"spec":{"replicas":2}}')
    assert strategic.returncode == 1 and strategic.stderr == (
        "error: application/strategic-merge-patch+json is not supported by stable.example.com/v1, Kind=CronTab: the "
        "body of the request was in an unknown format - accepted media types include: application/json-patch+json, "
        "application/merge-patch+json, application/apply-patch+yaml\n")
    got = json.loads(ok(server.kubectl("get", "ct", "my-new-cron-object", "-o", "json")))
    assert (got["spec"]["replicas"], got["spec"]["image"], got["metadata"]["generation"]) == (3, "other", 3)

    # kubectl apply again, a field removed and one changed: a three-way JSON merge patch (no strategic one).
    again = yaml.safe_load((DATA / "my-crontab.yaml").read_text())
    again["spec"] = {"cronSpec": "*/2 * * * *"}
    assert ok(server.kubectl("apply", "-f", "-", input=json.dumps(again))) == \
        "crontab.stable.example.com/my-new-cron-object configured\n"
    got = json.loads(ok(server.kubectl("get", "ct", "my-new-cron-object", "-o", "json")))
    # image left the manifest, so the object; replicas was never in it, so it stays
    assert got["spec"] == {"cronSpec": "*/2 * * * *", "replicas": 3}

    applied = {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "by-apply"},
               "spec": {"cronSpec": "0 * * * *", "image": "one"}}
    assert ok(server.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(applied))) == \
        "crontab.stable.example.com/by-apply serverside-applied\n"
    got = json.loads(ok(server.kubectl("get", "ct", "by-apply", "-o", "json", "--show-managed-fields")))
    assert got["spec"]["replicas"] == 1
    assert [(m["manager"], m["operation"]) for m in got["metadata"]["managedFields"]] == [("kubectl", "Apply")]
    assert got["metadata"]["managedFields"][0]["fieldsV1"] == {"f:spec": {"f:cronSpec": {}, "f:image": {}}}

    unknown = dict(applied, metadata={"name": "unknown-field"}, spec={"cronSpec": "0 * * * *", "color": "red"})
    refused = server.kubectl("create", "-f", "-", input=json.dumps(unknown))
    assert refused.returncode == 1 and 'strict decoding error: unknown field "spec.color"' in refused.stderr
    warned = server.kubectl("create", "--validate=warn", "-f", "-", input=json.dumps(unknown))
    assert warned.returncode == 0 and 'Warning: unknown field "spec.color"' in warned.stderr
    assert "color" not in json.loads(ok(server.kubectl("get", "ct", "unknown-field", "-o", "json")))["spec"]

    with subprocess.Popen(["kubectl", "get", "ct", "-w", "-o", "name"], stdout=subprocess.PIPE,
                          text=True, env=server.kubectl_env()) as watching:
        try:
            assert watching.stdout is not None
            assert {watching.stdout.readline().strip() for _ in range(3)} == {
                f"crontab.stable.example.com/{name}" for name in ("by-apply", "my-new-cron-object", "unknown-field")}
            ok(server.kubectl("delete", "ct", "unknown-field"))  # the watch sees it go
            assert watching.stdout.readline().strip() == "crontab.stable.example.com/unknown-field"
        finally:
            watching.kill()


def test_deleting_the_crd_deletes_its_objects(server: KubectlServer) -> None:
    ok(server.kubectl("create", "namespace", "other"))
    ok(server.kubectl("apply", "-n", "other", "-f", str(DATA / "my-crontab.yaml")))
    assert len(ok(server.kubectl("get", "ct", "-A", "-o", "name")).split()) == 3
    assert ok(server.kubectl("delete", "crd", "crontabs.stable.example.com")) == \
        'customresourcedefinition.apiextensions.k8s.io "crontabs.stable.example.com" deleted\n'
    assert ok(server.kubectl("get", "crd")) == ""
    assert "No resources found" in server.kubectl("get", "crd").stderr
    gone = server.kubectl("get", "--raw", "/apis/stable.example.com/v1/crontabs")
    assert gone.returncode == 1 and "NotFound" in gone.stderr
    # The same CRD again finds none of the old objects.
    install(server, "crontab-crd.yaml", "crontabs.stable.example.com")
    assert "No resources found" in server.kubectl("get", "ct", "-A").stderr


def test_cilium_network_policy(server: KubectlServer) -> None:
    install(server, "ciliumnetworkpolicies-crd.yaml", "ciliumnetworkpolicies.cilium.io")
    assert ok(server.kubectl("apply", "-f", str(DATA / "cilium-l7-policy.yaml"))) == \
        "ciliumnetworkpolicy.cilium.io/rule1 created\n"
    got = json.loads(ok(server.kubectl("get", "cnp", "rule1", "-o", "json")))
    written = yaml.safe_load((DATA / "cilium-l7-policy.yaml").read_text())
    assert got["spec"] == written["spec"]
    assert got["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"] == [{"method": "GET", "path": "/public"}]

    assert ok(server.kubectl("get", "ciliumnetworkpolicies")).splitlines()[0].split() == ["NAME", "AGE", "VALID"]
    ok(server.kubectl("patch", "cnp", "rule1", "--subresource=status", "--type=merge",
                      "-p", '{"status":{"conditions":[{"type":"Valid","status":"True"}]}}'))
    assert ok(server.kubectl("get", "cilium")).splitlines()[1].split()[2] == "True"  # by its category
    after = json.loads(ok(server.kubectl("get", "cnp", "rule1", "-o", "json")))
    assert after["metadata"]["generation"] == 1  # a status write is no spec change

    no_selector = {**written, "metadata": {"name": "rule2"},
                   "spec": {k: v for k, v in written["spec"].items() if k != "endpointSelector"}}
    refused = server.kubectl("create", "-f", "-", input=json.dumps(no_selector))
    assert refused.returncode == 1
    assert refused.stderr.startswith('The CiliumNetworkPolicy "rule2" is invalid: spec: Invalid value: ')
    assert refused.stderr.endswith("spec in body must validate one and only one schema (oneOf)\n")
    explained = ok(server.kubectl("explain", "cnp.spec.ingress.toPorts.rules.http"))
    assert "FIELD: http <[]Object>" in explained and "path\t<string>" in explained


def test_cluster_scoped_crd_with_status_and_scale(server: KubectlServer) -> None:
    install(server, "widgets-crd.yaml", "widgets.example.podnet.dev")
    resources = ok(server.kubectl("api-resources", "--api-group=example.podnet.dev")).splitlines()
    assert resources[1].split() == ["widgets", "wg", "example.podnet.dev/v1alpha1", "false", "Widget"]
    widget = {"apiVersion": "example.podnet.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w1"},
              "spec": {"size": "small", "replicas": 2, "port": "http", "extra": {"free": [1, {"form": True}]}},
              "status": {"replicas": 7}}
    ok(server.kubectl("create", "-f", "-", input=json.dumps(widget)))
    got = json.loads(ok(server.kubectl("get", "wg", "w1", "-o", "json")))
    assert "status" not in got and got["spec"]["extra"] == {"free": [1, {"form": True}]}
    assert ok(server.kubectl("scale", "widget", "w1", "--replicas=5")) == "widget.example.podnet.dev/w1 scaled\n"
    ok(server.kubectl("patch", "wg", "w1", "--subresource=status", "--type=merge",
                      "-p", '{"status":{"replicas":5,"selector":"app=w"}}'))
    scale = json.loads(ok(server.kubectl("get", "--raw", "/apis/example.podnet.dev/v1alpha1/widgets/w1/scale")))
    assert (scale["kind"], scale["spec"], scale["status"]) == ("Scale", {"replicas": 5}, {"replicas": 5, "selector": "app=w"})
    assert ok(server.kubectl("get", "gadgets")).splitlines()[1].split() == ["w1", "5", "http"]


def test_rbac_by_resource_name(server: KubectlServer, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    client = pki.make_client(server.ca, "carol", [], now)
    config = tmp_path / "carol"
    config.write_text(kubeconfig.render(server.url, server.ca.cert_pem, "carol", cert_pem=client.cert_pem,
                                        key_pem=client.key_pem))
    ok(server.kubectl("create", "role", "crontab-reader", "--verb=get,list", "--resource=crontabs.stable.example.com"))
    ok(server.kubectl("create", "rolebinding", "carol-reads", "--role=crontab-reader", "--user=carol"))
    ok(server.kubectl("apply", "-f", str(DATA / "my-crontab.yaml")))

    def as_carol(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(config), *args], capture_output=True, text=True,
                              env=server.kubectl_env() | {"HOME": str(tmp_path)}, timeout=60)

    deadline = time.monotonic() + 10
    while (listed := as_carol("get", "ct", "-o", "name")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # the binding reaches the authorizer through its watch
    assert listed.stdout == "crontab.stable.example.com/my-new-cron-object\n"
    denied = as_carol("delete", "ct", "my-new-cron-object")
    assert denied.returncode == 1 and denied.stderr == (
        'Error from server (Forbidden): crontabs.stable.example.com "my-new-cron-object" is forbidden: User "carol" '
        'cannot delete resource "crontabs" in API group "stable.example.com" in the namespace "default"\n')
    assert as_carol("get", "cnp").returncode == 1


def test_a_custom_kind_named_as_a_built_in_one(server: KubectlServer) -> None:
    """Knative's `Service` is a custom kind: it gets its own schema's rules, none of the core Service's (no
    cluster IP allocated, no load balancer status, no port validation)."""
    crd = yaml.safe_load((DATA / "crontab-crd.yaml").read_text())
    crd["metadata"]["name"] = "services.serving.example.dev"
    crd["spec"]["group"] = "serving.example.dev"
    crd["spec"]["names"] = {"plural": "services", "singular": "service", "kind": "Service", "shortNames": ["ksvc"]}
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = {
        "type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    del crd["spec"]["versions"][0]["additionalPrinterColumns"]
    ok(server.kubectl("apply", "-f", "-", input=json.dumps(crd)))
    ok(server.kubectl("wait", "--for=condition=Established", "crd/services.serving.example.dev", "--timeout=10s"))
    knative = {"apiVersion": "serving.example.dev/v1", "kind": "Service", "metadata": {"name": "hello"},
               "spec": {"template": {"spec": {"containers": [{"image": "hello"}]}}, "ports": [{"port": 99999}]}}
    assert ok(server.kubectl("create", "-f", "-", input=json.dumps(knative))) == "service.serving.example.dev/hello created\n"
    got = json.loads(ok(server.kubectl("get", "ksvc", "hello", "-o", "json")))
    assert got["spec"] == knative["spec"] and "status" not in got
    assert ok(server.kubectl("get", "services.serving.example.dev", "-o", "name")) == "service.serving.example.dev/hello\n"
    assert ok(server.kubectl("get", "svc", "-o", "name")) == ""  # the core Services are another resource


def test_two_served_versions_share_one_storage_version(server: KubectlServer) -> None:
    version = {"served": True, "schema": {"openAPIV3Schema": {
        "type": "object", "properties": {"spec": {"type": "object", "properties": {"colour": {"type": "string"}}}}}}}
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gizmos.example.podnet.dev"},
           "spec": {"group": "example.podnet.dev", "scope": "Namespaced",
                    "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
                    "versions": [{"name": "v1beta1", "storage": False, **version}, {"name": "v1", "storage": True, **version}]}}
    ok(server.kubectl("apply", "-f", "-", input=json.dumps(crd)))
    ok(server.kubectl("wait", "--for=condition=Established", "crd/gizmos.example.podnet.dev", "--timeout=10s"))
    old = {"apiVersion": "example.podnet.dev/v1beta1", "kind": "Gizmo", "metadata": {"name": "g"}, "spec": {"colour": "red"}}
    assert ok(server.kubectl("create", "-f", "-", input=json.dumps(old))) == "gizmo.example.podnet.dev/g created\n"
    # kubectl prefers v1, the first of the versions discovery lists; each version answers in itself.
    assert ok(server.kubectl("get", "gizmos", "g", "-o", "jsonpath={.apiVersion}")) == "example.podnet.dev/v1"
    assert ok(server.kubectl("get", "gizmos.v1beta1.example.podnet.dev", "g", "-o", "jsonpath={.apiVersion}")) == \
        "example.podnet.dev/v1beta1"
    ok(server.kubectl("patch", "gizmos.v1beta1.example.podnet.dev", "g", "--type=merge", "-p", '{"spec":{"colour":"blue"}}'))
    listed = json.loads(ok(server.kubectl("get", "--raw", "/apis/example.podnet.dev/v1beta1/namespaces/default/gizmos")))
    assert [(i["apiVersion"], i["spec"]["colour"]) for i in listed["items"]] == [("example.podnet.dev/v1beta1", "blue")]
    assert listed["kind"] == "GizmoList"
    with subprocess.Popen(["kubectl", "get", "gizmos.v1beta1.example.podnet.dev", "-w", "-o", "jsonpath={.apiVersion}{'\\n'}"],
                          stdout=subprocess.PIPE, text=True, env=server.kubectl_env()) as watching:
        try:
            assert watching.stdout is not None
            assert watching.stdout.readline().strip() == "example.podnet.dev/v1beta1"  # the list
            ok(server.kubectl("patch", "gizmo", "g", "--type=merge", "-p", '{"spec":{"colour":"green"}}'))  # through v1
            assert watching.stdout.readline().strip() == "example.podnet.dev/v1beta1"  # the event, in v1beta1
        finally:
            watching.kill()
