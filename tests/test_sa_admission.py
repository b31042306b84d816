"""The ServiceAccount admission's mutation of new pods and the kube-root-ca.crt publisher's decisions (pure)."""

from __future__ import annotations

import copy

from podnet.apiserver.controllers.rootca import wanted
from podnet.apiserver.tokens.admission import MOUNT_PATH, inject

ACCOUNT = {"metadata": {"name": "default", "namespace": "team-a", "uid": "u"}}


def _pod(**spec: object) -> dict:
    return {"metadata": {"name": "p", "namespace": "team-a"},
            "spec": {"containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "own", "mountPath": "/own"}]}],
                     "initContainers": [{"name": "init"}]} | spec}


def test_a_pod_runs_as_default_with_the_projected_token_volume_in_every_container() -> None:
    pod = _pod()
    inject(pod, ACCOUNT, "x7k2q")
    spec = pod["spec"]
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
    assert spec["volumes"] == [{"name": "kube-api-access-x7k2q", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}]
    mount = {"name": "kube-api-access-x7k2q", "readOnly": True, "mountPath": MOUNT_PATH}
    assert all(mount in c["volumeMounts"] for c in [*spec["containers"], *spec["initContainers"]])
    assert spec["containers"][1]["volumeMounts"][0] == {"name": "own", "mountPath": "/own"}


def test_automount_false_on_the_pod_or_its_account_keeps_the_token_out() -> None:
    for pod, account in ((_pod(automountServiceAccountToken=False), ACCOUNT),
                         (_pod(), ACCOUNT | {"automountServiceAccountToken": False})):
        inject(pod, account, "aaaaa")
        assert "volumes" not in pod["spec"] and pod["spec"]["serviceAccountName"] == "default"
    # The pod's own true wins over its account's false.
    pod = _pod(automountServiceAccountToken=True)
    inject(pod, ACCOUNT | {"automountServiceAccountToken": False}, "aaaaa")
    assert pod["spec"]["volumes"][0]["name"] == "kube-api-access-aaaaa"


def test_a_missing_account_or_a_mount_already_there_adds_nothing() -> None:
    pod = _pod(serviceAccountName="builder")
    inject(pod, None, "aaaaa")
    assert pod["spec"]["serviceAccountName"] == "builder" and "volumes" not in pod["spec"]
    own = {"name": "mine", "mountPath": MOUNT_PATH}
    pod = {"metadata": {}, "spec": {"containers": [{"name": "a", "volumeMounts": [own]}]}}
    before = copy.deepcopy(pod)
    inject(pod, ACCOUNT, "aaaaa")
    assert pod["spec"]["containers"] == before["spec"]["containers"] and "volumes" not in pod["spec"]


def _namespace(name: str, phase: str = "Active") -> dict:
    return {"metadata": {"name": name}, "status": {"phase": phase}}


def test_root_ca_is_published_in_active_namespaces_and_put_back_when_changed() -> None:
    good = {"metadata": {"name": "kube-root-ca.crt", "namespace": "a"}, "data": {"ca.crt": "PEM"}}
    changed = {"metadata": {"name": "kube-root-ca.crt", "namespace": "b"}, "data": {"ca.crt": "OTHER"}}
    writes = wanted([_namespace("a"), _namespace("b"), _namespace("c"), _namespace("d", "Terminating")],
                    {"a/kube-root-ca.crt": good, "b/kube-root-ca.crt": changed}, "PEM")
    assert [(w["metadata"]["namespace"], w["data"], current) for w, current in writes] == [
        ("b", {"ca.crt": "PEM"}, changed), ("c", {"ca.crt": "PEM"}, None)]
