"""L7 policy on real node agents (127.0.181.x, two nodes): Cilium's CRDs installed, the seed's backend
policy applied through the API server, and real requests from virtual pods on the other node: GET of an
allowed path reaches the backend, DELETE and a path outside the rule get the proxy's 403, a pod without
the frontend label gets no connection at all, and the proxy's verdicts are counted in the backend pod;
the trace has its l7-policy stage; a virtual pod's own egress HTTP rules are enforced on its node."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.local_cluster import AGNHOST, eventually

from podnet.client import ApiError
from podnet.rpc.session import RpcError

pytestmark = pytest.mark.slow

CRDS = Path(__file__).parent.parent / "deploy" / "crds" / "cilium.yaml"
POLICY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "backend-l7", "namespace": "default"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "backend"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "frontend"}}],
                "toPorts": [
                    {
                        "ports": [{"port": "8080", "protocol": "TCP"}],
                        "rules": {"http": [{"method": "GET", "path": "/(hostname|echo\\?.*)"}]},
                    }
                ],
            }
        ],
    },
}


def pod(name: str, app: str, node: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": AGNHOST, "ports": [{"containerPort": 8080}]}],
        },
    }


async def test_l7_policy_enforced_on_real_agents(local_cluster):
    cluster = await local_cluster("127.0.181", nodes=2)
    for crd in yaml.safe_load_all(CRDS.read_text()):
        if crd is not None:
            await cluster.client.create(crd)

    async def established() -> bool:
        for name in ("ciliumnetworkpolicies.cilium.io", "ciliumclusterwidenetworkpolicies.cilium.io"):
            crd = await cluster.client.get("customresourcedefinitions", name)
            conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
            if conditions.get("Established") != "True":
                return False
        return True

    await eventually(established, 15, "Cilium's CRDs established")
    await cluster.create(
        pod("backend", "backend", "node-1"),
        pod("frontend", "frontend", "node-2"),
        pod("stranger", "stranger", "node-2"),
    )
    pods = {p["metadata"]["name"]: p for p in await cluster.wait_running("default", None, 3)}
    backend = pods["backend"]["status"]["podIP"]

    async def request(src: str, method: str, path: str) -> dict:
        params = {
            "namespace": "default",
            "pod": src,
            "url": f"http://{backend}:8080{path}",
            "method": method,
            "timeout": 3.0,
        }
        return await cluster.rpc("node-2", "pod.http", params, timeout=10)

    # Before the policy: everything reaches the backend.
    assert (await request("stranger", "DELETE", "/hostname"))["status"] == 200

    async def created() -> bool:
        try:
            await cluster.client.request(
                "POST", "/apis/cilium.io/v2/namespaces/default/ciliumnetworkpolicies", body=POLICY
            )
        except ApiError as e:
            if e.code != 404:  # the CRD's routes may lag its Established condition by a moment
                raise
            return False
        return True

    await eventually(created, 10, "the CiliumNetworkPolicy created")

    async def enforced() -> dict | None:
        answer = await request("frontend", "DELETE", "/hostname")
        return answer if answer.get("status") == 403 else None

    denied = await eventually(enforced, 15, "DELETE from the frontend answered 403 by the proxy")
    assert denied["body"] == b"Access denied\r\n"
    allowed = await request("frontend", "GET", "/hostname")
    assert (allowed["status"], allowed["body"]) == (200, b"backend")
    assert (await request("frontend", "GET", "/echo?msg=hello"))["body"] == b"hello"
    assert (await request("frontend", "GET", "/admin"))["status"] == 403
    # A pod without the frontend label is refused at L3/L4: no connection, no HTTP answer at all.
    refused = await request("stranger", "GET", "/hostname")
    assert not refused["ok"] and "status" not in refused
    assert not await cluster.probe(pods["stranger"], backend, 8080, timeout=1.0)
    # Bytes that are not HTTP, to the port under L7 rules: dropped (nothing echoed), counted.
    transfer = {
        "namespace": "default",
        "pod": "frontend",
        "dst": backend,
        "port": 8080,
        "bytes": 4096,
        "timeout": 2.0,
    }
    with pytest.raises(RpcError):
        await cluster.rpc("node-2", "pod.tcp_transfer", transfer, timeout=10)
    listed = await cluster.rpc("node-1", "pods.list")
    counters = next(p["counters"] for p in listed if p["name"] == "backend")
    assert counters.get("l7_allowed", 0) >= 2 and counters.get("l7_denied", 0) >= 2, counters
    assert counters.get("l7_not_http") == 1, counters
    node = await cluster.rpc("node-1", "counters")  # what /metrics shows as podnet_dataplane_packets{event}
    assert node["l7.allowed"] == counters["l7_allowed"] and node["l7.denied"] == counters["l7_denied"]

    def podnet(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "podnet", *args, "--home", str(cluster.home)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def explain(*args: str) -> str:
        return podnet("explain", *args)

    # The proxy's requests in the flow log, as Hubble shows L7 flows.
    flows = podnet("flows", "--node", "node-1").splitlines()
    http = [line for line in flows if " HTTP default/frontend(" in line]
    assert any(
        "ALLOWED HTTP" in line
        and f"GET http://{backend}:8080/hostname → 200  allowed by default/backend-l7" in line
        for line in http
    ), http
    assert any(
        "DENIED  HTTP" in line
        and f"DELETE http://{backend}:8080/hostname → 403  denied by default/backend-l7 ingress rule 0"
        in line
        for line in http
    ), http

    said = explain("frontend", "backend:8080", "--http", "DELETE /hostname")
    assert "http DELETE /hostname: denied: answered 403 by the proxy" in said
    assert "DELETE /hostname: denied by default/backend-l7 ingress rule 0: no HTTP rule matched" in said
    assert "http GET /hostname: allowed" in explain("frontend", "backend:8080", "--http", "GET /hostname")
    assert "http GET /hostname: denied at L3/L4 (no connection)" in explain(
        "stranger", "backend:8080", "--http", "GET /hostname"
    )

    # The trace's l7-policy stage, recorded where the ingress policy is decided: the backend's node.
    traced = podnet("trace", "frontend", f"{backend}:8080").splitlines()
    stages = [line.split(None, 2)[1:] for line in traced[1:]]
    assert [
        "l7-policy",
        "each HTTP request goes through the L7 proxy on node-1: allowed if it matches default/backend-l7 "
        "ingress rule 0 http[0] method='GET' path='/(hostname|echo\\\\?.*)'; otherwise answered 403 Access denied",
    ] in stages, traced
    ingress = next(i for i, s in enumerate(stages) if s[0] == "ingress-policy")
    assert stages[ingress + 1][0] == "l7-policy", traced

    # The request-level matrix: probed through the agents, and from the policies alone; they agree.
    table = podnet("matrix", "-n", "default", "--port", "8080", "--http", "DELETE /hostname")
    lines = table.splitlines()
    assert lines[0] == "8080/TCP DELETE /hostname:"
    assert lines[1].split() == ["-", "default/backend", "default/frontend", "default/stranger"]
    # rows from, columns to: only the backend's column is closed, to both other pods (403 or no connection)
    assert [line.split() for line in lines[2:5]] == [
        ["default/backend", ".", ".", "."],
        ["default/frontend", "X", ".", "."],
        ["default/stranger", "X", ".", "."],
    ]

    # Egress HTTP rules of a virtual pod: the stranger may only GET /hostname from the frontend, enforced
    # by the proxy on the stranger's own node, which the frontend (no policy of its own) never meets.
    egress = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "stranger-l7", "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "stranger"}},
            "egress": [
                {
                    "toEndpoints": [{"matchLabels": {"app": "frontend"}}],
                    "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}],
                                 "rules": {"http": [{"method": "GET", "path": "/hostname"}]}}],
                }
            ],
        },
    }
    # podnet apply takes the manifest as kubectl does, its kind found in the server's discovery (the CRD's).
    manifest = cluster.home / "stranger-l7.yaml"
    manifest.write_text(yaml.safe_dump(egress))
    assert podnet("apply", "-f", str(manifest)) == "ciliumnetworkpolicy.cilium.io/stranger-l7 created\n"
    assert podnet("apply", "-f", str(manifest)) == "ciliumnetworkpolicy.cilium.io/stranger-l7 unchanged\n"
    frontend = pods["frontend"]["status"]["podIP"]

    async def egress_request(method: str) -> dict:
        params = {"namespace": "default", "pod": "stranger", "url": f"http://{frontend}:8080/hostname",
                  "method": method, "timeout": 3.0}
        return await cluster.rpc("node-2", "pod.http", params, timeout=10)

    async def egress_denied() -> dict | None:
        answer = await egress_request("DELETE")
        return answer if answer.get("status") == 403 else None

    assert (await eventually(egress_denied, 15, "the stranger's DELETE answered 403"))["body"] == b"Access denied\r\n"
    allowed = await egress_request("GET")
    assert (allowed["status"], allowed["body"]) == (200, b"frontend"), allowed
    flows = podnet("flows", "--node", "node-2").splitlines()
    assert any(
        "egress " in line and "DENIED  HTTP default/stranger(" in line
        and f"DELETE http://{frontend}:8080/hostname → 403  denied by default/stranger-l7 egress rule 0" in line
        for line in flows
    ), "\n".join(flows)
    # Applied again with another path: patched by a three-way JSON merge patch, as kubectl patches a
    # custom resource; the rule's list is replaced whole.
    egress["spec"]["egress"][0]["toPorts"][0]["rules"]["http"] = [{"method": "GET", "path": "/echo.*"}]
    manifest.write_text(yaml.safe_dump(egress))
    assert podnet("apply", "-f", str(manifest)) == "ciliumnetworkpolicy.cilium.io/stranger-l7 configured\n"
    stored = await cluster.client.request("GET", "/apis/cilium.io/v2/namespaces/default/ciliumnetworkpolicies/stranger-l7")
    assert stored["spec"]["egress"][0]["toPorts"][0]["rules"]["http"] == [{"method": "GET", "path": "/echo.*"}]
    # The answer came at once: no segment between the proxy and the frontend had to be sent again.
    assert any(
        re.search(rf"GET http://{frontend}:8080/hostname → 200 \((\d+\.\d) ms\)", line)
        and float(re.search(r"\((\d+\.\d) ms\)", line)[1]) < 190  # a resent segment waits 200 ms at least
        for line in flows
    ), "\n".join(flows)
