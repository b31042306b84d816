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
import select
import subprocess
import time
import urllib.request

import pytest
from podnet.nodeagent.policy import Matrix, parse_table, render_comparison
from support.netpol_model import CASES, PODS, policy

from podnet.rpc.session import RpcClient, call_once

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
    probe_live_case(model_cluster, case_name)


def probe_live_case(model_cluster, case_name: str) -> None:
    """Applies the case's policies alone and compares its probed cells with the e2e expectations."""
    model_cluster.clear()
    model_cluster.apply(CASES[case_name].policies(model_cluster.addresses))
    combinations = LIVE_CASES[case_name]
    ports = sorted({port for port, _ in combinations})
    protocols = sorted({protocol for _, protocol in combinations})
    probed = model_cluster.probe(ports, protocols)
    assert len(probed.cells) == len(PODS) ** 2 * len(ports) * len(protocols)
    assert_matches_expected(case_name, probed)


def _socket_of(model_cluster, pod: str) -> str:
    return model_cluster.agents[model_cluster.pods()[pod][1]].socket


def _flows(model_cluster, node: str, **params) -> list[dict]:
    async def read() -> list[dict]:
        async with RpcClient(model_cluster.agents[node].socket) as rpc:
            return [item async for item in rpc.stream("flows", params)]

    return asyncio.run(read())


DENY_INTO_X = CASES["default-deny-ingress"].policies()


def test_policy_applied_mid_connection_keeps_its_replies_and_judges_the_next_connection(model_cluster):
    model_cluster.clear()
    ip = model_cluster.addresses
    size = 256 << 10

    async def transfer_across_policy_change() -> tuple[dict, bool]:
        async with RpcClient(_socket_of(model_cluster, "y/b")) as rpc:
            params = {
                "namespace": "y",
                "pod": "b",
                "dst": ip["x/a"],
                "port": 80,
                "bytes": size,
                # The data flows only after the connection has been open this long: the policy lands first.
                "hold": 3.0,
                "timeout": 20,
            }
            transfer = asyncio.create_task(rpc.call("pod.tcp_transfer", params, timeout=40))
            # The connection is open once x/a's node has judged (and allowed) its first packet.
            for _ in range(200):
                seen = await asyncio.to_thread(_flows, model_cluster, "node-1", verdict="allowed")
                if any(r["src"] == ip["y/b"] and r["dst"] == ip["x/a"] and r["port"] == 80 for r in seen):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the transfer's connection never reached x/a")
            await asyncio.to_thread(model_cluster.apply, DENY_INTO_X)
            in_flight = not transfer.done()
            return await transfer, in_flight

    result, in_flight = asyncio.run(transfer_across_policy_change())
    assert in_flight, "the transfer ended before the policy was enforced; it proves nothing (hold it longer)"
    assert result["echoed"] == size
    # The next connection between the same pods is new to conntrack and meets the new policy.
    probe = model_cluster.probe_once("y/b", "x/a")
    assert not probe["ok"]
    denied = _flows(model_cluster, "node-1", verdict="denied")
    assert any(
        r["src"] == ip["y/b"]
        and r["dst"] == ip["x/a"]
        and r["reason"].startswith("denied: selected by x/deny-ingress")
        for r in denied
    ), denied


def test_localhost_inside_a_pod_never_meets_a_policy(model_cluster):
    model_cluster.clear()
    model_cluster.apply([policy("x", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})])
    before = len(_flows(model_cluster, "node-1"))
    params = {
        "namespace": "x",
        "pod": "a",
        "host": "127.0.0.1",
        "port": 80,
        "protocol": "TCP",
        "timeout": 2.0,
    }
    assert asyncio.run(call_once(_socket_of(model_cluster, "x/a"), "pod.connect", params))["ok"]
    assert len(_flows(model_cluster, "node-1")) == before
    # Leaving the pod, the same port is denied by the pod's own egress policy.
    assert not model_cluster.probe_once("x/a", "x/b")["ok"]
    denied = _flows(model_cluster, "node-1", verdict="denied", limit=1)
    assert denied[0]["direction"] == "egress" and denied[0]["src_pod"] == "x/a"


def test_policies_judge_the_endpoint_after_service_dnat(model_cluster):
    model_cluster.clear()
    ip = model_cluster.addresses
    service_ip = "10.96.0.50"
    table = {
        "mode": "iptables",
        "services": [
            {
                "service": "x/web:http",
                "protocol": "TCP",
                "cluster_ip": service_ip,
                "port": 80,
                "endpoints": [[ip["x/a"], 80]],
            }
        ],
    }
    node_2 = model_cluster.agents["node-2"]
    node_2.rpc("services.apply", {"mode": "iptables", "table": table})
    try:
        # y/b may only talk to x/a, and x/a only hears namespace y: neither names the Service address.
        model_cluster.apply(
            [
                *CASES["namespace-selector"].policies(),
                policy(
                    "y",
                    "b-to-x-a",
                    {
                        "podSelector": {"matchLabels": {"pod": "b"}},
                        "policyTypes": ["Egress"],
                        "egress": [
                            {
                                "to": [
                                    {
                                        "namespaceSelector": {"matchLabels": {"ns": "x"}},
                                        "podSelector": {"matchLabels": {"pod": "a"}},
                                    }
                                ]
                            }
                        ],
                    },
                ),
            ]
        )
        assert model_cluster.probe_once("y/b", service_ip)["ok"]
        egress = _flows(model_cluster, "node-2", verdict="allowed", limit=1)[0]
        assert (egress["direction"], egress["dst"], egress["dst_pod"]) == ("egress", ip["x/a"], "x/a")
        assert egress["policy"] == "y/b-to-x-a" and egress["rule"] == 0
        assert not model_cluster.probe_once("z/b", service_ip)["ok"]
        ingress = _flows(model_cluster, "node-1", verdict="denied", limit=1)[0]
        assert (ingress["src_pod"], ingress["dst_pod"], ingress["port"]) == ("z/b", "x/a", 80)
    finally:
        node_2.rpc("services.apply", {"mode": "iptables", "table": {"mode": "iptables", "services": []}})


