"""NetworkPolicy, the pure part: what one new connection's verdict costs with 10 and with 1000 policies in
the cluster (the goal: flat within 20%), what compiling costs, and how long the static 9x9 matrix of the
e2e model takes for ports 80 and 81 over TCP and UDP.

The cluster is the e2e model (namespaces x, y, z, pods a, b, c) plus 100 namespaces of 10 pods each;
the extra policies live in those namespaces, so the pods that connections are judged for are selected
by the same two policies in both runs. Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from podnet.nodeagent.policy.compile import compile_objects  # noqa: E402
from podnet.nodeagent.policy.matrix import static_matrix  # noqa: E402
from podnet.nodeagent.policy.model import EGRESS, INGRESS, Flow  # noqa: E402
from support.netpol_model import ADDRESSES, CASES  # noqa: E402

BACKGROUND_NAMESPACES = 100
PODS_PER_NAMESPACE = 10
ROUNDS = 1_000
REPEATS = 60


def background_objects(policies: int) -> list[dict]:
    objects = []
    for n in range(BACKGROUND_NAMESPACES):
        ns = f"bg{n}"
        objects.append({"kind": "Namespace", "metadata": {"name": ns, "labels": {"team": f"t{n % 7}"}}})
        for p in range(PODS_PER_NAMESPACE):
            objects.append(
                {
                    "kind": "Pod",
                    "metadata": {"namespace": ns, "name": f"p{p}", "labels": {"app": f"app{p}"}},
                    "spec": {
                        "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]
                    },
                    "status": {"podIP": f"10.{100 + n // 50}.{n % 50}.{p + 1}"},
                }
            )
    for i in range(policies):
        objects.append(
            {
                "kind": "NetworkPolicy",
                "metadata": {"namespace": f"bg{i % BACKGROUND_NAMESPACES}", "name": f"policy-{i}"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": f"app{i % PODS_PER_NAMESPACE}"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {"team": f"t{i % 7}"}},
                                    "podSelector": {},
                                },
                                {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
                            ],
                            "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}],
                        }
                    ],
                },
            }
        )
    return objects


def flows() -> list[tuple[str, Flow]]:
    """Connections among the e2e pods under the stacked-policies case: allowed by the second policy,
    denied after trying every rule, and from a pod no policy selects."""
    ip = ADDRESSES.__getitem__
    return [
        (INGRESS, Flow("TCP", ip("y/b"), 40000, ip("x/a"), 80)),
        (INGRESS, Flow("TCP", ip("y/b"), 40000, ip("x/a"), 81)),
        (INGRESS, Flow("TCP", ip("z/b"), 40000, ip("x/a"), 80)),
        (INGRESS, Flow("UDP", ip("y/a"), 40000, ip("x/a"), 80)),
        (INGRESS, Flow("TCP", ip("x/b"), 40000, ip("y/a"), 80)),
        (EGRESS, Flow("TCP", ip("x/a"), 40000, ip("y/a"), 80)),
    ]


def build(policies: int) -> tuple:
    case = CASES["multiple-policies-add-up"]
    started = time.perf_counter()
    compiler = compile_objects([*case.objects(), *background_objects(policies)])
    evaluator = compiler.evaluator()
    compile_seconds = time.perf_counter() - started
    assert len(evaluator.policies) == policies + 2
    return compiler, evaluator, compile_seconds


def verdict_samples(evaluators: dict[int, object]) -> dict[int, list[float]]:
    """ns per verdict, repeated; the cluster sizes take turns so that load from other processes on a
    shared machine falls on both alike."""
    work = flows()
    samples: dict[int, list[float]] = {n: [] for n in evaluators}
    for _ in range(REPEATS):
        for n, evaluator in evaluators.items():
            verdict = evaluator.verdict
            started = time.perf_counter_ns()
            for _ in range(ROUNDS):
                for direction, flow in work:
                    verdict(direction, flow)
            samples[n].append((time.perf_counter_ns() - started) / (ROUNDS * len(work)))
    return samples


def update_costs(compiler) -> dict:
    # One label change of a pod that many policies name, then the first verdict after it.
    started = time.perf_counter()
    compiler.set_pod(
        {
            "kind": "Pod",
            "metadata": {"namespace": "bg3", "name": "p3", "labels": {"app": "app4"}},
            "spec": {},
            "status": {"podIP": "10.100.3.4"},
        }
    )
    compiler.verdict(*flows()[0])
    pod_update_seconds = time.perf_counter() - started
    # One new policy selecting a judged pod, then the first verdict by it.
    started = time.perf_counter()
    compiler.set_policy(
        {
            "kind": "NetworkPolicy",
            "metadata": {"namespace": "x", "name": "deny-x-b"},
            "spec": {"podSelector": {"matchLabels": {"pod": "b"}}},
        }
    )
    assert not compiler.verdict(INGRESS, Flow("TCP", ADDRESSES["y/a"], 40000, ADDRESSES["x/b"], 80)).allowed
    policy_update_seconds = time.perf_counter() - started
    return {
        "pod_update_to_first_verdict_ms": round(pod_update_seconds * 1000, 2),
        "policy_update_to_first_verdict_ms": round(policy_update_seconds * 1000, 2),
    }


def matrix_ms() -> dict:
    evaluator = compile_objects(CASES["deny-all-then-allow-one-port"].objects()).evaluator()
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        matrix = static_matrix(evaluator, ports=(80, 81), protocols=("TCP", "UDP"))
        samples.append(time.perf_counter() - started)
    return {"cells": len(matrix.cells), "static_matrix_ms": round(min(samples) * 1000, 2)}


def main() -> None:
    built = {n: build(n) for n in (10, 1000)}
    samples = verdict_samples({n: evaluator for n, (_, evaluator, _) in built.items()})
    result: dict = {"benchmark": "netpol"}
    for n, (compiler, evaluator, compile_seconds) in built.items():
        result[f"verdict_{n}_policies"] = {
            "policies": len(evaluator.policies),
            "pods": len(evaluator.pods),
            "ns_per_verdict": round(min(samples[n]), 1),
            "ns_per_verdict_median": round(statistics.median(samples[n]), 1),
            "compile_ms": round(compile_seconds * 1000, 1),
            **update_costs(compiler),
        }
    ratio = min(samples[1000]) / min(samples[10])
    result["verdict_cost_ratio_1000_vs_10"] = round(ratio, 3)
    result["flat_within_20_percent"] = abs(ratio - 1) <= 0.2
    result["matrix_9x9x2x2"] = matrix_ms()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
