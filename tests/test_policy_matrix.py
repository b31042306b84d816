"""The static matrix, `explain`, and truth tables as text."""

import json

import pytest
from podnet.nodeagent.policy.compile import compile_objects
from podnet.nodeagent.policy.matrix import Matrix, explain, static_matrix
from podnet.nodeagent.policy.render import TruthTable, parse_table, render_comparison, render_table
from support.netpol_model import ADDRESSES, CASES, DENIED_INTO_X, PODS

SMALL = """
-   x/a x/b
x/a X   .
x/b .   .
"""


def test_parse_and_render_round_trip():
    table = parse_table(SMALL)
    assert table.pods == ("x/a", "x/b")
    assert table["x/a", "x/a"] is False and table["x/a", "x/b"] is True
    assert parse_table(render_table(table)) == table
    assert render_table(table) == "-   x/a x/b\nx/a X   .\nx/b .   ."


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x/a x/b\nx/a . .\nx/b . .",  # no header corner
        "- x/a x/b\nx/b . .\nx/a . .",  # rows out of order
        "- x/a x/b\nx/a . .",  # a row missing
        "- x/a x/b\nx/a .\nx/b . .",  # a cell missing
        "- x/a x/b\nx/a . ?\nx/b . .",  # not a mark
        "- x/a x/a\nx/a . .\nx/a . .",  # a pod twice
    ],
)
def test_malformed_tables_are_refused(text):
    with pytest.raises(ValueError):
        parse_table(text)


def test_mismatches_and_comparison():
    expected = parse_table(SMALL)
    observed = TruthTable(expected.pods, {**expected.allowed, ("x/a", "x/a"): True, ("x/b", "x/a"): False})
    assert expected.mismatches(observed) == [("x/a", "x/a", False, True), ("x/b", "x/a", True, False)]
    assert expected.mismatches(observed, ignore_loopback=True) == [("x/b", "x/a", True, False)]
    text = render_comparison(expected, observed)
    assert text.endswith("comparison:\n-   x/a x/b\nx/a X   .\nx/b X   .")
    with pytest.raises(ValueError):
        expected.mismatches(parse_table("- x/a\nx/a ."))


@pytest.fixture
def deny_ingress():
    return compile_objects(CASES["default-deny-ingress"].objects()).evaluator()


def test_matrix_json_cells(deny_ingress):
    matrix = static_matrix(deny_ingress, ports=(80, 81), protocols=("TCP", "UDP"))
    assert len(matrix.cells) == 9 * 9 * 2 * 2
    assert matrix.combinations() == [(80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP")]
    cells = json.loads(json.dumps(matrix.to_json()))["cells"]
    assert {"from": "y/b", "to": "x/a", "port": 80, "protocol": "TCP", "allowed": False} in cells
    assert {"from": "x/a", "to": "y/b", "port": 81, "protocol": "UDP", "allowed": True} in cells
    assert render_table(matrix.table(80, "udp")) == render_table(parse_table(DENIED_INTO_X))
    with pytest.raises(KeyError):
        matrix.table(443)


def test_matrix_of_some_namespaces(deny_ingress):
    matrix = static_matrix(deny_ingress, namespaces=["x", "z"])
    assert matrix.pods == tuple(p for p in PODS if p[0] in "xz")
    assert len(matrix.cells) == 36


def test_explain_names_both_sides(deny_ingress):
    result = explain(deny_ingress, "y/b", "x/a", 80)
    assert not result.allowed
    assert result.text() == (
        f"y/b ({ADDRESSES['y/b']}) -> x/a ({ADDRESSES['x/a']}) 80/TCP: denied\n"
        "  egress at y/b: allowed: no policy selects the pod\n"
        "  ingress at x/a: denied: selected by x/deny-ingress and no rule matched"
    )
    by_address = explain(deny_ingress, ADDRESSES["x/a"], ADDRESSES["y/b"], 81, "udp")
    assert by_address.allowed and (by_address.src, by_address.dst, by_address.protocol) == (
        "x/a",
        "y/b",
        "UDP",
    )
    outside = explain(deny_ingress, "x/a", "192.0.2.1", 443)
    assert outside.allowed and outside.ingress.reason == "allowed: not a pod"
    assert outside.text().startswith(f"x/a ({ADDRESSES['x/a']}) -> 192.0.2.1 443/TCP: allowed")
    with pytest.raises(ValueError):
        explain(deny_ingress, "x/nope", "x/a", 80)


def test_explain_names_the_deciding_rule():
    evaluator = compile_objects(CASES["multiple-policies-add-up"].objects()).evaluator()
    result = explain(evaluator, "y/c", "x/a", 80)
    assert result.allowed
    assert result.ingress.policy == "x/allow-client-a-via-ns-selector-80" and result.ingress.rule_index == 0
    assert result.ingress.reason == "allowed by x/allow-client-a-via-ns-selector-80 ingress rule 0"


def test_matrix_json_round_trip_and_disagreements(deny_ingress):
    static = static_matrix(deny_ingress, ports=(80,), protocols=("TCP", "UDP"))
    probed_data = static.to_json()
    flipped = next(
        c for c in probed_data["cells"] if (c["from"], c["to"], c["protocol"]) == ("y/a", "x/b", "UDP")
    )
    flipped["allowed"] = True
    probed_data["cells"] = [c for c in probed_data["cells"] if (c["from"], c["to"]) != ("z/c", "z/c")]
    probed = Matrix.from_json(json.loads(json.dumps(probed_data)))
    assert probed.pods == static.pods
    assert static.disagreements(probed) == [
        ("z/c", "z/c", 80, "TCP", True, None),
        ("y/a", "x/b", 80, "UDP", False, True),
        ("z/c", "z/c", 80, "UDP", True, None),
    ]
    assert static.disagreements(Matrix.from_json(static.to_json())) == []
    with pytest.raises(ValueError):
        Matrix.from_json({"cells": [{"from": "x/a"}]})