def test_verdicts_are_counted_in_metrics(model_cluster):
    model_cluster.clear()
    model_cluster.apply(DENY_INTO_X)
    assert not model_cluster.probe_once("y/a", "x/a")["ok"]
    agent = model_cluster.agents["node-1"]
    text = (
        urllib.request.urlopen(f"http://{agent.address}:{agent.status_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    counts = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("podnet_policy_verdicts_total{")
    }
    assert counts['direction="ingress",verdict="denied"'] >= 1
    assert counts['direction="egress",verdict="allowed"'] >= 1


def test_cli_matrix_probed_agrees_with_static(model_cluster):
    model_cluster.clear()
    model_cluster.apply(CASES["pod-and-namespace-selector-in-one-peer"].policies())
    expected = CASES["pod-and-namespace-selector-in-one-peer"].expected(80, "TCP")
    probed = model_cluster.cli("matrix", "-n", "x", "-n", "y", "-n", "z", "--port", "80", "-o", "json")
    assert probed.returncode == 0, probed.stderr
    assert "probed and static matrices agree" in probed.stderr
    probed_matrix = Matrix.from_json(json.loads(probed.stdout))
    assert probed_matrix.pods == PODS and probed_matrix.combinations() == [(80, "TCP")]
    static = model_cluster.cli("matrix", "--static", "--port", "80", "--protocol", "TCP")
    assert static.returncode == 0, static.stderr
    heading, _, table = static.stdout.partition("\n")
    assert heading == "80/TCP:"
    static_table = parse_table(table.split("\n\n")[0])
    assert not expected.mismatches(static_table)
    assert not static_table.mismatches(probed_matrix.table(80, "TCP"), ignore_loopback=True)
    # Nothing listens on 82: the policies allow what no probe can reach, and the command says so.
    unserved = model_cluster.cli("matrix", "-n", "y", "--port", "82")
    assert unserved.returncode == 1
    assert "probed and static matrices disagree in 6 cells" in unserved.stderr
    assert "y/a -> y/b 82/TCP: probed unreachable, policies say allowed" in unserved.stderr


def test_cli_flows_and_explain_name_the_deciding_policy(model_cluster):
    model_cluster.clear()
    model_cluster.apply(CASES["namespace-selector"].policies())
    assert not model_cluster.probe_once("z/c", "x/a")["ok"]
    assert model_cluster.probe_once("y/c", "x/a")["ok"]
    denied = model_cluster.cli("flows", "--verdict", "denied")
    assert denied.returncode == 0, denied.stderr
    line = [line for line in denied.stdout.splitlines() if "z/c(" in line and "x/a(" in line][-1]
    assert "node-1 ingress DENIED" in line
    assert "denied: selected by x/allow-client-a-via-ns-selector and no rule matched" in line
    assert "ALLOWED" not in denied.stdout
    explained = model_cluster.cli("explain", "y/c", "x/a:80")
    assert explained.returncode == 0, explained.stderr
    assert "allowed by x/allow-client-a-via-ns-selector ingress rule 0" in explained.stdout
    assert "flow log" in explained.stdout and "node-1 ingress ALLOWED" in explained.stdout
    explained = model_cluster.cli("explain", "z/c", "x/a:80")
    assert "denied: selected by x/allow-client-a-via-ns-selector" in explained.stdout
    assert "node-1 ingress DENIED" in explained.stdout


def test_cli_flows_follow_prints_new_verdicts(model_cluster):
    model_cluster.clear()
    model_cluster.apply(DENY_INTO_X)
    follower = subprocess.Popen(
        [
            *model_cluster.cluster.cli_argv(),
            "flows",
            "-f",
            "--node",
            "node-1",
            "--verdict",
            "denied",
            "--limit",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=model_cluster.cluster.cli_env(),
    )
    try:
        for _ in range(20):  # until the follower is connected and hears a verdict
            model_cluster.probe_once("z/a", "x/a")
            ready, _, _ = select.select([follower.stdout], [], [], 0.5)
            if ready:
                break
        assert ready, "podnet flows -f printed nothing"
        line = follower.stdout.readline()
        assert "z/a(" in line and "x/a(" in line and "DENIED" in line, line
    finally:
        follower.kill()
        follower.wait(timeout=10)
    # The agent lets go of a reader that went away.
    for _ in range(100):
        if model_cluster.agent_status()["node-1"]["followers"] == 0:
            break
        time.sleep(0.02)
    assert model_cluster.agent_status()["node-1"]["followers"] == 0


def test_enforcement_outlives_the_api_server_and_resumes_with_it(model_cluster):
    model_cluster.clear()
    model_cluster.apply(CASES["namespace-selector"].policies())
    api = model_cluster.cluster.api
    api.kill()
    try:
        # The agents keep judging by what they compiled last.
        assert not model_cluster.probe_once("z/a", "x/a")["ok"]
        assert model_cluster.probe_once("y/a", "x/a")["ok"]
    finally:
        api.start()
    # Back, the informers resume their watches and the deletion reaches every node.
    model_cluster.clear()
    assert model_cluster.probe_once("z/a", "x/a")["ok"]
