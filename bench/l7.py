"""L7 policy, the pure part: requests per second through the L7 proxy in front of a virtual pod's
application against the same requests straight to it (keep-alive GETs, one request per segment; the
goal: a ratio >= 0.3), and what judging a new connection costs when an unrelated pod has an L7 rule,
against no Cilium policy at all (the goal: >= 0.95; packets after the first never reach either hook,
so the per-packet fast path is untouched by construction).

The live comparison through real agents that issue 15 asks for is not measured here yet. Prints one
JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from podnet.nodeagent.l7.cilium import CiliumPolicyIndex  # noqa: E402
from podnet.nodeagent.l7.verdict import combine  # noqa: E402
from podnet.nodeagent.pods.virtual.agnhost import AgnhostTcp  # noqa: E402
from podnet.nodeagent.pods.virtual.l7proxy import L7ProxiedServer  # noqa: E402
from podnet.nodeagent.pods.virtual.stack import _AgnhostServer  # noqa: E402
from podnet.nodeagent.policy import INGRESS, Flow, compile_objects  # noqa: E402
from podnet.nodeagent.policy.compile import pod_info  # noqa: E402
from support.l7pods import running_pod  # noqa: E402

from podnet.api.ciliumpolicy import parse_cilium_policy  # noqa: E402

REQUESTS = 20_000
CONNECTIONS = 20_000
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
PODS = [
    running_pod("backend", "10.244.1.10", "backend"),
    running_pod("frontend", "10.244.1.20", "frontend"),
    running_pod("other", "10.244.1.30", "other"),
]
REQUEST = b"GET /hostname HTTP/1.1\r\nHost: backend:8080\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def requests_per_second(app) -> float:
    start = time.perf_counter()
    for _ in range(REQUESTS):
        assert app.received(REQUEST).send
    return REQUESTS / (time.perf_counter() - start)


def main() -> None:
    index = CiliumPolicyIndex([parse_cilium_policy(yaml.safe_load(POLICY))], [pod_info(p) for p in PODS])
    empty = CiliumPolicyIndex([], [pod_info(p) for p in PODS])
    compiler = compile_objects(PODS)
    to_backend = Flow("TCP", "10.244.1.20", 40000, "10.244.1.10", 8080)
    connection = combine(compiler.verdict(INGRESS, to_backend), index.decide(INGRESS, to_backend))

    direct = requests_per_second(_AgnhostServer(AgnhostTcp("backend", "10.244.1.20:40000"), defaultdict(int)))
    inner = _AgnhostServer(AgnhostTcp("backend", "10.244.1.20:40000"), defaultdict(int))
    proxied = requests_per_second(L7ProxiedServer(connection, inner, defaultdict(int)))

    to_other = Flow("TCP", "10.244.1.20", 40001, "10.244.1.30", 8080)

    def verdicts_per_second(cilium: CiliumPolicyIndex | None) -> float:
        start = time.perf_counter()
        for _ in range(CONNECTIONS):
            verdict = compiler.verdict(INGRESS, to_other)
            if cilium is not None:  # as the agent's refine hook does
                decision = cilium.decide(INGRESS, to_other)
                if decision.isolated or decision.allows:
                    combine(verdict, decision)
        return CONNECTIONS / (time.perf_counter() - start)

    verdicts_per_second(None)  # warm up
    without = max(verdicts_per_second(None) for _ in range(3))
    unrelated_l7 = max(verdicts_per_second(index) for _ in range(3))
    no_cilium = max(verdicts_per_second(empty) for _ in range(3))
    print(
        json.dumps(
            {
                "requests": REQUESTS,
                "direct_requests_per_s": round(direct),
                "proxied_requests_per_s": round(proxied),
                "proxy_ratio": round(proxied / direct, 3),
                "proxy_ratio_goal": 0.3,
                "new_connection_verdicts_per_s_networkpolicy_only": round(without),
                "new_connection_verdicts_per_s_no_cilium_policy": round(no_cilium),
                "new_connection_verdicts_per_s_unrelated_l7_rule": round(unrelated_l7),
                "unrelated_l7_ratio": round(unrelated_l7 / without, 3),
                "unrelated_l7_ratio_goal": 0.95,
            }
        )
    )


if __name__ == "__main__":
    main()
