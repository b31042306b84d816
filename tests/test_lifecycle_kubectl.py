"""The real kubectl against a real API server (with its controllers) and a real node agent: `wait
--for=condition=Ready`, `wait --for=delete`, `delete` that waits, `--cascade=background|orphan|foreground`,
`get events` and `describe`'s Events.

kubectl sends no bearer token over plain HTTP, so the API server runs without a token file (open) and the
kubeconfig names only its address."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.apiserver import ApiServerProcess
from support.local_cluster import AGNHOST
from support.netns_pods import require_root, wait_for
from support.nodeagent import AgentProcess
from support.processes import free_udp_port

from podnet.client import ApiClient, ApiError

pytestmark = pytest.mark.slow

NODE_ADDRESS = "127.0.77.11"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: podnet
  cluster:
    server: {server}
contexts:
- name: podnet
  context:
    cluster: podnet
    user: podnet
users:
- name: podnet
  user: {{}}
current-context: podnet
"""


@dataclass
class Kubectl:
    api: ApiServerProcess
    kubeconfig: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, env=self.env(), timeout=timeout,
                              input="")

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["kubectl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env())

    def api_call(self, coro_fn):
        async def call():
            async with ApiClient(self.api.url) as client:
                return await coro_fn(client)

        return asyncio.run(call())


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    home = tmp_path_factory.mktemp("podnet-kubectl")
    api_dir = home / "apiserver"
    api_dir.mkdir()
    api = ApiServerProcess(api_dir, f"sqlite:///{api_dir / 'store.db'}", controllers=True, open_access=True)
    agent = None
    try:
        api.start()
        agent = AgentProcess("node-1", NODE_ADDRESS, home, api.url, "", free_udp_port(NODE_ADDRESS))
        agent.start()
        kubeconfig = home / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG.format(server=api.url))
        yield Kubectl(api, kubeconfig)
    finally:
        if agent is not None:
            agent.kill()
        api.kill()


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, f"kubectl failed ({run.returncode}): {run.stderr}"
    return run.stdout


def exists(kubectl: Kubectl, kind: str, name: str) -> dict | None:
    async def get(client: ApiClient):
        try:
            return await client.get(kind, name, "default")
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    return kubectl.api_call(get)


def pods_of(kubectl: Kubectl, app: str) -> list[dict]:
    async def listed(client: ApiClient):
        return (await client.list("pods", "default", label_selector=f"app={app}"))["items"]

    return kubectl.api_call(listed)


