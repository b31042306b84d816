"""The real kubectl, with the kubeconfig `podnet up` writes (TLS, the admin's client certificate), against
a whole local cluster: `wait --for=condition=Ready`, `wait --for=delete`, `delete` that waits for the
agent to finish a graceful termination, `--force`, `--cascade=background|orphan|foreground`, `get events`
and `describe`'s Events."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass

import pytest
from support.local_cluster import AGNHOST, LocalCluster, eventually
from support.netns_pods import require_root

from podnet.client import ApiError

pytestmark = [pytest.mark.slow, pytest.mark.host_network]

SLOW_TO_STOP = "trap 'sleep 2; exit 0' TERM; while :; do sleep 0.1; done"


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    out: str
    err: str


def _env(cluster: LocalCluster) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.home / "kubeconfig")}


async def start(cluster: LocalCluster, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec("kubectl", *args, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=_env(cluster))


async def finished(process: asyncio.subprocess.Process, timeout: float = 60.0) -> Ran:
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return Ran(process.returncode or 0, out.decode(), err.decode())


async def kubectl(cluster: LocalCluster, *args: str) -> str:
    """kubectl's stdout; the test fails when kubectl does."""
    ran = await finished(await start(cluster, *args))
    assert ran.code == 0, f"kubectl {' '.join(args)} failed ({ran.code}): {ran.err}"
    return ran.out


async def pod_or_none(cluster: LocalCluster, name: str) -> dict | None:
    try:
        return await cluster.client.get("pods", name, "default")
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


async def pods_of(cluster: LocalCluster, app: str) -> list[dict]:
    return (await cluster.client.list("pods", "default", label_selector=f"app={app}"))["items"]


