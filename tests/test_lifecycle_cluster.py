"""Graceful pod deletion and events through a whole cluster of real processes: the API server marks a
pod Terminating, its Service stops counting it as ready, the real node agent stops it (SIGTERM, SIGKILL at
the deadline for a netns pod's processes) and deletes it; a forced delete is immediate; a dead agent's pod
stays Terminating until it is forced. The components record Kubernetes' events on the way."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

import pytest
from support.local_cluster import AGNHOST, eventually, service
from support.netns_pods import require_root

from podnet.client import ApiClient, ApiError
from podnet.netns.ip import list_namespaces

pytestmark = [pytest.mark.slow, pytest.mark.host_network]

NAMESPACE = "default"
GRACE = 2.0


def pod(name: str, app: str, *, command: str | None = None, grace: int | None = None) -> dict:
    """A pod for the scheduler to place; a netns pod running `command` under sh when one is given."""
    container: dict = {"name": "main", "image": AGNHOST, "ports": [{"containerPort": 8080}]}
    metadata: dict = {"name": name, "namespace": NAMESPACE, "labels": {"app": app}}
    if command:
        container["command"] = ["sh", "-c", command]
        metadata["annotations"] = {"podnet.io/pod-mode": "netns"}
    spec: dict = {"containers": [container]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _writing_to(obj: dict, directory: Path) -> dict:
    """`obj` with `directory` at /out, written as root."""
    obj["spec"]["volumes"] = [{"name": "out", "hostPath": {"path": str(directory), "type": "Directory"}}]
    obj["spec"]["securityContext"] = {"runAsUser": 0}
    obj["spec"]["containers"][0]["volumeMounts"] = [{"name": "out", "mountPath": "/out"}]
    return obj


async def current(client: ApiClient, name: str) -> dict | None:
    try:
        return await client.get("pods", name, NAMESPACE)
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


async def gone(client: ApiClient, name: str) -> bool:
    return await current(client, name) is None


async def events_of(client: ApiClient, name: str) -> list[tuple[str, str, str]]:
    listed = await client.list("events", NAMESPACE, field_selector=f"involvedObject.name={name}")
    return [(e["reason"], e["source"]["component"], e["message"]) for e in listed["items"]]


async def slice_conditions(client: ApiClient, service_name: str, ip: str) -> dict | None:
    slices = await client.list("endpointslices", NAMESPACE, label_selector=f"kubernetes.io/service-name={service_name}")
    return next((e["conditions"] for s in slices["items"] for e in s.get("endpoints") or [] if ip in e["addresses"]),
                None)


async def test_a_netns_pod_is_stopped_within_its_grace_period_and_leaves_its_service(local_cluster, tmp_path: Path):
    require_root()
    cluster = await local_cluster("127.0.75", nodes=1)
    client = cluster.client
    tag = secrets.token_hex(3)
    app = f"web-{tag}"
    marker = tmp_path / "sigterm"
    # The polite pod leaves its mark in this directory, bound into its sandbox: a hostPath, which takes a
    # privileged namespace.
    await client.patch("namespaces", NAMESPACE, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})
    # One that takes 3 s to finish after SIGTERM, one that ignores SIGTERM, one to force.
    polite, stubborn, forced, crasher = f"polite-{tag}", f"stubborn-{tag}", f"forced-{tag}", f"crash-{tag}"
    await cluster.create(
        pod(crasher, crasher, command="sleep 0.2; exit 1"),
        service(app, NAMESPACE, 8080),
        _writing_to(pod(polite, app, command="trap 'sleep 3; echo TERM > /out/sigterm; exit 0' TERM; "
                                              "while :; do sleep 0.1; done"), tmp_path),
        pod(stubborn, app, command="trap '' TERM; while :; do sleep 0.1; done", grace=2),
        pod(forced, app, command="while :; do sleep 0.1; done"),
    )
    running = {p["metadata"]["name"]: p for p in await cluster.wait_running(NAMESPACE, f"app={app}", 3)}
    ips = {name: p["status"]["podIP"] for name, p in running.items()}
    await eventually(lambda: _equal(cluster.ready_endpoints(NAMESPACE, app), set(ips.values())), 20,
                     "three ready endpoints")

    answer = await client.delete("pods", polite, NAMESPACE)
    assert answer["metadata"]["deletionGracePeriodSeconds"] == 30 and answer["metadata"]["deletionTimestamp"]
    await eventually(lambda: _without(cluster.ready_endpoints(NAMESPACE, app), ips[polite]), 5,
                     "the terminating pod leaves the ready endpoints")
    terminating = await current(client, polite)
    assert terminating is not None and terminating["metadata"]["deletionTimestamp"], "it is still Terminating"
    assert await slice_conditions(client, app, ips[polite]) == {"ready": False, "serving": True, "terminating": True}
    await eventually(lambda: gone(client, polite), 15, "the pod deleted by its agent once stopped")
    assert marker.read_text().strip() == "TERM"  # it got SIGTERM and finished on its own

    started = time.monotonic()
    await client.delete("pods", stubborn, NAMESPACE)
    await asyncio.sleep(1.0)
    assert await current(client, stubborn) is not None  # SIGTERM ignored: it waits for its deadline
    await eventually(lambda: gone(client, stubborn), 15, "the stubborn pod killed at its deadline")
    assert time.monotonic() - started >= 2.0

    answer = await client.delete("pods", forced, NAMESPACE, grace_period=0)
    assert answer["kind"] == "Pod" and await gone(client, forced)  # gone at once, before its agent knows
    await eventually(lambda: _async(not [n for n in list_namespaces() if forced in n]), 15,
                     "the agent removes the forced pod's namespace")
    assert await cluster.ready_endpoints(NAMESPACE, app) == set()

    reasons = await events_of(client, polite)
    assert ("Scheduled", "default-scheduler", f"Successfully assigned {NAMESPACE}/{polite} to node-1") in reasons
    for expected in (("Pulled", "kubelet", f'Container image "{AGNHOST}" already present on machine'),
                     ("Created", "kubelet", "Created container main"), ("Started", "kubelet", "Started container main"),
                     ("Killing", "kubelet", "Stopping container main")):
        assert expected in reasons
    node_events = await events_of(client, "node-1")
    assert ("Starting", "kubelet", "Starting kubelet.") in node_events

    # A container that keeps failing: BackOff, then started again, each repeat counted on one event.
    crashed = (await client.get("pods", crasher, NAMESPACE))["metadata"]["uid"]

    async def counts():
        listed = await client.list("events", NAMESPACE, field_selector=f"involvedObject.name={crasher}")
        found = {(e["type"], e["reason"], e["message"]): e["count"] for e in listed["items"]}
        return found if found.get(("Normal", "Started", "Started container main"), 0) >= 3 else None

    found = await eventually(counts, 20, "the crashing container restarted twice")
    assert found[("Warning", "BackOff",
                  f"Back-off restarting failed container main in pod {crasher}_{NAMESPACE}({crashed})")] >= 2
    assert found[("Normal", "Created", "Created container main")] >= 3
    assert ("RegisteredNode", "node-controller", "Node node-1 event: Registered Node node-1 in Controller") in node_events


async def test_a_dead_agents_pod_stays_terminating_until_forced(local_cluster):
    cluster = await local_cluster("127.0.76", nodes=1, node_grace_period=GRACE, pod_eviction_timeout=300)
    client = cluster.client
    tag = secrets.token_hex(3)
    quick, held = f"quick-{tag}", f"held-{tag}"
    await cluster.create(pod(quick, quick), pod(held, held))
    await cluster.wait_running(NAMESPACE, f"app={quick}", 1)
    (held_pod,) = await cluster.wait_running(NAMESPACE, f"app={held}", 1)

    # A virtual pod is torn down at once by its live agent; `podnet delete` waits for that, as kubectl does.
    assert await podnet(cluster, "delete", "pod", quick) == (0, f'pod "{quick}" deleted\n')
    assert await gone(client, quick)

    cluster.kill("node-1/agent")
    await cluster.wait_dead("node-1/agent")
    await client.delete("pods", held, NAMESPACE)
    await eventually(lambda: _async_not(cluster.node_ready("node-1")), GRACE + 10, "node-1 NotReady")
    await asyncio.sleep(1.0)
    still = await current(client, held)
    assert still is not None and still["metadata"]["deletionTimestamp"]  # nobody finishes it
    node_events = await events_of(client, "node-1")
    assert ("NodeNotReady", "node-controller", "Node node-1 status is now: NodeNotReady") in node_events

    assert await podnet(cluster, "delete", "pod", held, "--grace-period=0") == (
        1, "error: --grace-period=0 must have --force specified\n")
    assert await podnet(cluster, "delete", "pod", held, "--grace-period=0", "--force") == (
        0, f'pod "{held}" force deleted\n')
    assert await gone(client, held)
    await cluster.start("node-1/agent")
    held_ips = {p["ip"] for p in await cluster.rpc("node-1", "pods.list")}
    assert held_pod["status"]["podIP"] not in held_ips


async def podnet(cluster, *args: str) -> tuple[int, str]:
    """`podnet ARGS` against the cluster: its exit code, and stdout (stderr when it failed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "podnet", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PODNET_HOME": str(cluster.home)})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, (out if process.returncode == 0 else err).decode()


async def _equal(awaitable, expected):
    return await awaitable == expected


async def _without(awaitable, ip):
    return ip not in await awaitable


async def _async(value):
    return value


async def _async_not(awaitable):
    return not await awaitable
