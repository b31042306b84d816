"""exec and logs through the API server: what a round trip costs, and what the relay to the kubelet adds.

A 2-node cluster brought up as `podnet up` does (TLS, client certificates), a virtual pod on node-2, then:
- exec round trip: open the `v5.channel.k8s.io` WebSocket to `pods/{name}/exec?command=hostname`, read
  stdout and the exit status until the server closes, sequentially, N times; p50/p99 in ms, through the
  API server and straight to the node's kubelet API (with the API server's kubelet client certificate);
- `kubectl exec POD -- hostname`, the whole command (kubectl's own start included), a few times;
- `pods/{name}/log` of the pod's access log, N times.
Prints one JSON object as the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from cluster import cluster_up  # bench/cluster.py, beside this script

from podnet import kubeconfig
from podnet.client import ApiClient
from podnet.cluster import credentials, kubelet_credentials, topology

ROUNDS = int(os.environ.get("PODNET_BENCH_EXEC_ROUNDS", "200"))
KUBECTL_ROUNDS = 10
PREFIX = "127.0.87"
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench-exec", "namespace": "default"},
       "spec": {"nodeName": "node-2", "containers": [{"name": "web", "image": "agnhost", "ports": [{"containerPort": 80}]}]}}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    pick = lambda f: round(ordered[min(len(ordered) - 1, int(round(f * (len(ordered) - 1))))] * 1000, 2)  # noqa: E731
    return {"n": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


async def exec_once(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
        output = b""
        async for message in ws:
            output += message.data
    if b'"Success"' not in output:
        raise RuntimeError(f"exec failed: {output!r}")
    return time.perf_counter() - started


async def measure(topo: topology.Topology) -> dict:
    admin = kubeconfig.load(topo.home / "kubeconfig")
    async with ApiClient.from_kubeconfig(topo.home / "kubeconfig") as client:
        await client.create(POD)
        while (await client.get("pods", "bench-exec", "default")).get("status", {}).get("phase") != "Running":
            await asyncio.sleep(0.1)
        node = await client.get("nodes", "node-2")
    query = "command=hostname&stdout=true&stderr=true"
    via_api = f"{admin.server}/api/v1/namespaces/default/pods/bench-exec/exec?{query}"
    port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    direct = f"https://{topo.node('node-2').address}:{port}/exec/default/bench-exec/web?{query}"
    kubelet_client = ssl.create_default_context(cafile=credentials.ca_file(topo.home))
    kubelet_client.load_cert_chain(*kubelet_credentials.client_files(topo.home))
    figures: dict = {}
    for name, url, context in (("exec_via_apiserver", via_api, admin.tls.context()),
                               ("exec_kubelet_direct", direct, kubelet_client)):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            await exec_once(session, url)  # warm
            figures[name] = summary([await exec_once(session, url) for _ in range(ROUNDS)])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=admin.tls.context())) as session:
        log_url = f"{admin.server}/api/v1/namespaces/default/pods/bench-exec/log"
        timings = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            async with session.get(log_url) as response:
                await response.read()
                assert response.status == 200, response.status
            timings.append(time.perf_counter() - started)
        figures["log_via_apiserver"] = summary(timings)
    kubectl = ["kubectl", "--kubeconfig", str(topo.home / "kubeconfig"), "exec", "bench-exec", "--", "hostname"]
    timings = []
    for _ in range(KUBECTL_ROUNDS):
        started = time.perf_counter()
        done = await asyncio.to_thread(subprocess.run, kubectl, capture_output=True)
        timings.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl exec failed: {done.stderr.decode()}")
    figures["kubectl_exec"] = summary(timings)
    return figures


async def run(root: Path) -> dict:
    topo = topology.build(root, 2, prefix=PREFIX, lb_pool=f"{PREFIX}.128/26")
    async with cluster_up(topo, timeout=120):
        return await measure(topo)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="podnet-bench-streams-") as tmp:
        with contextlib.redirect_stdout(sys.stderr):  # `bring_up` narrates; stdout is the JSON line
            figures = asyncio.run(run(Path(tmp)))
    print(json.dumps({"benchmark": "streams", **figures}))


if __name__ == "__main__":
    main()
