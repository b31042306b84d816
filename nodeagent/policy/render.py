"""Connectivity truth tables as text, the way Kubernetes' network-policy e2e tests print them: rows are
sources, columns destinations, "." a connection that gets through, "X" one that does not.

The text form is also a data format: `parse_table` reads a table written by hand (or printed by
`render_table`), so expected tables can live as literals and be compared with computed or probed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ALLOWED = "."
DENIED = "X"
_CORNER = "-"


@dataclass(frozen=True)
class TruthTable:
    pods: tuple[str, ...]
    allowed: Mapping[tuple[str, str], bool]  # (from, to) -> reachable

    def __getitem__(self, pair: tuple[str, str]) -> bool:
        return self.allowed[pair]

    def mismatches(
        self, observed: TruthTable, *, ignore_loopback: bool = False
    ) -> list[tuple[str, str, bool, bool]]:
        """(from, to, expected, observed) for every cell where `observed` differs from this table.
        `ignore_loopback` skips a pod reaching itself, whose treatment CNIs do not agree on."""
        if self.pods != observed.pods:
            raise ValueError(f"tables cover different pods: {self.pods} vs {observed.pods}")
        return [
            (src, dst, self.allowed[src, dst], observed.allowed[src, dst])
            for src in self.pods
            for dst in self.pods
            if not (ignore_loopback and src == dst) and self.allowed[src, dst] != observed.allowed[src, dst]
        ]


def parse_table(text: str) -> TruthTable:
    """Reads a table: a header line "- pod pod ...", then one line per source pod in header order, with
    one "." or "X" per destination. Whitespace separates columns; blank lines are ignored."""
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    if not lines or lines[0][0] != _CORNER:
        raise ValueError(f"a truth table starts with a header line beginning with {_CORNER!r}")
    pods = tuple(lines[0][1:])
    if len(set(pods)) != len(pods):
        raise ValueError("a pod appears twice in the header")
    rows = lines[1:]
    if [row[0] for row in rows] != list(pods):
        raise ValueError(f"rows must be the header's pods in order: {list(pods)}")
    allowed: dict[tuple[str, str], bool] = {}
    for row in rows:
        src, marks = row[0], row[1:]
        if len(marks) != len(pods):
            raise ValueError(f"row {src} has {len(marks)} cells, expected {len(pods)}")
        for dst, mark in zip(pods, marks, strict=True):
            if mark not in (ALLOWED, DENIED):
                raise ValueError(f"row {src}, column {dst}: {mark!r} is neither {ALLOWED!r} nor {DENIED!r}")
            allowed[src, dst] = mark == ALLOWED
    return TruthTable(pods, allowed)


def _grid(pods: tuple[str, ...], mark) -> str:
    width = max([len(_CORNER), *map(len, pods)])
    lines = [" ".join(p.ljust(width) for p in (_CORNER, *pods)).rstrip()]
    for src in pods:
        cells = (mark(src, dst).ljust(width) for dst in pods)
        lines.append(" ".join((src.ljust(width), *cells)).rstrip())
    return "\n".join(lines)


def render_table(table: TruthTable) -> str:
    return _grid(table.pods, lambda src, dst: ALLOWED if table.allowed[src, dst] else DENIED)


def render_comparison(expected: TruthTable, observed: TruthTable) -> str:
    """Expected, observed, and where they differ ("X" marks a differing cell), as the e2e tests log them."""
    differing = {(src, dst) for src, dst, _, _ in expected.mismatches(observed)}
    comparison = _grid(expected.pods, lambda src, dst: DENIED if (src, dst) in differing else ALLOWED)
    return (
        f"expected:\n{render_table(expected)}\n\nobserved:\n{render_table(observed)}\n\n"
        f"comparison:\n{comparison}"
    )
