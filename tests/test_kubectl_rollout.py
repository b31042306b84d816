"""The real kubectl against a real API server with its controllers: Deployments roll through ReplicaSets as
kube-controller-manager rolls them, so `kubectl rollout status|restart|history|undo`, `kubectl scale` and
`kubectl get rs` print what they print against Kubernetes. kubectl reaches the server over TLS with an admin
client certificate, as with the kubeconfig `podnet up` writes. The test plays the kubelet of one Node: it
keeps the Node's Lease fresh and reports each pod bound to it Running and Ready (unless told to hold back)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.local_cluster import eventually

from podnet import kubeconfig
from podnet.client import ApiClient, ApiError

NODE = "node-1"


class Kubectl:
    def __init__(self, config: Path):
        self.env = {**os.environ, "KUBECONFIG": str(config)}

    async def __call__(self, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            "kubectl", *args, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        return process.returncode, out.decode(), err.decode()

    async def ok(self, *args: str, timeout: float = 60.0) -> str:
        code, out, err = await self(*args, timeout=timeout)
        assert code == 0, f"kubectl {' '.join(args)} exited {code}: {err}"
        return out


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    """One Node's kubelet, as far as the controllers can tell: a fresh Lease, and its pods Running and
    Ready with an address (while `serving`)."""

    def __init__(self, api: ApiClient):
        self.api = api
        self.serving = True
        self.next_ip = 2

    async def register(self) -> None:
        await self.api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
                               "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}})
        await self.api.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                               "metadata": {"name": NODE, "namespace": "kube-node-lease"},
                               "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": now()}})

    async def run(self) -> None:
        while True:
            with contextlib.suppress(ApiError):
                await self.api.patch("leases", NODE, {"spec": {"renewTime": now()}}, namespace="kube-node-lease")
                if self.serving:
                    for pod in (await self.api.list("pods", "default"))["items"]:
                        await self._run_pod(pod)
            await asyncio.sleep(0.1)

    async def _run_pod(self, pod: dict) -> None:
        status = pod.get("status") or {}
        if pod["spec"].get("nodeName") != NODE or status.get("phase") == "Running":
            return
        ip = f"10.244.0.{self.next_ip}"
        self.next_ip += 1
        pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                         "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now()}]}
        await self.api.replace_status(pod)


IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.47"
DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "agnhost", "image": IMAGE,
                                                   "args": ["netexec"], "ports": [{"containerPort": 8080}]}]}}},
}


@pytest.fixture
async def cluster(make_api_server, tmp_path):
    server = make_api_server(controllers=True)
    admin = server.client_certificate("admin", ["system:masters"])
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig.render(server.url, server.ca.cert_pem, "admin", cert_pem=admin.cert_pem,
                                        key_pem=admin.key_pem))
    async with server.client() as api:
        await eventually(lambda: _exists(api, "namespaces", "kube-node-lease"), 20, what="the default namespaces")
        kubelet = Kubelet(api)
        await kubelet.register()
        task = asyncio.get_running_loop().create_task(kubelet.run())
        try:
            yield api, kubelet, Kubectl(config)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _exists(api: ApiClient, kind: str, name: str, namespace: str | None = None) -> bool:
    try:
        await api.get(kind, name, namespace)
    except ApiError:
        return False
    return True


async def _replicasets(api: ApiClient) -> dict[str, dict]:
    return {rs["metadata"]["name"]: rs for rs in (await api.list("replicasets", "default"))["items"]}


async def rollout_status_now(kubectl: Kubectl) -> str:
    return await kubectl.ok("rollout", "status", "deploy/web", "--watch=false")


async def test_rollout_scale_restart_history_undo(cluster):
    api, kubelet, kubectl = cluster
    await api.create(DEPLOYMENT)
    out = await kubectl.ok("rollout", "status", "deploy/web", "--timeout=30s")
    assert out.splitlines()[-1] == 'deployment "web" successfully rolled out'
    [first] = await _replicasets(api)
    assert first.startswith("web-") and len(first) == len("web-") + 10
    first_hash = first.removeprefix("web-")
    assert table(await kubectl.ok("get", "rs", "-o", "wide")) == [
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
        [first, "2", "2", "2", AGE, "agnhost", IMAGE, f"app=web,pod-template-hash={first_hash}"]]
    assert table(await kubectl.ok("get", "deploy")) == [
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["web", "2/2", "2", "2", AGE]]

    # Scale: the subresource, through the Deployment to its ReplicaSet.
    assert await kubectl.ok("scale", "deploy/web", "--replicas", "3") == "deployment.apps/web scaled\n"
    out = await kubectl.ok("rollout", "status", "deploy/web", "--timeout=30s")
    assert out.splitlines()[-1] == 'deployment "web" successfully rolled out'
    scale = json.loads(await kubectl.ok("get", "--raw", "/apis/apps/v1/namespaces/default/deployments/web/scale"))
    assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["spec"] == {"replicas": 3} and scale["status"] == {"replicas": 3, "selector": "app=web"}
    assert (await kubectl.ok("get", "rs", first, "-o", "jsonpath={.spec.replicas}")) == "3"
    # With a precondition kubectl reads the Scale and writes it back whole (GET, then PUT).
    code, out, err = await kubectl("scale", "deploy/web", "--current-replicas=2", "--replicas=4")
    assert (code, out, err) == (1, "", "error: Expected replicas to be 2, was 3\n")
    assert await kubectl.ok("scale", "rs", first, "--current-replicas=3", "--replicas=4") == \
        f"replicaset.apps/{first} scaled\n"
    # ... and the Deployment, which owns that ReplicaSet, scales it back.
    assert await eventually(lambda: _equal(kubectl.ok("get", "rs", first, "-o", "jsonpath={.spec.replicas}"), "3"),
                            20, what="the ReplicaSet back at the Deployment's 3")

    # Restart: a new ReplicaSet; while its pods are not ready the rollout waits.
    kubelet.serving = False
    assert await kubectl.ok("rollout", "restart", "deploy/web") == "deployment.apps/web restarted\n"
    waiting = 'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...\n'
    assert await eventually(lambda: _equal(rollout_status_now(kubectl), waiting), 20, what="a rollout under way")
    code, out, err = await kubectl("rollout", "status", "deploy/web", "--timeout=1s")
    assert code == 1 and err == "error: timed out waiting for the condition\n"
    assert out.splitlines()[-1] == waiting.strip()
    kubelet.serving = True
    out = await kubectl.ok("rollout", "status", "deploy/web", "--timeout=30s")
    assert out.splitlines()[-1] == 'deployment "web" successfully rolled out'
    replicasets = await _replicasets(api)
    [second] = set(replicasets) - {first}
    assert {n: rs["spec"]["replicas"] for n, rs in replicasets.items()} == {first: 0, second: 3}
    history = "deployment.apps/web \nREVISION  CHANGE-CAUSE\n{}         <none>\n{}         <none>\n\n"
    assert await kubectl.ok("rollout", "history", "deploy/web") == history.format(1, 2)
    assert "kubectl.kubernetes.io/restartedAt" in await kubectl.ok("rollout", "history", "deploy/web", "--revision=2")

    # Undo: kubectl copies revision 1's template back; its ReplicaSet becomes revision 3 and takes the pods.
    assert await kubectl.ok("rollout", "undo", "deploy/web") == "deployment.apps/web rolled back\n"
    out = await kubectl.ok("rollout", "status", "deploy/web", "--timeout=30s")
    assert out.splitlines()[-1] == 'deployment "web" successfully rolled out'
    assert await kubectl.ok("rollout", "history", "deploy/web") == history.format(2, 3)
    replicasets = await _replicasets(api)
    assert {n: rs["spec"]["replicas"] for n, rs in replicasets.items()} == {first: 3, second: 0}
    annotations = replicasets[first]["metadata"]["annotations"]
    assert annotations["deployment.kubernetes.io/revision"] == "3"
    assert annotations["deployment.kubernetes.io/revision-history"] == "1"
    deployment = await api.get("deployments", "web", "default")
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert "annotations" not in deployment["spec"]["template"]["metadata"]
    assert sorted(row[:4] for row in table(await kubectl.ok("get", "rs"))[1:]) == sorted(
        [[first, "3", "3", "3"], [second, "0", "0", "0"]])


AGE = "<age>"


def table(output: str) -> list[list[str]]:
    """kubectl's table, its cells split on runs of spaces, ages (`4s`, `2m3s`) as AGE."""
    rows = [line.split() for line in output.splitlines()]
    return [[AGE if i and re.fullmatch(r"(\d+[smhd])+", cell) else cell for i, cell in enumerate(row)]
            for row in rows]


async def _equal(value: Awaitable[object], expected: object) -> object:
    return await value == expected


async def test_rollout_status_reports_a_rollout_past_its_progress_deadline(cluster):
    api, kubelet, kubectl = cluster
    kubelet.serving = False  # its pods never become ready
    slow = json.loads(json.dumps(DEPLOYMENT))
    slow["spec"]["progressDeadlineSeconds"] = 2
    await api.create(slow)
    code, out, err = await kubectl("rollout", "status", "deploy/web", "--timeout=30s")
    assert (code, err) == (1, 'error: deployment "web" exceeded its progress deadline\n')
    # Under load kubectl may first see the Deployment before its ReplicaSet has pods, as it would
    # against kube-apiserver; what it must end on is the wait for available replicas.
    waiting = 'Waiting for deployment "web" rollout to finish: '
    lines = out.splitlines()
    assert set(lines) <= {waiting + "0 out of 2 new replicas have been updated...",
                          waiting + "0 of 2 updated replicas are available..."}
    assert lines[-1] == waiting + "0 of 2 updated replicas are available..."
    deployment = await api.get("deployments", "web", "default")
    progressing = next(c for c in deployment["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
