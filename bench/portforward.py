"""`kubectl port-forward` through podnet: what a forwarded connection costs, and how fast bytes flow.

A 2-node cluster is brought up as `podnet up` does it (TLS, the admin kubeconfig), an agnhost pod is placed on
node-2, and the real kubectl forwards a local port to it, once over its default WebSocket tunnel and once over
its SPDY upgrade (KUBECTL_PORT_FORWARD_WEBSOCKETS=false). For each:
- connection round trip: a new TCP connection to the forwarded port, `GET /hostname`, the answer read to its
  end (kubectl → API server → the node agent's kubelet API → the pod's userspace TCP, and back), p50 and p99
  over CONNECTIONS sequential ones;
- throughput: ECHO_MIB written to the pod's echo port and read back whole, in MiB/s each way.
The same two figures through a NodePort of node-2 (a Service in front of the pod) are the baseline: the
pod's userspace TCP and the node's bridge without kubectl, the API server and the kubelet API in the way.
Prints one JSON object as the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from podnet.cli import cluster_cmd
from podnet.client import ApiClient
from podnet.cluster import supervisor, topology
from podnet.cluster.supervisor import ClusterState

PREFIX = "127.0.93"
CONNECTIONS = int(os.environ.get("PODNET_BENCH_CONNECTIONS", "200"))
ECHO_MIB = int(os.environ.get("PODNET_BENCH_ECHO_MIB", "16"))
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.47"
NODE_PORT = 30080


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def round_trip(host: str, port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /hostname HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    if b"bench-web" not in answer:
        raise RuntimeError(f"unexpected answer {answer[:200]!r}")
    return time.perf_counter() - started


async def echo_mib_per_s(host: str, port: int) -> float:
    payload = os.urandom(ECHO_MIB << 20)
    reader, writer = await asyncio.open_connection(host, port)
    started = time.perf_counter()
    writer.write(payload)
    echoed = await reader.readexactly(len(payload))
    elapsed = time.perf_counter() - started
    writer.close()
    if echoed != payload:
        raise RuntimeError("the echo differs from what was sent")
    return ECHO_MIB / elapsed


async def figures(host: str, port: int) -> dict:
    times = [await round_trip(host, port) for _ in range(CONNECTIONS)]
    return {
        "connection_round_trip_ms": {"p50": round(percentile(times, 0.5) * 1e3, 2),
                                     "p99": round(percentile(times, 0.99) * 1e3, 2)},
        "echo_mib_per_s": round(await echo_mib_per_s(host, port), 1),
    }


async def measure(kubeconfig: Path, websockets: bool) -> dict:
    port = free_port()
    env = {**os.environ, "KUBECTL_PORT_FORWARD_WEBSOCKETS": "true" if websockets else "false"}
    kubectl = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), "port-forward", "pod/bench-web", f"{port}:80",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        async with asyncio.timeout(20):
            while not (await kubectl.stdout.readline()).startswith(b"Forwarding from 127.0.0.1"):
                pass
        return await figures("127.0.0.1", port)
    finally:
        kubectl.terminate()
        await kubectl.wait()


async def run(root: Path) -> dict:
    topo = topology.build(root, 2, prefix=PREFIX, lb_pool=f"{PREFIX}.128/26")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # `bring_up` narrates; stdout is the JSON line
            await cluster_cmd.bring_up(topo, timeout=120)
        kubeconfig = topo.home / "kubeconfig"
        async with ApiClient.from_kubeconfig(kubeconfig) as client:
            await client.create({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": "bench-web", "namespace": "default", "labels": {"app": "bench-web"}},
                                 "spec": {"nodeName": "node-2", "containers": [
                                     {"name": "web", "image": AGNHOST, "ports": [{"containerPort": 80}]}]}})
            await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench-web", "namespace": "default"},
                                 "spec": {"type": "NodePort", "selector": {"app": "bench-web"},
                                          "ports": [{"port": 80, "nodePort": NODE_PORT}]}})
            async with asyncio.timeout(30):
                while ((await client.get("pods", "bench-web", namespace="default")).get("status") or {}).get("phase") != "Running":
                    await asyncio.sleep(0.2)
        node_address = topo.node("node-2").address
        async with asyncio.timeout(30):  # until kube-proxy has programmed the NodePort
            while True:
                with contextlib.suppress(OSError, RuntimeError):
                    await round_trip(node_address, NODE_PORT)
                    break
                await asyncio.sleep(0.2)
        log("NodePort baseline")
        baseline = await figures(node_address, NODE_PORT)
        log("port-forward over WebSocket")
        websocket = await measure(kubeconfig, websockets=True)
        log("port-forward over SPDY")
        spdy = await measure(kubeconfig, websockets=False)
        return {"benchmark": "portforward", "connections": CONNECTIONS, "echo_mib": ECHO_MIB,
                "websocket": websocket, "spdy": spdy, "nodeport_baseline": baseline}
    finally:
        if (topo.home / supervisor.STATE_FILE).exists():  # whatever started, even if bring_up failed
            await supervisor.stop_all(ClusterState.load(topo.home))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="podnet-bench-portforward-") as tmp:
        print(json.dumps(asyncio.run(run(Path(tmp)))))


if __name__ == "__main__":
    main()
