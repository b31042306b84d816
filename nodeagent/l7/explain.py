"""Which rule decides one HTTP request between two endpoints, from the API objects alone: NetworkPolicies
and Cilium's policies judged for the connection at both ends (egress at the source, ingress at the
destination), then the request against the HTTP rules of each end that filters it. What
`podnet explain SRC DST:PORT --http "METHOD PATH"` prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from podnet.api.ciliumpolicy import NotModelled, parse_cilium_policy
from podnet.api.httprules import HttpRequestHead, RuleError

from ..policy.compile import compile_objects, namespace_labels, pod_info
from ..policy.model import EGRESS, INGRESS, TCP, Flow, protocol_name
from .cilium import CiliumPolicyIndex
from .verdict import ConnectionVerdict, RequestVerdict, combine, judge_request

_CLIENT_PORT = 49152


def parse_request_line(text: str) -> tuple[str, str]:
    """ "DELETE /api/items" as (method, target); raises ValueError."""
    parts = text.split()
    if len(parts) != 2 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise ValueError(f'--http takes "METHOD /PATH", not {text!r}')
    return parts[0].upper(), parts[1]


@dataclass(frozen=True, slots=True)
class RequestExplanation:
    request: str
    connection: Mapping[str, ConnectionVerdict]  # by direction
    answers: Mapping[str, RequestVerdict]  # by direction, for the ends whose HTTP rules filter it

    @property
    def allowed(self) -> bool:
        return all(c.allowed for c in self.connection.values()) and all(
            a.allowed for a in self.answers.values()
        )

    def text(self) -> str:
        lines = []
        for direction, where in ((EGRESS, "source"), (INGRESS, "destination")):
            connection = self.connection[direction]
            lines.append(f"  {direction} at the {where}: {connection.reason}")
            if direction in self.answers:
                lines.append(f"    {self.request}: {self.answers[direction].reason}")
        if not all(c.allowed for c in self.connection.values()):
            outcome = "denied at L3/L4 (no connection)"
        elif self.allowed:
            outcome = "allowed"
        else:
            outcome = "denied: answered 403 by the proxy"
        return f"http {self.request}: {outcome}\n" + "\n".join(lines)


def cilium_index(objects: Iterable[Mapping]) -> tuple[CiliumPolicyIndex, dict[str, str]]:
    """Cilium's policies among `objects` (with Pods and Namespaces) indexed, and those not enforced."""
    objects = list(objects)
    specs, refused = [], {}
    for obj in objects:
        if obj.get("kind") not in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
            continue
        try:
            specs.append(parse_cilium_policy(obj))
        except (RuleError, NotModelled) as e:
            meta = obj.get("metadata") or {}
            refused[f"{obj['kind']}/{meta.get('namespace', '')}/{meta.get('name')}"] = str(e)
    pods = [p for p in (pod_info(o) for o in objects if o.get("kind") == "Pod") if p is not None]
    labels = {o["metadata"]["name"]: namespace_labels(o) for o in objects if o.get("kind") == "Namespace"}
    return CiliumPolicyIndex(specs, pods, labels), refused


def explain_request(
    objects: Iterable[Mapping],
    src_ip: str,
    dst_ip: str,
    port: int,
    method: str,
    target: str,
    *,
    host: str | None = None,
    protocol: str = TCP,
) -> RequestExplanation:
    objects = list(objects)
    evaluator = compile_objects(o for o in objects if o.get("kind") in ("Namespace", "Pod", "NetworkPolicy"))
    index, _ = cilium_index(objects)
    flow = Flow(protocol_name(protocol), src_ip, _CLIENT_PORT, dst_ip, port)
    request = HttpRequestHead(method, target, (("Host", host or f"{dst_ip}:{port}"),))
    connection, answers = {}, {}
    for direction in (EGRESS, INGRESS):
        connection[direction] = combine(evaluator.verdict(direction, flow), index.decide(direction, flow))
        if connection[direction].l7 is not None:
            answers[direction] = judge_request(connection[direction], request)
    return RequestExplanation(f"{method} {target}", connection, answers)
