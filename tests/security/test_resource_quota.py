"""A namespace's ResourceQuota bounds what its tenant may create (issue 23, item 7), through kubectl.

Against a real API server with its controllers: an administrator sets a quota with `kubectl create quota`;
the tenant's creates past it are refused with kube-apiserver's message and kubectl's exit code; `kubectl get
quota` and `kubectl describe quota` show what is used; a deleted pod gives its unit back.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.apiserver import ApiServerProcess

KUBECTL = shutil.which("kubectl")
pytestmark = [pytest.mark.skipif(KUBECTL is None and os.environ.get("CI") != "true", reason="kubectl is not installed"),
              pytest.mark.timeout(120)]
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.47"
HARD = "pods=2,services=2,services.loadbalancers=0,services.nodeports=1,count/configmaps=2,secrets=5"


@dataclass
class Kubectl:
    kubeconfig: Path
    home: Path

    def __call__(self, *args: str, context: str = "admin") -> subprocess.CompletedProcess:
        return subprocess.run([str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "--context", context, *args],
                              capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=str(self.home)))

    def ok(self, *args: str, context: str = "admin") -> str:
        done = self(*args, context=context)
        assert done.returncode == 0, done
        return done.stdout

    def refused(self, *args: str, context: str = "editor") -> str:
        done = self(*args, context=context)
        assert done.returncode == 1, done
        return done.stderr.strip()

    def eventually(self, want: str, *args: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while want not in (out := self.ok(*args)):
            assert time.monotonic() < deadline, f"{args}: never showed {want!r}:\n{out}"
            time.sleep(0.2)
        return out


@pytest.fixture
def kubectl(tmp_path: Path) -> Iterator[Kubectl]:
    server = ApiServerProcess(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", controllers=True)
    server.start()
    kubeconfig = tmp_path / "kubectl.kubeconfig"
    # The tenant: a user of its own, which the test binds to ClusterRole edit in team-a, as `podnet up` does.
    tenant = server.client_certificate("tenant", ())
    users = {"admin": {"token": server.token},
             "editor": {"client-certificate-data": base64.b64encode(tenant.cert_pem).decode(),
                        "client-key-data": base64.b64encode(tenant.key_pem).decode()}}
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "podnet", "cluster": {"server": server.url, "certificate-authority": str(server.ca_file)}}],
        "users": [{"name": role, "user": user} for role, user in users.items()],
        "contexts": [{"name": role, "context": {"cluster": "podnet", "user": role, "namespace": "team-a"}}
                     for role in users],
        "current-context": "admin",
    }))
    try:
        yield Kubectl(kubeconfig, tmp_path)
    finally:
        server.kill()


def test_a_tenant_is_held_to_its_namespace_quota(kubectl):
    kubectl.ok("create", "namespace", "team-a")
    kubectl.ok("create", "rolebinding", "tenant-edit", "--clusterrole=edit", "--user=tenant")
    assert kubectl.ok("create", "quota", "q", f"--hard={HARD}") == "resourcequota/q created\n"
    # The tenant may read its quota but not change it.
    assert "cannot patch resource" in kubectl.refused("patch", "quota", "q", "-p", '{"spec":{"hard":{"pods":"100"}}}')

    for name in ("p1", "p2"):
        assert kubectl.ok("run", name, f"--image={IMAGE}", context="editor") == f"pod/{name} created\n"
    assert kubectl.refused("run", "p3", f"--image={IMAGE}") == (
        'Error from server (Forbidden): pods "p3" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, '
        "limited: pods=2")

    assert kubectl.refused("create", "service", "loadbalancer", "lb", "--tcp=80") == (
        'error: failed to create LoadBalancer service: services "lb" is forbidden: exceeded quota: q, requested: '
        "services.loadbalancers=1, used: services.loadbalancers=0, limited: services.loadbalancers=0")
    kubectl.ok("create", "service", "nodeport", "np", "--tcp=80", context="editor")
    assert kubectl.refused("create", "service", "nodeport", "np2", "--tcp=80") == (
        'error: failed to create NodePort service: services "np2" is forbidden: exceeded quota: q, requested: '
        "services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1")
    kubectl.ok("create", "service", "clusterip", "c1", "--tcp=80", context="editor")
    assert "exceeded quota: q, requested: services=1, used: services=2, limited: services=2" in kubectl.refused(
        "create", "service", "clusterip", "c2", "--tcp=80")
    # An update is held to the quota too: what it adds counts.
    assert kubectl.refused("patch", "service", "c1", "-p", '{"spec":{"type":"LoadBalancer"}}') == (
        'Error from server (Forbidden): services "c1" is forbidden: exceeded quota: q, requested: '
        "services.loadbalancers=1,services.nodeports=1, used: services.loadbalancers=0,services.nodeports=1, "
        "limited: services.loadbalancers=0,services.nodeports=1")
    # Every namespace holds kube-root-ca.crt, published by the control plane; it counts, as on Kubernetes.
    kubectl.eventually("kube-root-ca.crt", "get", "configmaps")
    kubectl.ok("create", "configmap", "one", "--from-literal=a=b", context="editor")
    assert "exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2" in (
        kubectl.refused("create", "configmap", "two", "--from-literal=a=b"))

    table = kubectl.eventually("pods: 2/2", "get", "quota", "q")
    header, row = table.splitlines()
    assert header.split() == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert row.split(None, 2)[2].strip() == (
        "count/configmaps: 2/2, pods: 2/2, secrets: 0/5, services: 2/2, services.loadbalancers: 0/0, "
        "services.nodeports: 1/1")
    described = kubectl.ok("describe", "quota", "q")
    lines = [line.split() for line in described.splitlines()]
    assert ["Name:", "q"] in lines and ["Namespace:", "team-a"] in lines
    assert ["Resource", "Used", "Hard"] in lines
    for resource, used, hard in (("pods", "2", "2"), ("services.nodeports", "1", "1"), ("secrets", "0", "5")):
        assert [resource, used, hard] in lines, described

    # A deleted pod gives its unit back: the controller recounts, and the next pod fits.
    kubectl.ok("delete", "pod", "p1", "--wait=false", context="editor")
    kubectl.eventually("pods: 1/2", "get", "quota", "q")
    assert kubectl.ok("run", "p3", f"--image={IMAGE}", context="editor") == "pod/p3 created\n"


def test_quota_validation(kubectl):
    kubectl.ok("create", "namespace", "team-a")
    done = kubectl("create", "quota", "bad", "--hard=pods=-1,gpus=1")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        'error: failed to create quota: ResourceQuota "bad" is invalid: ['
        'spec.hard[gpus]: Invalid value: "gpus": must be a standard resource for quota, '
        'spec.hard[pods]: Invalid value: "-1": must be greater than or equal to 0]')


def test_a_limit_range_defaults_and_bounds_a_tenant_s_containers(kubectl, tmp_path):
    kubectl.ok("create", "namespace", "team-a")
    kubectl.ok("create", "rolebinding", "tenant-edit", "--clusterrole=edit", "--user=tenant")
    limits = tmp_path / "limits.yaml"
    limits.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits", "namespace": "team-a"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "defaultRequest": {"cpu": "100m"}}]}}))
    assert kubectl.ok("create", "-f", str(limits)) == "limitrange/limits created\n"
    assert "cannot delete resource" in kubectl.refused("delete", "limitrange", "limits")
    assert kubectl.ok("get", "limits").split() == ["NAME", "CREATED", "AT", "limits", *kubectl.ok(
        "get", "limitrange", "limits", "-o", "jsonpath={.metadata.creationTimestamp}").split()]

    # The API's defaulting: the max is the default limit.
    item = yaml.safe_load(kubectl.ok("get", "limitrange", "limits", "-o", "yaml"))["spec"]["limits"][0]
    assert item["default"] == {"cpu": "1"} and item["defaultRequest"] == {"cpu": "100m"}
    kubectl.ok("run", "small", f"--image={IMAGE}", context="editor")
    resources = yaml.safe_load(kubectl.ok("get", "pod", "small", "-o", "yaml"))
    assert resources["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}
    assert resources["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu request for container small; cpu limit for container small")

    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big", "namespace": "team-a"},
        "spec": {"containers": [{"name": "web", "image": IMAGE, "resources": {"limits": {"cpu": "2"}}}]}}))
    assert kubectl.refused("create", "-f", str(big)) == (
        f'Error from server (Forbidden): error when creating "{big}": pods "big" is forbidden: '
        "maximum cpu usage per Container is 1, but limit is 2")
    described = kubectl.ok("describe", "limitrange", "limits")
    assert ["Container", "cpu", "-", "1", "100m", "1", "-"] in [line.split() for line in described.splitlines()]
