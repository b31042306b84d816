"""L7 policy, measured in one run: in memory first (no sockets, so the figures are the agent's own CPU
cost), then through two real node agents (bench/dataplane.py's cluster: 127.0.0.11 and .12).

In memory:
- requests per second through the L7 proxy against the same requests at L4 only (goal: ratio >= 0.3):
  a client pod's stack sends keep-alive GETs over one TCP connection to a virtual pod's stack, whose
  server is the agnhost core, with and without the L7 proxy in front of it; every segment is encoded,
  checksummed and decoded on the way, as between two pods of one node;
- the L4 fast path's packets per second with an unrelated pod under an L7 rule, against no Cilium policy
  (goal: ratio >= 0.95): established-flow packets through the node's pipeline, with the agent's policy
  hooks installed (NetworkPolicies and Cilium's), the dataplane's L7 checks included;
- a new connection's verdict with an unrelated L7 rule against no Cilium policy, for the record (the
  first packet of each connection only).

Live, alternating rounds: pod a (node-1) sends GET requests to pod b (node-2), each on a new connection,
with and without a CiliumNetworkPolicy that puts b's port behind the proxy (`live_proxy_ratio`); and a
UDP stream a -> b, with and without an L7 rule on an unrelated pod c (`live_fast_path_ratio`, node-2's
delivered datagrams per second).

Prints one JSON object. `python bench/l7.py` (`--memory-only` skips the live part).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from podnet.nodeagent.l7.cilium import CiliumPolicyIndex  # noqa: E402
from podnet.nodeagent.l7.verdict import combine  # noqa: E402
from podnet.nodeagent.l7splices import L7Splices  # noqa: E402
from podnet.nodeagent.pods.virtual import client as ops  # noqa: E402
from podnet.nodeagent.pods.virtual.stack import PodStack  # noqa: E402
from podnet.nodeagent.policy import INGRESS, Flow, compile_objects  # noqa: E402
from podnet.nodeagent.policy.compile import pod_info  # noqa: E402
from podnet.overlay.pipeline.forward import Pipeline  # noqa: E402
from podnet.overlay.pipeline.model import Deliver, NodeIdentity, PodPort  # noqa: E402
from support.l7pods import running_pod  # noqa: E402

from podnet.api.ciliumpolicy import parse_cilium_policy  # noqa: E402
from podnet.client import ApiClient, ApiError  # noqa: E402
from podnet.rpc.agentmethods import AgentMethod  # noqa: E402
from podnet.rpc.session import RpcClient  # noqa: E402

REQUESTS = 5_000
PACKETS = 200_000
CONNECTIONS = 20_000
ROUNDS = 3
POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-l7, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules: {http: [{method: "GET|HEAD", path: "/(hostname|api/.*)"}]}
"""
BACKEND, FRONTEND, OTHER = "10.244.1.10", "10.244.1.20", "10.244.1.30"
PODS = [
    running_pod("backend", BACKEND, "backend"),
    running_pod("frontend", FRONTEND, "frontend"),
    running_pod("other", OTHER, "other"),
]
REQUEST = b"GET /hostname HTTP/1.1\r\nHost: backend:8080\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def requests_per_second(connection) -> float:
    """Keep-alive GETs from the frontend's stack to the backend's, the L7 proxy in front of the backend
    when `connection` (its L7 verdict) is given."""
    now = 0.0
    server = PodStack("backend", "default", BACKEND, "02:00:00:00:00:0a", "02:00:00:00:00:01", [8080], "backend")
    server.l7_lookup = lambda *flow: connection
    client = PodStack("frontend", "default", FRONTEND, "02:00:00:00:00:14", "02:00:00:00:00:01", [], "frontend")
    op = client.open_tcp(BACKEND, 8080, now)

    def carry(packets: list[bytes]) -> list:
        while packets:
            packets = client.receive_batch(server.receive_batch(packets, now), now)
        return client.take_events()

    carry(client.poll(now))
    start = time.perf_counter()
    for _ in range(REQUESTS):
        client.send(op, REQUEST, now)
        events = carry(client.poll(now))
        assert any(isinstance(e, ops.Received) and e.data.endswith(b"backend") for e in events), events
    return REQUESTS / (time.perf_counter() - start)


