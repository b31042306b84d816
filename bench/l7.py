"""L7 policy, measured in one run, in memory (no sockets, so the figures are the agent's own CPU cost):

- requests per second through the L7 proxy against the same requests at L4 only (goal: ratio >= 0.3):
  a client pod's stack sends keep-alive GETs over one TCP connection to a virtual pod's stack, whose
  server is the agnhost core, with and without the L7 proxy in front of it; every segment is encoded,
  checksummed and decoded on the way, as between two pods of one node;
- the L4 fast path's packets per second with an unrelated pod under an L7 rule, against no Cilium policy
  (goal: ratio >= 0.95): established-flow packets through the node's pipeline, with the agent's policy
  hooks installed (NetworkPolicies and Cilium's), the dataplane's L7 checks included;
- a new connection's verdict with an unrelated L7 rule against no Cilium policy, for the record (the
  first packet of each connection only).

Prints one JSON object. `python bench/l7.py`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

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
    print(
        json.dumps(
            {
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
