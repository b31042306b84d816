"""L7 policy with netns pods on real node agents (127.0.217.x, two nodes, root): a real
Python `http.server` behind the seed's kind of rule, and real curl from other pods.

- ingress: the backend's CiliumNetworkPolicy allows GET /api/.* from the frontend; curl's DELETE gets
  the proxy's 403 "Access denied", GET /api/x the server's 200, and one curl run carries allowed and
  denied requests over one kept-alive connection;
- egress: a pod whose own policy allows only GET /hostname to a virtual agnhost pod gets the 403 from
  the proxy on its own node for DELETE, while GET passes;
- the requests are in the flow log with their status, direction and deciding rule;
- 10,000 malformed requests from the frontend, each on its own connection: refused 400 (431, 505) or
  dropped as not HTTP, counted, and the agent serves on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.kubectl import Kubectl
from support.local_cluster import AGNHOST, eventually
from support.netns_pods import ensure_tools, require_root
from test_l7_live import CRDS

from podnet.client import ApiError
from podnet.netns.names import namespace_name

pytestmark = [pytest.mark.root, pytest.mark.slow]

NETNS = {"podnet.io/pod-mode": "netns"}
FUZZ = Path(__file__).parent / "support" / "http_fuzz.py"
FUZZ_REQUESTS = 10_000
BACKEND_POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-l7, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/api/.*"}
"""
EGRESS_POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: egressor-l7, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: egressor}}
  egress:
  - toEndpoints: [{matchLabels: {app: plain}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: /hostname}
"""
API_FILES = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "api", "namespace": "default"},
             "data": {"x": "the x resource\n"}}


def netns_pod(name: str, node: str, command: list[str], ports: list[dict] | None = None) -> dict:
    container: dict = {"name": "main", "image": "debian", "command": command}
    if ports:
        container["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}, "annotations": NETNS},
        "spec": {"nodeName": node, "containers": [container]},
    }


# `python3 -m http.server` with a listen backlog the fuzz does not fill. Its own is 5, which the fuzz's
# sixteen connections at once overflow while the server's accept loop waits for a core; a kernel whose
# accept queue overflows falls back to SYN cookies and resets a connection whose cookie-carrying ACK it had
# to drop, with or without a proxy in front.
BACKEND = ("import functools, http.server as h; h.ThreadingHTTPServer.request_queue_size = 4096; "
           "h.ThreadingHTTPServer(('', 8080), functools.partial(h.SimpleHTTPRequestHandler, directory='/www'))"
           ".serve_forever()")


def backend_pod() -> dict:
    pod = netns_pod("backend", "node-1", ["python3", "-c", BACKEND], [{"containerPort": 8080}])
    pod["spec"]["volumes"] = [{"name": "api", "configMap": {"name": "api"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "api", "mountPath": "/www/api"}]
    return pod


def plain_pod() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": "default", "labels": {"app": "plain"}},
        "spec": {"nodeName": "node-1",
                 "containers": [{"name": "c", "image": AGNHOST, "ports": [{"containerPort": 8080}]}]},
    }


async def install_crds(cluster) -> None:
    for crd in yaml.safe_load_all(CRDS.read_text()):
        if crd is not None:
            await cluster.client.create(crd)


async def create_policy(cluster, text: str) -> None:
    async def created() -> bool:
        try:
            await cluster.client.request(
                "POST", "/apis/cilium.io/v2/namespaces/default/ciliumnetworkpolicies", body=yaml.safe_load(text)
            )
        except ApiError as e:
            if e.code != 404:  # the CRD's routes may lag its creation by a moment
                raise
            return False
        return True

    await eventually(created, 15, "the CiliumNetworkPolicy created")


async def test_netns_pods_behind_and_in_front_of_the_l7_proxy(local_cluster):
    require_root()
    ensure_tools()
    cluster = await local_cluster("127.0.217", nodes=2)
    kubectl = Kubectl(cluster.home)
    await install_crds(cluster)
    await cluster.create(
        API_FILES,
        backend_pod(),
        plain_pod(),
        netns_pod("frontend", "node-2", ["sleep", "3600"]),
        netns_pod("egressor", "node-2", ["sleep", "3600"]),
    )
    pods = {p["metadata"]["name"]: p for p in await cluster.wait_running("default", None, 4)}
    backend = pods["backend"]["status"]["podIP"]
    plain = pods["plain"]["status"]["podIP"]

    async def curl(pod: str, *args: str) -> subprocess.CompletedProcess:
        return await kubectl.arun("exec", pod, "--", "curl", "-sS", "--max-time", "3", *args)

    async def serving() -> bool:
        return (await curl("frontend", f"http://{backend}:8080/api/x")).stdout == "the x resource\n"

    await eventually(serving, 20, "the backend serving")
    # Before the policy, the server itself answers DELETE: http.server has no such method.
    assert "501" in (await curl("frontend", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE",
                                f"http://{backend}:8080/api/x")).stdout

    await create_policy(cluster, BACKEND_POLICY)

    async def denied() -> subprocess.CompletedProcess | None:
        run = await curl("frontend", "-i", "-X", "DELETE", f"http://{backend}:8080/api/x")
        return run if run.stdout.startswith("HTTP/1.1 403") else None

    answer = await eventually(denied, 20, "DELETE answered 403 by the proxy")
    assert answer.stdout.endswith("\r\n\r\nAccess denied\r\n"), answer.stdout
    allowed = await curl("frontend", "-i", f"http://{backend}:8080/api/x")
    assert allowed.stdout.startswith("HTTP/1.0 200 OK") and allowed.stdout.endswith("the x resource\n"), allowed
    root = await curl("frontend", "-o", "/dev/null", "-w", "%{http_code}", f"http://{backend}:8080/")
    assert root.stdout == "403", root
    # One curl, one connection: the proxy's 403 keeps it open, and curl reuses it (num_connects 0) for
    # the next requests; http.server (HTTP/1.0) closes it after its own answer, so that one comes last.
    url = f"http://{backend}:8080/api/x"
    write = "%{http_code} %{num_connects}\\n"
    turns = await curl("frontend", "-o", "/dev/null", "-w", write, "-X", "DELETE", url,
                       "--next", "-o", "/dev/null", "-w", write, "-X", "DELETE", url,
                       "--next", "-o", "/dev/null", "-w", write, url)
    assert turns.stdout.splitlines() == ["403 1", "403 0", "200 0"], turns
    # Another pod is refused at L3/L4: no connection at all.
    stranger = await curl("egressor", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url)
    assert stranger.returncode != 0 and stranger.stdout == "000", stranger

    # Egress: the egressor's own rule, enforced on its node, in front of a virtual pod.
    await create_policy(cluster, EGRESS_POLICY)

    async def egress_denied() -> bool:
        run = await curl("egressor", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE",
                         f"http://{plain}:8080/hostname")
        return run.stdout == "403"

    await eventually(egress_denied, 20, "DELETE from the egressor answered 403")
    kept = await curl("egressor", "-w", " %{http_code} %{num_connects}\\n", f"http://{plain}:8080/hostname",
                      "--next", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n", "-X", "DELETE",
                      f"http://{plain}:8080/hostname")
    assert kept.stdout.splitlines() == ["plain 200 1", "403 0"], kept

    def flows(node: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "podnet", "flows", "--node", node, "--home", str(cluster.home)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if " HTTP " in line]

    node1 = flows("node-1")
    assert any(re.search(rf"GET http://{backend}:8080/api/x → 200 \(\d+\.\d ms\)  allowed by default/backend-l7", line)
               for line in node1), node1
    assert any(f"DELETE http://{backend}:8080/api/x → 403  denied by default/backend-l7 ingress rule 0" in line
               for line in node1), node1
    node2 = flows("node-2")
    assert any(f"DELETE http://{plain}:8080/hostname → 403  denied by default/egressor-l7 egress rule 0" in line
               for line in node2), node2
    counters = await cluster.rpc("node-1", "counters")
    assert counters.get("l7.denied", 0) >= 3 and counters.get("l7.allowed", 0) >= 2, counters

    # Last, as it fills the flow log: malformed requests, each on its own connection through the proxy: answered 400 (431, 505) with the
    # reason, counted, and the agent serves on unharmed.
    before = await cluster.rpc("node-1", "counters")
    fuzz = await kubectl.arun("exec", "-i", "frontend", "--", "python3", "-", backend, "8080", str(FUZZ_REQUESTS),
                              input=FUZZ.read_bytes(), timeout=600)
    assert fuzz.returncode == 0, fuzz.stderr
    statuses = json.loads(fuzz.stdout)
    # Most stay malformed; a change in the request line makes it not HTTP at all (dropped without an
    # answer, as a port under L7 rules carries HTTP only); a few happen to make a valid request, which
    # gets its ordinary answer. None is reset, none goes unanswered for want of the agent.
    refused = sum(statuses.get(code, 0) for code in ("400", "431", "505"))
    assert sum(statuses.values()) == FUZZ_REQUESTS and refused >= 0.6 * FUZZ_REQUESTS, statuses
    after = await cluster.rpc("node-1", "counters")

    def diagnosis() -> str:
        """The statuses, what changed in the agent's counters, and the backend's kernel's counters of
        connections it could not queue."""
        changed = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
        kernel = subprocess.run(["ip", "netns", "exec", namespace_name("node-1", "default", "backend"), "nstat", "-az",
                                 "TcpExtListenOverflows", "TcpExtSyncookiesSent", "TcpExtSyncookiesFailed"],
                                capture_output=True, text=True, timeout=10)
        return json.dumps([statuses, changed]) + "\n" + kernel.stdout

    assert all(status == "none" or status.isdigit() for status in statuses), diagnosis()
    # (a denied request's 403 may come before its malformed body is found, and that is counted too)
    malformed = after.get("l7.malformed", 0) - before.get("l7.malformed", 0)
    assert refused <= malformed <= FUZZ_REQUESTS - statuses.get("none", 0), (malformed, statuses)
    assert 0 < after.get("l7.not_http", 0) - before.get("l7.not_http", 0) <= statuses.get("none", 0)
    assert (await curl("frontend", f"http://{backend}:8080/api/x")).stdout == "the x resource\n"