async def test_wait_for_ready_then_the_events_in_describe_and_get(local_cluster):
    cluster = await local_cluster("127.0.77", nodes=1)
    name = f"web-{secrets.token_hex(3)}"
    assert await kubectl(cluster, "run", name, f"--image={AGNHOST}", "--port=8080") == f"pod/{name} created\n"
    assert await kubectl(cluster, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=30s") == \
        f"pod/{name} condition met\n"

    async def described():
        out = await kubectl(cluster, "describe", "pod", name)
        return out if "Started" in out else None

    events = (await eventually(described, 10, "the pod's events in describe")).split("\nEvents:\n", 1)[1]
    lines = events.splitlines()
    assert lines[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    rows = [line.split(None, 4) for line in lines[2:]]
    assert [r[0:2] + r[3:] for r in rows] == [
        ["Normal", "Scheduled", "default-scheduler", f"Successfully assigned default/{name} to node-1"],
        ["Normal", "Pulled", "kubelet", f'Container image "{AGNHOST}" already present on machine'],
        ["Normal", "Created", "kubelet", f"Created container {name}"],
        ["Normal", "Started", "kubelet", f"Started container {name}"],
    ]

    columns = "custom-columns=REASON:.reason,FROM:.source.component,HOST:.source.host,COUNT:.count,OBJECT:" \
              ".involvedObject.name"
    listed = await kubectl(cluster, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", columns)
    assert listed.splitlines() == ["REASON      FROM                HOST     COUNT   OBJECT",
                                   f"Scheduled   default-scheduler   <none>   1       {name}",
                                   f"Pulled      kubelet             node-1   1       {name}",
                                   f"Created     kubelet             node-1   1       {name}",
                                   f"Started     kubelet             node-1   1       {name}"]
    wide = (await kubectl(cluster, "get", "events", "-o", "wide")).splitlines()
    assert wide[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST",
                               "SEEN", "COUNT", "NAME"]
    started = next(line for line in wide if f"pod/{name}" in line and " Started " in line)
    assert started.split()[4:10] == [f"spec.containers{{{name}}}", "kubelet,", "node-1", "Started", "container",
                                     name]
    registered = next(line for line in wide if " RegisteredNode " in line)
    assert "node/node-1" in registered and "node-controller" in registered


async def test_deletes_that_wait_for_the_agent_and_one_that_does_not(local_cluster):
    require_root()  # netns pods: real processes that take their time to stop
    cluster = await local_cluster("127.0.78", nodes=1)
    tag = secrets.token_hex(3)
    watched, slow, forced = f"watched-{tag}", f"slow-{tag}", f"forced-{tag}"
    for name in (watched, slow, forced):
        await kubectl(cluster, "run", name, f"--image={AGNHOST}", "--annotations=podnet.io/pod-mode=netns",
                      "--command", "--", "sh", "-c", SLOW_TO_STOP)
    await kubectl(cluster, "wait", "--for=condition=Ready", f"pod/{watched}", f"pod/{slow}", f"pod/{forced}",
                  "--timeout=60s")

    waiting = await start(cluster, "wait", "--for=delete", f"pod/{watched}", "--timeout=30s")
    await asyncio.sleep(0.5)
    assert waiting.returncode is None  # it waits
    await cluster.client.delete("pods", watched, "default")
    listed = (await kubectl(cluster, "get", "pod", watched)).splitlines()  # while its SIGTERM handler runs
    assert listed[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert listed[1].split()[:3] == [watched, "1/1", "Terminating"]
    assert await finished(waiting) == Ran(0, f"pod/{watched} condition met\n", "")
    assert await pod_or_none(cluster, watched) is None

    started = time.monotonic()
    assert await kubectl(cluster, "delete", "pod", slow) == f'pod "{slow}" deleted\n'
    assert time.monotonic() - started >= 2.0  # kubectl waited for the pod's SIGTERM handler to finish
    assert await pod_or_none(cluster, slow) is None

    started = time.monotonic()
    ran = await finished(await start(cluster, "delete", "pod", forced, "--grace-period=0", "--force"))
    assert (ran.code, ran.out) == (0, f'pod "{forced}" force deleted\n')
    assert ran.err.startswith("Warning: Immediate deletion does not wait for confirmation")
    assert time.monotonic() - started < 2.0 and await pod_or_none(cluster, forced) is None


async def test_delete_a_deployment_with_each_cascade(local_cluster):
    cluster = await local_cluster("127.0.79", nodes=1)
    tag = secrets.token_hex(3)
    background, orphan, foreground = f"bg-{tag}", f"orphan-{tag}", f"fg-{tag}"
    for name in (background, orphan, foreground):
        await kubectl(cluster, "create", "deployment", name, f"--image={AGNHOST}", "--replicas=2")
    await kubectl(cluster, "wait", "--for=condition=Available", f"deploy/{background}", f"deploy/{orphan}",
                  f"deploy/{foreground}", "--timeout=60s")
    kept = {p["metadata"]["uid"] for p in await pods_of(cluster, orphan)}
    assert len(kept) == 2

    assert await kubectl(cluster, "delete", f"deploy/{background}") == f'deployment.apps "{background}" deleted\n'
    with pytest.raises(ApiError):
        await cluster.client.get("deployments", background, "default")
    await eventually(lambda: _none(pods_of(cluster, background)), 15, "the background deployment's pods collected")

    assert await kubectl(cluster, "delete", f"deploy/{orphan}", "--cascade=orphan") == \
        f'deployment.apps "{orphan}" deleted\n'
    left = await pods_of(cluster, orphan)  # by the time kubectl returns, the ReplicaSet is released
    assert {p["metadata"]["uid"] for p in left} == kept
    [replicaset] = {p["metadata"]["ownerReferences"][0]["name"] for p in left}  # the pods stay its own
    assert not (await cluster.client.get("replicasets", replicaset, "default"))["metadata"].get("ownerReferences")

    assert await kubectl(cluster, "delete", f"deploy/{foreground}", "--cascade=foreground") == \
        f'deployment.apps "{foreground}" deleted\n'
    assert await pods_of(cluster, foreground) == []  # the Deployment went only after its pods
    await asyncio.sleep(0.5)
    assert {p["metadata"]["uid"] for p in await pods_of(cluster, orphan)} == kept


async def _none(awaitable) -> bool:
    return not await awaitable
