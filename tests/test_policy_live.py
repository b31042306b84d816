"""NetworkPolicy enforced by real node agents: the Kubernetes e2e model (namespaces x, y, z; pods a, b, c
on three nodes) with policies applied through the API server, the 9x9 matrix probed with real
connections through the agents and compared with the e2e expectations; stateful enforcement across a
policy change; the flow log, the metrics and the CLI on the same cluster.

A pod reaching its own address loops back inside the pod and meets no policy (as in a Linux pod's
network namespace), so the pod-to-self cells are left out of the comparison.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from podnet.nodeagent.policy import Matrix, render_comparison
from podnet.rpc.session import RpcClient, call_once
from support.netpol_model import CASES, PODS, policy

pytestmark = pytest.mark.slow

LIVE_CASES = {
    "default-deny-ingress": [(80, "TCP")],
    "default-deny-egress": [(80, "TCP")],
    "allow-from-same-namespace": [(80, "TCP")],
    "pod-and-namespace-selector-in-one-peer": [(80, "TCP")],
    "pod-or-namespace-selector-in-two-peers": [(80, "TCP")],
    "ipblock-with-except": [(80, "TCP")],
    "named-port": [(80, "TCP"), (81, "TCP")],
    "deny-all-then-allow-one-port": [(81, "TCP"), (81, "UDP"), (80, "UDP")],
}


def assert_matches_expected(case_name: str, probed: Matrix) -> None:
    case = CASES[case_name]
    for port, protocol in probed.combinations():
        expected, observed = case.expected(port, protocol), probed.table(port, protocol)
        mismatches = expected.mismatches(observed, ignore_loopback=True)
        assert not mismatches, f"{case_name} {port}/{protocol}:\n{render_comparison(expected, observed)}"


@pytest.mark.parametrize("case_name", list(LIVE_CASES))
def test_e2e_model_case_probed_live(model_cluster, case_name):
    model_cluster.clear()
    model_cluster.apply(CASES[case_name].policies(model_cluster.addresses))
    combinations = LIVE_CASES[case_name]
    ports = sorted({port for port, _ in combinations})
    protocols = sorted({protocol for _, protocol in combinations})
    probed = model_cluster.probe(ports, protocols)
    assert len(probed.cells) == len(PODS) ** 2 * len(ports) * len(protocols)
    assert_matches_expected(case_name, probed)
