"""The Kubernetes e2e network-policy model, judged by the policies alone: every case's static matrix
must equal its expected 9x9 tables for TCP and UDP on ports 80 and 81, and its extra probes."""

import pytest
from podnet.nodeagent.policy.compile import compile_objects
from podnet.nodeagent.policy.matrix import explain, static_matrix
from podnet.nodeagent.policy.render import render_comparison
from support.netpol_model import ADDRESSES, CASES, COMBINATIONS, PODS


@pytest.mark.parametrize("name", list(CASES))
def test_case_matches_expected_tables(name):
    case = CASES[name]
    compiler = compile_objects(case.objects())
    assert compiler.errors == {}
    matrix = static_matrix(compiler.evaluator(), ports=(80, 81), protocols=("TCP", "UDP"))
    assert matrix.pods == PODS
    for port, protocol in COMBINATIONS:
        expected, observed = case.expected(port, protocol), matrix.table(port, protocol)
        assert not expected.mismatches(observed), f"{name} {port}/{protocol}\n" + render_comparison(
            expected, observed
        )


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.probes])
def test_case_probes(name):
    case = CASES[name]
    evaluator = compile_objects(case.objects()).evaluator()
    for probe in case.probes:
        dst = probe.dst if probe.dst in PODS else ADDRESSES[probe.dst]
        result = explain(evaluator, probe.src, dst, probe.port, probe.protocol)
        assert result.allowed == probe.allowed, result.text()


def test_every_case_states_every_port_and_protocol():
    for case in CASES.values():
        assert set(case.tables) == set(COMBINATIONS), case.name


def test_model_objects_are_what_the_e2e_creates():
    case = CASES["default-deny-ingress"]
    objects = case.objects()
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    assert [n["metadata"]["labels"] for n in namespaces] == [
        {"ns": ns, "kubernetes.io/metadata.name": ns} for ns in ("x", "y", "z")
    ]
    pods = [o for o in objects if o["kind"] == "Pod"]
    assert [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods] == list(PODS)
    names = {port["name"] for c in pods[0]["spec"]["containers"] for port in c["ports"]}
    assert names == {"serve-80-tcp", "serve-80-udp", "serve-81-tcp", "serve-81-udp"}
    assert len({p["status"]["podIP"] for p in pods}) == 9


def test_policies_follow_the_addresses_given():
    """An end-to-end test passes the addresses its cluster assigned; ipBlock policies follow them."""
    live = {**ADDRESSES, "x/b": "10.244.7.7", "kube-dns": "127.0.0.12"}
    (except_policy,) = CASES["ipblock-with-except"].policies(live)
    block = except_policy["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert block == {"cidr": "0.0.0.0/4", "except": ["10.244.7.7/32"]}
    (dns_policy,) = CASES["egress-to-one-pod-plus-dns"].policies(live)
    assert dns_policy["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": "127.0.0.12/32"}}]