def fast_path_packets_per_second(index: CiliumPolicyIndex) -> float:
    """One established TCP flow's packets, frontend to other (a pod no Cilium policy selects), through
    the pipeline with the agent's hooks and the dataplane's per-packet L7 check."""
    compiler = compile_objects(PODS)

    def policy(direction, flow):
        index.decide(direction, flow)  # as the agent's refine hook asks, on each new connection
        return compiler.verdict(direction, flow)

    pipeline = Pipeline(NodeIdentity("node-1", "127.0.0.11", "10.244.1.0/24"), rand=lambda: 0.5)
    pipeline.policy = policy
    frontend = PodPort("default", "frontend", FRONTEND, "02:00:00:00:00:14")
    other = PodPort("default", "other", OTHER, "02:00:00:00:00:1e")
    pipeline.add_pod(frontend)
    pipeline.add_pod(other)
    splices = L7Splices(lambda *flow: None, lambda *record: None, lambda *packets: None)
    sender = PodStack("frontend", "default", FRONTEND, frontend.mac, "02:00:00:00:00:01", [], "frontend")
    receiver = PodStack("other", "default", OTHER, other.mac, "02:00:00:00:00:01", [8080], "other")
    op = sender.open_tcp(OTHER, 8080, 0.0)
    packets = sender.poll(0.0)
    while packets:  # the handshake, through the pipeline both ways
        answers = [p for packet in packets for out in pipeline.from_pod(frontend, packet, 0.0)
                   for p in receiver.receive(out.packet, 0.0)]
        packets = [p for answer in answers for out in pipeline.from_pod(other, answer, 0.0)
                   for p in sender.receive(out.packet, 0.0)]
    sender.send(op, b"x" * 64, 0.0)
    (segment,) = sender.poll(0.0)
    pending: dict = {}  # the enforcer's L7 verdicts waiting to be taken: none
    start = time.perf_counter()
    delivered = 0
    for _ in range(PACKETS):
        for out in pipeline.from_pod(frontend, segment, 0.0):
            if type(out) is Deliver and not (
                (splices.to_pods or pending) and splices.to_pod(None, out.packet, 0.0, accept=True)
            ):
                delivered += 1
    assert delivered == PACKETS, delivered
    return PACKETS / (time.perf_counter() - start)


def verdicts_per_second(compiler, cilium: CiliumPolicyIndex) -> float:
    to_other = Flow("TCP", FRONTEND, 40001, OTHER, 8080)
    start = time.perf_counter()
    for _ in range(CONNECTIONS):
        verdict = compiler.verdict(INGRESS, to_other)
        decision = cilium.decide(INGRESS, to_other)  # as the agent's refine hook does
        if decision.isolated or decision.allows:
            combine(verdict, decision)
    return CONNECTIONS / (time.perf_counter() - start)


LIVE_ROUNDS = 3
LIVE_REQUESTS = 200
CRDS = Path(__file__).resolve().parent.parent / "deploy" / "crds" / "cilium.yaml"
CNP_PATH = "/apis/cilium.io/v2/namespaces/default/ciliumnetworkpolicies"


def live_policy(name: str, app: str, port: int) -> dict:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": app}},
            "ingress": [{"toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}],
                                      "rules": {"http": [{"method": "GET", "path": "/hostname"}]}}]}],
        },
    }


async def live_setup(cluster) -> None:
    """Cilium's CRDs, labels on a and b, and the unrelated pod c on node-2."""
    async with ApiClient(cluster.api) as client:
        for crd in yaml.safe_load_all(CRDS.read_text()):
            if crd is not None:
                await client.create(crd)
        for name in ("a", "b"):
            await client.patch("pods", name, {"metadata": {"labels": {"app": name}}}, namespace="default",
                               patch_type="merge")
        await client.create({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c", "namespace": "default", "labels": {"app": "c"}},
            "spec": {"nodeName": "node-2", "containers": [{"name": "agnhost", "image": "agnhost",
                                                        "ports": [{"containerPort": 80}]}]},
        })


async def set_policy(cluster, policy: dict, present: bool) -> None:
    async with ApiClient(cluster.api) as client:
        for _ in range(200):  # the CRD's routes follow its creation by a moment
            try:
                if present:
                    await client.request("POST", CNP_PATH, body=policy)
                else:
                    await client.request("DELETE", f"{CNP_PATH}/{policy['metadata']['name']}")
                return
            except ApiError as e:
                if e.code != 404:
                    raise
            await asyncio.sleep(0.05)
        raise RuntimeError("the Cilium policy kind is not served")


