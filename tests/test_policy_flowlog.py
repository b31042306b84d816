"""The flow log, pure: records of the policy hook's verdicts, bounded, filtered, counted, followed."""

from __future__ import annotations

import pytest
from podnet.nodeagent.policy import EGRESS, INGRESS, Flow, compile_objects
from podnet.nodeagent.policy.flowlog import FlowLog, FlowRecord, record_for
from support.netpol_model import ADDRESSES, CASES


def _judged(flows: list[tuple[str, Flow]]) -> list[FlowRecord]:
    compiler = compile_objects(CASES["namespace-selector"].objects())
    evaluator = compiler.evaluator()
    return [
        record_for(
            1000.0 + i, "node-1", direction, flow, evaluator.verdict(direction, flow), evaluator.pod_at
        )
        for i, (direction, flow) in enumerate(flows)
    ]


Y_A_TO_X_A = (INGRESS, Flow("TCP", ADDRESSES["y/a"], 40000, ADDRESSES["x/a"], 80))
Z_A_TO_X_A = (INGRESS, Flow("TCP", ADDRESSES["z/a"], 40001, ADDRESSES["x/a"], 80))
X_A_OUT = (EGRESS, Flow("UDP", ADDRESSES["x/a"], 40002, "192.0.2.7", 53))


def test_a_record_names_pods_and_the_deciding_rule():
    allowed, denied, outside = _judged([Y_A_TO_X_A, Z_A_TO_X_A, X_A_OUT])
    assert (allowed.src_pod, allowed.dst_pod, allowed.verdict) == ("y/a", "x/a", "allowed")
    assert (allowed.policy, allowed.rule) == ("x/allow-client-a-via-ns-selector", 0)
    assert denied.verdict == "denied" and denied.policy is None and denied.rule is None
    assert denied.reason == "denied: selected by x/allow-client-a-via-ns-selector and no rule matched"
    assert (outside.dst_pod, outside.reason) == (None, "allowed: no policy selects the pod")
    assert FlowRecord.from_dict(denied.to_dict()) == denied


def test_the_ring_keeps_the_newest_and_counts_everything():
    log = FlowLog(capacity=2)
    records = _judged([Y_A_TO_X_A, Z_A_TO_X_A, X_A_OUT])
    for record in records:
        log.add(record)
    assert log.records() == records[1:]
    assert log.counts[INGRESS, "allowed"] == 1 and log.counts[INGRESS, "denied"] == 1
    assert log.counts[EGRESS, "allowed"] == 1 and log.counts[EGRESS, "denied"] == 0
    assert log.records(verdict="denied") == [records[1]]
    assert log.records(limit=1) == [records[2]] and log.records(limit=0) == []
    with pytest.raises(ValueError):
        log.records(verdict="dropped")


def test_listeners_see_new_records_until_they_unsubscribe():
    log, seen = FlowLog(), []
    first, second = _judged([Y_A_TO_X_A, Z_A_TO_X_A])
    unsubscribe = log.subscribe(seen.append)
    log.add(first)
    unsubscribe()
    log.add(second)
    assert seen == [first] and len(log) == 2


def test_a_malformed_record_is_a_value_error():
    with pytest.raises(ValueError):
        FlowRecord.from_dict({"time": "soon"})
