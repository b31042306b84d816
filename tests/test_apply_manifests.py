"""`podnet apply` with kubectl apply's semantics, against a real API server, side by side with the real kubectl:
the last-applied annotation and the three-way merge (a field removed from the manifest leaves the object,
whichever of the two tools applied before), `-R` on directories, and a document of a kind the server does
not serve: one error line, the rest applied, exit code 1."""

from __future__ import annotations

import base64
import json
import re

import pytest
from support.kubectl import kubectl_server  # noqa: F401  (fixture)

from podnet.api import kinds, lastapplied

pytestmark = pytest.mark.slow

APP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, namespace: shop}
data: {MODE: fast, LEVEL: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret, namespace: shop}
stringData: {password: s3cret}
---
apiVersion: example.com/v1
kind: Gadget
metadata: {name: widget, namespace: shop}
spec: {size: 3}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector:
    matchLabels: {app: web}
  replicas: 2
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.39
        envFrom: [{configMapRef: {name: app-config}}]
"""

UNKNOWN = ('resource mapping not found for name: "widget" namespace: "shop" from "{source}": no matches for kind '
           '"Gadget" in version "example.com/v1"')


def _configmap(labels: dict[str, str]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "labelled", "namespace": "shop", "labels": labels}, "data": {"k": "v"}})


def _labels(k) -> dict[str, str]:
    done = k.kubectl("get", "configmap", "labelled", "-n", "shop", "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["metadata"].get("labels") or {}


@pytest.fixture(scope="module")
def shop(kubectl_server):  # noqa: F811
    done = kubectl_server.kubectl("create", "namespace", "shop")
    assert done.returncode == 0, done.stderr
    return kubectl_server


def test_three_way_patch_removes_only_what_was_applied_before():
    kind = kinds.lookup("deployments")
    original = {"metadata": {"labels": {"a": "1", "b": "2"}},
                "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "i"}, {"name": "y", "image": "j"}]}}}}
    modified = {"metadata": {"labels": {"a": "1"}},
                "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "i2"}]}}}}
    current = {"metadata": {"labels": {"a": "1", "b": "2", "theirs": "3"}},
               "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "x", "image": "i"},
                                                                              {"name": "y", "image": "j"}]}}}}
    assert lastapplied.three_way_patch(kind, original, modified, current) == {
        "metadata": {"labels": {"b": None}},
        "spec": {"template": {"spec": {
            "containers": [{"name": "x", "image": "i2"}, {"name": "y", "$patch": "delete"}],
            "$setElementOrder/containers": [{"name": "x"}]}}},
    }


def test_custom_resource_gets_a_three_way_json_merge_patch():
    # No patch strategies: a list is replaced whole, a field gone from the manifest is deleted, what the
    # server added stays.
    original = {"spec": {"rules": [{"path": "/a"}], "old": 1}}
    modified = {"spec": {"rules": [{"path": "/b"}]}}
    current = {"spec": {"rules": [{"path": "/a"}], "old": 1, "defaulted": True}}
    assert lastapplied.three_way_merge_patch(original, modified, current) == {
        "spec": {"rules": [{"path": "/b"}], "old": None}
    }


def test_annotation_is_the_manifest_as_kubectl_records_it():
    obj = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c", "annotations": {"x": "1"}}}
    annotated = lastapplied.annotated(obj)
    assert annotated["metadata"]["annotations"] == {
        "x": "1",
        lastapplied.ANNOTATION: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"annotations":{"x":"1"},"name":"c"}}\n',
    }
    assert lastapplied.annotated(annotated) == annotated


def test_podnet_apply_applies_the_rest_and_reports_the_unknown_kind(shop, tmp_path):
    manifest = tmp_path / "app.yaml"
    manifest.write_text(APP)
    done = shop.podnet("apply", "-f", str(manifest))
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["configmap/app-config created", "secret/app-secret created",
                                        "deployment.apps/web created"]
    assert done.stderr.splitlines() == ["error: " + UNKNOWN.format(source=manifest)]
    got = shop.kubectl("get", "configmaps,secrets,deployments", "-n", "shop", "-o", "name")
    assert {"configmap/app-config", "secret/app-secret", "deployment.apps/web"} <= set(got.stdout.split())

    # kubectl reads podnet's last-applied annotation as its own: nothing to change. (A Secret written with
    # stringData is "configured" on every apply, by either tool, as on Kubernetes: the server keeps no
    # stringData to compare with; the object itself does not change.) kubectl's client-side validation of
    # a kind the server does not serve needs the apiextensions.k8s.io OpenAPI that podnet does not serve.
    version = json.loads(shop.kubectl("get", "secret", "app-secret", "-n", "shop", "-o", "json").stdout)
    again = shop.kubectl("apply", "--validate=false", "-f", "-", input=APP)
    assert again.returncode == 1
    assert again.stdout.splitlines() == ["configmap/app-config unchanged", "secret/app-secret configured",
                                         "deployment.apps/web unchanged"]
    assert again.stderr.splitlines() == ["error: " + UNKNOWN.format(source="STDIN"), "ensure CRDs are installed first"]
    assert shop.podnet("apply", "-f", str(manifest)).stdout.splitlines() == [
        "configmap/app-config unchanged", "secret/app-secret configured", "deployment.apps/web unchanged"]
    after = json.loads(shop.kubectl("get", "secret", "app-secret", "-n", "shop", "-o", "json").stdout)
    assert after["metadata"]["resourceVersion"] == version["metadata"]["resourceVersion"]
    assert base64.b64decode(after["data"]["password"]) == b"s3cret"


def test_kubectl_apply_then_podnet_apply_of_a_changed_manifest(shop, tmp_path):
    first = APP.replace("app-config", "cfg2").replace("app-secret", "sec2").replace("name: web", "name: web2")
    done = shop.kubectl("apply", "--validate=false", "-f", "-", input=first)
    assert done.returncode == 1 and "deployment.apps/web2 created" in done.stdout
    changed = tmp_path / "changed.yaml"
    changed.write_text(first.replace("data: {MODE: fast, LEVEL: \"3\"}", "data: {MODE: slow}")
                       .replace("replicas: 2", "replicas: 3"))
    done = shop.podnet("apply", "-f", str(changed))
    assert done.stdout.splitlines() == ["configmap/cfg2 configured", "secret/sec2 configured",
                                        "deployment.apps/web2 configured"]
    data = json.loads(shop.kubectl("get", "configmap", "cfg2", "-n", "shop", "-o", "json").stdout)["data"]
    assert data == {"MODE": "slow"}
    replicas = shop.kubectl("get", "deployment", "web2", "-n", "shop", "-o", "jsonpath={.spec.replicas}").stdout
    assert replicas == "3"


def test_a_label_removed_from_the_manifest_leaves_the_object_whichever_tool_applies(shop, tmp_path):
    manifest = tmp_path / "labelled.json"

    def podnet_apply(labels: dict[str, str]) -> None:
        manifest.write_text(_configmap(labels))
        done = shop.podnet("apply", "-f", str(manifest))
        assert done.returncode == 0, done.stderr

    def kubectl_apply(labels: dict[str, str]) -> None:
        done = shop.kubectl("apply", "-f", "-", input=_configmap(labels))
        assert done.returncode == 0, done.stderr

    podnet_apply({"tier": "web", "team": "a"})
    assert shop.kubectl("label", "configmap", "labelled", "-n", "shop", "owner=ops").returncode == 0
    kubectl_apply({"tier": "web"})
    assert _labels(shop) == {"tier": "web", "owner": "ops"}
    podnet_apply({"tier": "web", "stage": "beta"})
    assert _labels(shop) == {"tier": "web", "stage": "beta", "owner": "ops"}
    kubectl_apply({"tier": "web", "stage": "beta", "team": "b"})
    podnet_apply({"team": "b"})
    assert _labels(shop) == {"team": "b", "owner": "ops"}
    kubectl_apply({})
    assert _labels(shop) == {"owner": "ops"}


def test_recursive_apply_of_a_directory(shop, tmp_path):
    nested = tmp_path / "conf" / "more"
    nested.mkdir(parents=True)
    (tmp_path / "conf" / "top.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: top, namespace: shop}\ndata: {a: b}\n")
    (nested / "deep.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: deep, namespace: shop}\n")
    (nested / "notes.txt").write_text("not a manifest")
    flat = shop.podnet("apply", "-f", str(tmp_path / "conf"))
    assert flat.returncode == 0, flat.stderr
    assert flat.stdout.splitlines() == ["configmap/top created"]
    deep = shop.podnet("apply", "-R", "-f", str(tmp_path / "conf"))
    assert deep.returncode == 0, deep.stderr
    assert sorted(deep.stdout.splitlines()) == ["configmap/top unchanged", "serviceaccount/deep created"]


def test_a_refused_object_is_one_error_line_and_the_rest_applies(shop, tmp_path):
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: broken, namespace: shop}\n"
                        "data: {a: 'not base64!'}\n---\n"
                        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine, namespace: shop}\n")
    done = shop.podnet("apply", "-f", str(manifest))
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["configmap/fine created"]
    assert len(done.stderr.splitlines()) == 1
    assert re.match(r'Error from server \(BadRequest\): error when applying ".*mixed.yaml": Secret in version "v1" '
                    r'cannot be handled as a Secret: illegal base64 data at input byte 3$', done.stderr.strip())