async def http_requests(cluster, *, proxied: bool) -> float:
    """Requests per second from a to b, each a GET on a new connection, once node-2's agent enforces (or
    no longer enforces) the L7 rule: a DELETE tells which."""
    async with RpcClient(cluster.socket("node-1")) as rpc:
        async def ask(method: str) -> dict:
            params = {"namespace": "default", "pod": "a", "url": f"http://{cluster.ips['b']}:80/hostname",
                      "method": method, "timeout": 3.0}
            return await rpc.call(AgentMethod.POD_HTTP, params, timeout=10)

        for _ in range(200):
            if ((await ask("DELETE")).get("status") == 403) == proxied:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the L7 rule was not (un)enforced in time")
        start = time.perf_counter()
        for _ in range(LIVE_REQUESTS):
            assert (await ask("GET")).get("status") == 200
        return LIVE_REQUESTS / (time.perf_counter() - start)


def live() -> dict:
    from dataplane import Cluster, podnet_udp

    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="podnet-bench-l7-") as home:
        cluster = Cluster(Path(home))
        try:
            cluster.start()
            asyncio.run(live_setup(cluster))
            on_b, on_c = live_policy("b-l7", "b", 80), live_policy("c-l7", "c", 80)
            for number in range(LIVE_ROUNDS):
                l4 = asyncio.run(http_requests(cluster, proxied=False))
                asyncio.run(set_policy(cluster, on_b, True))
                l7 = asyncio.run(http_requests(cluster, proxied=True))
                asyncio.run(set_policy(cluster, on_b, False))
                # Which of the two UDP runs goes first alternates, so neither always follows the other.
                udp = {}
                for with_rule in ((False, True) if number % 2 == 0 else (True, False)):
                    if with_rule:
                        asyncio.run(set_policy(cluster, on_c, True))
                        time.sleep(0.5)  # the agents hear of it
                    udp[with_rule] = podnet_udp(cluster, 64)["delivered_per_second"]
                    if with_rule:
                        asyncio.run(set_policy(cluster, on_c, False))
                        time.sleep(0.5)
                rounds.append({"l4": l4, "l7": l7, "bare": udp[False], "beside": udp[True]})
        finally:
            cluster.stop()
    proxy = [r["l7"] / r["l4"] for r in rounds]
    fast = [r["beside"] / r["bare"] for r in rounds]
    return {
        "live_l4_requests_per_s": round(statistics.median(r["l4"] for r in rounds)),
        "live_l7_requests_per_s": round(statistics.median(r["l7"] for r in rounds)),
        "live_proxy_ratio": round(statistics.median(proxy), 3),
        "live_proxy_ratio_rounds": [round(r, 3) for r in proxy],
        "live_udp_delivered_per_s_no_cilium_policy": round(statistics.median(r["bare"] for r in rounds)),
        "live_udp_delivered_per_s_unrelated_l7_rule": round(statistics.median(r["beside"] for r in rounds)),
        "live_fast_path_ratio": round(statistics.median(fast), 3),
        "live_fast_path_ratio_rounds": [round(r, 3) for r in fast],
    }


def main() -> None:
    infos = [pod_info(p) for p in PODS]
    index = CiliumPolicyIndex([parse_cilium_policy(yaml.safe_load(POLICY))], infos)
    empty = CiliumPolicyIndex([], infos)
    compiler = compile_objects(PODS)
    to_backend = Flow("TCP", FRONTEND, 40000, BACKEND, 8080)
    connection = combine(compiler.verdict(INGRESS, to_backend), index.decide(INGRESS, to_backend))
    assert connection.l7 is not None

    # Rounds alternate the two sides of each comparison, so a change in the machine's load hits both.
    l4, l7, bare, beside, no_cilium, unrelated = [], [], [], [], [], []
    for _ in range(ROUNDS):
        l4.append(requests_per_second(None))
        l7.append(requests_per_second(connection))
        bare.append(fast_path_packets_per_second(empty))
        beside.append(fast_path_packets_per_second(index))
        no_cilium.append(verdicts_per_second(compiler, empty))
        unrelated.append(verdicts_per_second(compiler, index))
    figures = {} if "--memory-only" in sys.argv else live()
    print(
        json.dumps(
            {
                **figures,
                "requests": REQUESTS,
                "l4_requests_per_s": round(max(l4)),
                "l7_requests_per_s": round(max(l7)),
                "proxy_ratio": round(max(l7) / max(l4), 3),
                "proxy_ratio_goal": 0.3,
                "fast_path_packets_per_s_no_cilium_policy": round(max(bare)),
                "fast_path_packets_per_s_unrelated_l7_rule": round(max(beside)),
                "fast_path_ratio": round(max(beside) / max(bare), 3),
                "fast_path_ratio_goal": 0.95,
                "new_connection_verdicts_per_s_no_cilium_policy": round(max(no_cilium)),
                "new_connection_verdicts_per_s_unrelated_l7_rule": round(max(unrelated)),
                "new_connection_ratio": round(max(unrelated) / max(no_cilium), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
