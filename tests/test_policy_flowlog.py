"""The flow log, pure: records of the policy hook's verdicts, bounded, filtered, counted, followed."""

from __future__ import annotations

import pytest
from podnet.nodeagent.policy import EGRESS, INGRESS, Flow, compile_objects
from podnet.nodeagent.policy.flowlog import FlowLog, FlowRecord
from support.netpol_model import ADDRESSES, CASES


def _judged(flows: list[tuple[str, Flow]]) -> list[tuple]:
    """(time, direction, flow, verdict, src pod, dst pod) as the node agent adds them."""
    evaluator = compile_objects(CASES["namespace-selector"].objects()).evaluator()
    return [
        (
            1000.0 + i,
            direction,
            flow,
            evaluator.verdict(direction, flow),
            evaluator.pod_at(flow.src_ip),
            evaluator.pod_at(flow.dst_ip),
        )
        for i, (direction, flow) in enumerate(flows)
    ]


def _log(entries: list[tuple], capacity: int = 16) -> FlowLog:
    log = FlowLog("node-1", capacity)
    for entry in entries:
        log.add(*entry)
    return log


Y_A_TO_X_A = (INGRESS, Flow("TCP", ADDRESSES["y/a"], 40000, ADDRESSES["x/a"], 80))
Z_A_TO_X_A = (INGRESS, Flow("TCP", ADDRESSES["z/a"], 40001, ADDRESSES["x/a"], 80))
X_A_OUT = (EGRESS, Flow("UDP", ADDRESSES["x/a"], 40002, "192.0.2.7", 53))


def test_a_record_names_pods_and_the_deciding_rule():
    allowed, denied, outside = _log(_judged([Y_A_TO_X_A, Z_A_TO_X_A, X_A_OUT])).records()
    assert (allowed.node, allowed.src_pod, allowed.dst_pod, allowed.verdict) == (
        "node-1",
        "y/a",
        "x/a",
        "allowed",
    )
    assert (allowed.src, allowed.src_port, allowed.dst, allowed.port) == (
        ADDRESSES["y/a"],
        40000,
        ADDRESSES["x/a"],
        80,
    )
    assert (allowed.policy, allowed.rule) == ("x/allow-client-a-via-ns-selector", 0)
    assert denied.verdict == "denied" and denied.policy is None and denied.rule is None
    assert denied.reason == "denied: selected by x/allow-client-a-via-ns-selector and no rule matched"
    assert (outside.direction, outside.protocol, outside.dst_pod) == ("egress", "UDP", None)
    assert outside.reason == "allowed: no policy selects the pod"
    assert FlowRecord.from_dict(denied.to_dict()) == denied


def test_the_ring_keeps_the_newest_and_counts_everything():
    entries = _judged([Y_A_TO_X_A, Z_A_TO_X_A, X_A_OUT])
    log = _log(entries, capacity=2)
    assert [r.time for r in log.records()] == [1001.0, 1002.0]
    assert log.counts[INGRESS, "allowed"] == 1 and log.counts[INGRESS, "denied"] == 1
    assert log.counts[EGRESS, "allowed"] == 1 and log.counts[EGRESS, "denied"] == 0
    assert [r.time for r in log.records(verdict="denied")] == [1001.0]
    assert [r.time for r in log.records(limit=1)] == [1002.0] and log.records(limit=0) == []
    with pytest.raises(ValueError):
        log.records(verdict="dropped")


def test_listeners_see_new_records_until_they_unsubscribe():
    log, seen = FlowLog("node-1"), []
    first, second = _judged([Y_A_TO_X_A, Z_A_TO_X_A])
    unsubscribe = log.subscribe(seen.append)
    log.add(*first)
    assert log.listeners == 1
    unsubscribe()
    assert log.listeners == 0
    log.add(*second)
    assert seen == log.records()[:1] and len(log) == 2


def test_a_malformed_record_is_a_value_error():
    with pytest.raises(ValueError):
        FlowRecord.from_dict({"time": "soon"})
