"""NetworkPolicy, the pure part: what one new connection's verdict costs with 10 and with 1000 policies in
the cluster (the goal: flat within 20%), what compiling costs, and how long the static 9x9 matrix of the
e2e model takes for ports 80 and 81 over TCP and UDP.

The live part (skipped with `--no-live`) starts an API server and three real node agents with the
model's pods: the time from creating a NetworkPolicy to its enforcement on every node (p50/p99 over
20 applies; goal p99 <= 1 s), measured by each agent's own record of when that version took effect, and
the time to probe the full 9x9 matrix on ports 80 and 81 over TCP and UDP with real connections.

The cluster is the e2e model (namespaces x, y, z, pods a, b, c) plus 100 namespaces of 10 pods each;
the extra policies live in those namespaces, so the pods that connections are judged for are selected
by the same two policies in both runs. Prints one JSON object.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from podnet.nodeagent.policy.compile import compile_objects  # noqa: E402
from podnet.nodeagent.policy.flowlog import FlowLog  # noqa: E402
from podnet.nodeagent.policy.matrix import static_matrix  # noqa: E402
from podnet.nodeagent.policy.model import EGRESS, INGRESS, Flow  # noqa: E402
from support.netpol_model import ADDRESSES, CASES, policy  # noqa: E402

BACKGROUND_NAMESPACES = 100
PODS_PER_NAMESPACE = 10
ROUNDS = 1_000
REPEATS = 60
APPLIES = 20


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


def flow_log_ns(evaluator) -> float:
    """ns to record one verdict in the flow log, naming both pods (what the node agent adds to each
    verdict)."""
    log, work = FlowLog("node-1"), [(d, f, evaluator.verdict(d, f)) for d, f in flows()]
    pod_at = evaluator.pod_at
    samples = []
    for _ in range(REPEATS // 6):
        started = time.perf_counter_ns()
        for _ in range(ROUNDS):
            for direction, flow, verdict in work:
                log.add(1.0, direction, flow, verdict, pod_at(flow.src_ip), pod_at(flow.dst_ip))
        samples.append((time.perf_counter_ns() - started) / (ROUNDS * len(work)))
    return round(min(samples), 1)


def _nearest_rank(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def enforcement_latencies(model) -> dict:
    """Create a deny-ingress policy for x/b, wait until every agent enforces it, delete it; the latency
    of one apply is the latest agent's "took effect" time minus the moment before the create."""
    samples = []
    for i in range(APPLIES):
        deny = policy("x", f"deny-b-{i}", {"podSelector": {"matchLabels": {"pod": "b"}}})

        async def create(client, deny=deny) -> tuple[float, str]:
            started = time.time()
            created = await client.create(deny)
            return started, created["metadata"]["resourceVersion"]

        started, version = model.cluster.api_call(create)
        key = f"x/deny-b-{i}"
        model.wait_enforced({key: version})
        applied = [status["applied_at"][key] for status in model.agent_status().values()]
        samples.append(max(applied) - started)
        if i == APPLIES - 1:
            # Enforced means enforced: the next connection into x/b from another node is dropped.
            denied = model.probe_once("y/a", "x/b", 80, "TCP")
            assert not denied["ok"], denied
        model.clear()
    return {
        "applies": len(samples),
        "nodes": len(model.agents),
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p99_ms": round(_nearest_rank(samples, 0.99) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
        "p99_within_1s": _nearest_rank(samples, 0.99) <= 1.0,
    }


def live_matrix(model, case_name: str | None) -> dict:
    """The 9x9 matrix on 80 and 81 over TCP and UDP (324 real probes), timed, checked against the case."""
    model.clear()
    if case_name:
        model.apply(CASES[case_name].policies(model.addresses))
    started = time.perf_counter()
    probed = model.probe((80, 81), ("TCP", "UDP"))
    seconds = time.perf_counter() - started
    mismatches = 0
    if case_name:
        case = CASES[case_name]
        mismatches = sum(
            len(case.expected(port, protocol).mismatches(probed.table(port, protocol), ignore_loopback=True))
            for port, protocol in probed.combinations()
        )
    return {
        "policies": case_name or "none",
        "cells": len(probed.cells),
        "reachable": sum(cell.allowed for cell in probed.cells),
        "probe_seconds": round(seconds, 2),
        "mismatches_with_expected": mismatches,
    }


def live() -> dict:
    from support.policy_cluster import PROBE_TIMEOUT, running_model_cluster

    with tempfile.TemporaryDirectory() as home, running_model_cluster(Path(home)) as model:
        return {
            "apply_to_enforcement_on_every_node": enforcement_latencies(model),
            "probe_timeout_s": PROBE_TIMEOUT,
            "probed_matrix_9x9x2x2": live_matrix(model, None),
            "probed_matrix_9x9x2x2_deny_all_then_allow_81": live_matrix(
                model, "deny-all-then-allow-one-port"
            ),
        }


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
    result["flow_log_ns_per_verdict"] = flow_log_ns(built[1000][1])
    result["matrix_9x9x2x2"] = matrix_ms()
    if "--no-live" not in sys.argv[1:]:
        result["live"] = live()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
