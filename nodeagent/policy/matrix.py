"""What the policies alone say about connectivity: the static truth table and the explanation of one
connection. A connection from pod A to pod B gets through when the egress policies of A and the
ingress policies of B both allow it; each side is judged exactly as the pipeline's hook judges it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .evaluate import Evaluator
from .model import EGRESS, INGRESS, TCP, Flow, Verdict, protocol_name
from .render import TruthTable

# The source port plays no part in NetworkPolicy; any ephemeral port stands for the client.
_CLIENT_PORT = 49152


@dataclass(frozen=True, slots=True)
class Explanation:
    src: str
    dst: str
    src_ip: str
    dst_ip: str
    port: int
    protocol: str
    egress: Verdict
    ingress: Verdict

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    def text(self) -> str:
        def name(who: str, ip: str) -> str:
            return who if who == ip else f"{who} ({ip})"

        outcome = "allowed" if self.allowed else "denied"
        return (
            f"{name(self.src, self.src_ip)} -> {name(self.dst, self.dst_ip)} {self.port}/{self.protocol}: {outcome}\n"
            f"  egress at {self.src}: {self.egress.reason}\n"
            f"  ingress at {self.dst}: {self.ingress.reason}"
        )


def _endpoint(evaluator: Evaluator, who: str) -> tuple[str, str]:
    """("namespace/pod" or the address itself, address) for a pod key or an address."""
    if "/" in who:
        ip = evaluator.pod_ip(who)
        if ip is None:
            raise ValueError(f"no pod {who} with an address")
        return who, ip
    return evaluator.pod_at(who) or who, who


def explain(evaluator: Evaluator, src: str, dst: str, port: int, protocol: str = TCP) -> Explanation:
    """Both verdicts for a new connection from `src` to `dst`, each a pod key ("ns/name") or an address."""
    src_name, src_ip = _endpoint(evaluator, src)
    dst_name, dst_ip = _endpoint(evaluator, dst)
    protocol = protocol_name(protocol)
    flow = Flow(protocol, src_ip, _CLIENT_PORT, dst_ip, port)
    return Explanation(
        src=src_name,
        dst=dst_name,
        src_ip=src_ip,
        dst_ip=dst_ip,
        port=port,
        protocol=protocol,
        egress=evaluator.verdict(EGRESS, flow),
        ingress=evaluator.verdict(INGRESS, flow),
    )


@dataclass(frozen=True, slots=True)
class Cell:
    """One connection of the matrix; the verdicts are there when the policies decided it (a probed
    matrix read back from JSON has none)."""

    src: str
    dst: str
    port: int
    protocol: str
    allowed: bool
    egress: Verdict | None = None
    ingress: Verdict | None = None

    def to_json(self) -> dict:
        return {
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": self.protocol,
            "allowed": self.allowed,
        }


@dataclass(frozen=True)
class Matrix:
    pods: tuple[str, ...]
    cells: tuple[Cell, ...]

    def to_json(self) -> dict:
        return {"cells": [cell.to_json() for cell in self.cells]}

    @classmethod
    def from_json(cls, data: dict) -> Matrix:
        """A matrix from `{"cells": [{"from", "to", "port", "protocol", "allowed"}, ...]}`."""
        try:
            cells = tuple(
                Cell(c["from"], c["to"], int(c["port"]), protocol_name(c["protocol"]), bool(c["allowed"]))
                for c in data["cells"]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a matrix: {e!r}") from e
        pods = tuple(dict.fromkeys(p for c in cells for p in (c.src, c.dst)))
        return cls(pods, cells)

    def disagreements(self, other: Matrix) -> list[tuple[str, str, int, str, bool | None, bool | None]]:
        """(from, to, port, protocol, allowed here, allowed in `other`) wherever the two differ; None
        where one matrix lacks the cell."""
        mine = {(c.src, c.dst, c.port, c.protocol): c.allowed for c in self.cells}
        theirs = {(c.src, c.dst, c.port, c.protocol): c.allowed for c in other.cells}
        return [
            (*key, mine.get(key), theirs.get(key))
            for key in dict.fromkeys([*mine, *theirs])
            if mine.get(key) != theirs.get(key)
        ]

    def combinations(self) -> list[tuple[int, str]]:
        """The (port, protocol) pairs the matrix covers, in the order computed."""
        return list(dict.fromkeys((cell.port, cell.protocol) for cell in self.cells))

    def table(self, port: int, protocol: str = TCP) -> TruthTable:
        protocol = protocol_name(protocol)
        allowed = {(c.src, c.dst): c.allowed for c in self.cells if c.port == port and c.protocol == protocol}
        if not allowed:
            raise KeyError(f"the matrix does not cover {port}/{protocol}")
        return TruthTable(self.pods, allowed)


def static_matrix(
    evaluator: Evaluator,
    *,
    pods: Iterable[str] | None = None,
    namespaces: Iterable[str] | None = None,
    ports: Iterable[int] = (80,),
    protocols: Iterable[str] = (TCP,),
) -> Matrix:
    """Every pod to every pod (all pods the evaluator knows, or `pods`, optionally only those of
    `namespaces`) for every port and protocol, from the policies alone."""
    keys = sorted(evaluator.pods) if pods is None else list(pods)
    if namespaces is not None:
        wanted = set(namespaces)
        keys = [k for k in keys if k.split("/", 1)[0] in wanted]
    cells = []
    for protocol in protocols:
        for port in ports:
            for src in keys:
                for dst in keys:
                    e = explain(evaluator, src, dst, port, protocol)
                    cells.append(Cell(src, dst, port, e.protocol, e.allowed, e.egress, e.ingress))
    return Matrix(tuple(keys), tuple(cells))