def test_wait_for_ready_then_the_events_in_describe_and_get(kubectl):
    name = f"web-{secrets.token_hex(3)}"
    assert ok(kubectl.run("run", name, f"--image={AGNHOST}", "--port=8080")) == f"pod/{name} created\n"
    assert ok(kubectl.run("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=30s")) == \
        f"pod/{name} condition met\n"

    def described():
        out = ok(kubectl.run("describe", "pod", name))
        return out if "Started" in out else None

    events = wait_for(described, 10, "the pod's events in describe").split("\nEvents:\n", 1)[1].splitlines()
    assert events[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    rows = [line.split(None, 4) for line in events[2:]]
    assert [r[0:2] + r[3:] for r in rows] == [
        ["Normal", "Scheduled", "default-scheduler", f"Successfully assigned default/{name} to node-1"],
        ["Normal", "Pulled", "kubelet", f'Container image "{AGNHOST}" already present on machine'],
        ["Normal", "Created", "kubelet", f"Created container {name}"],
        ["Normal", "Started", "kubelet", f"Started container {name}"],
    ]

    columns = "custom-columns=REASON:.reason,FROM:.source.component,HOST:.source.host,COUNT:.count,OBJECT:" \
              ".involvedObject.name"
    listed = ok(kubectl.run("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", columns))
    assert listed.splitlines() == ["REASON      FROM                HOST     COUNT   OBJECT",
                                   f"Scheduled   default-scheduler   <none>   1       {name}",
                                   f"Pulled      kubelet             node-1   1       {name}",
                                   f"Created     kubelet             node-1   1       {name}",
                                   f"Started     kubelet             node-1   1       {name}"]
    names = ok(kubectl.run("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "name"))
    wide = ok(kubectl.run("get", "events", "-o", "wide"))
    assert all(n.removeprefix("event/") in wide for n in names.split())


def test_wait_for_delete_returns_when_the_agent_has_finished(kubectl):
    name = f"gone-{secrets.token_hex(3)}"
    ok(kubectl.run("run", name, f"--image={AGNHOST}"))
    ok(kubectl.run("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=30s"))
    waiting = kubectl.start("wait", "--for=delete", f"pod/{name}", "--timeout=30s")
    time.sleep(0.5)
    assert waiting.poll() is None  # it waits
    kubectl.api_call(lambda client: client.delete("pods", name, "default"))
    out, err = waiting.communicate(timeout=30)
    assert (waiting.returncode, out) == (0, f"pod/{name} condition met\n"), err
    assert exists(kubectl, "pods", name) is None


def test_delete_waits_for_graceful_termination_and_force_does_not(kubectl):
    require_root()
    tag = secrets.token_hex(3)
    slow, forced = f"slow-{tag}", f"forced-{tag}"
    for name in (slow, forced):
        ok(kubectl.run("run", name, f"--image={AGNHOST}", "--annotations=podnet.io/pod-mode=netns",
                       "--command", "--", "sh", "-c", "trap 'sleep 2; exit 0' TERM; while :; do sleep 0.1; done"))
    ok(kubectl.run("wait", "--for=condition=Ready", f"pod/{slow}", f"pod/{forced}", "--timeout=30s"))

    started = time.monotonic()
    assert ok(kubectl.run("delete", "pod", slow)) == f'pod "{slow}" deleted\n'
    assert time.monotonic() - started >= 2.0  # kubectl waited for the pod's SIGTERM handler to finish
    assert exists(kubectl, "pods", slow) is None

    started = time.monotonic()
    run = kubectl.run("delete", "pod", forced, "--grace-period=0", "--force")
    assert ok(run) == f'pod "{forced}" force deleted\n'
    assert run.stderr.startswith("Warning: Immediate deletion does not wait for confirmation")
    assert time.monotonic() - started < 2.0 and exists(kubectl, "pods", forced) is None


def test_delete_deployment_with_each_cascade(kubectl):
    tag = secrets.token_hex(3)
    background, orphan, foreground = f"bg-{tag}", f"orphan-{tag}", f"fg-{tag}"
    for name in (background, orphan, foreground):
        ok(kubectl.run("create", "deployment", name, f"--image={AGNHOST}", "--replicas=2"))
    ok(kubectl.run("wait", "--for=condition=Available", f"deploy/{background}", f"deploy/{orphan}",
                   f"deploy/{foreground}", "--timeout=30s"))
    kept = {p["metadata"]["uid"] for p in pods_of(kubectl, orphan)}
    assert len(kept) == 2

    assert ok(kubectl.run("delete", f"deploy/{background}")) == f'deployment.apps "{background}" deleted\n'
    assert exists(kubectl, "deployments", background) is None
    wait_for(lambda: not pods_of(kubectl, background), 15, "the background deployment's pods collected")

    assert ok(kubectl.run("delete", f"deploy/{orphan}", "--cascade=orphan")) == \
        f'deployment.apps "{orphan}" deleted\n'
    left = pods_of(kubectl, orphan)  # by the time kubectl returns, the pods are released
    assert {p["metadata"]["uid"] for p in left} == kept
    assert all(not p["metadata"].get("ownerReferences") for p in left)

    assert ok(kubectl.run("delete", f"deploy/{foreground}", "--cascade=foreground")) == \
        f'deployment.apps "{foreground}" deleted\n'
    assert pods_of(kubectl, foreground) == []  # the Deployment went only after its pods
    time.sleep(0.5)
    assert {p["metadata"]["uid"] for p in pods_of(kubectl, orphan)} == kept
