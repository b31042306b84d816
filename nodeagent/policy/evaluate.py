"""Judging one new connection against compiled policies.

Ingress is judged at the destination pod, egress at the source pod; each pod's rules are found by its
address in one dict lookup and hold only the policies that select it, so a verdict costs the same with
10 or 1000 policies in the cluster. A pod that no policy of that direction selects is not isolated and
accepts everything. Replies of an allowed connection are conntrack's business: the hook sees only the
first packet of a connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model import DIRECTIONS, EGRESS, INGRESS, PROTOCOLS, Verdict, ip_to_int, protocol_name

if TYPE_CHECKING:
    from .compile import CompiledPolicy, PodInfo, Rule

_NO_NAMED_PORTS: Mapping[tuple[str, str], int] = {}


@dataclass(frozen=True, slots=True)
class _Subject:
    """A pod with the rules that judge it: all rules of all policies selecting it, in policy-key order.
    `*_denied` is None when no policy of that direction selects the pod."""

    pod: PodInfo
    ingress: tuple[Rule, ...]
    ingress_denied: Verdict | None
    egress: tuple[Rule, ...]
    egress_denied: Verdict | None


def _denied(policies: list[str], direction: str) -> Verdict | None:
    if not policies:
        return None
    return Verdict(
        allowed=False,
        reason=f"denied: selected by {', '.join(policies)} and no rule matched",
        direction=direction,
    )


class Evaluator:
    """An immutable index of compiled policies by pod address. `verdict(direction, flow)` is the
    forwarding pipeline's policy hook."""

    def __init__(
        self,
        pods: Iterable[PodInfo],
        policies: Iterable[CompiledPolicy],
        *,
        node_name: str | None = None,
    ) -> None:
        self.node_name = node_name
        self._pods_by_key: dict[str, PodInfo] = {p.key: p for p in pods}
        self._pods_by_ip: dict[int, PodInfo] = {p.ip: p for p in self._pods_by_key.values()}
        by_key = {p.key: p for p in policies}
        self.policies: tuple[str, ...] = tuple(sorted(by_key))
        selecting: dict[str, dict[str, list[CompiledPolicy]]] = {}
        for key in self.policies:
            policy = by_key[key]
            for pod_key in policy.selected:
                per_direction = selecting.setdefault(pod_key, {INGRESS: [], EGRESS: []})
                if policy.ingress is not None:
                    per_direction[INGRESS].append(policy)
                if policy.egress is not None:
                    per_direction[EGRESS].append(policy)
        self._subjects: dict[int, _Subject] = {}
        for pod_key, per_direction in selecting.items():
            pod = self._pods_by_key.get(pod_key)
            if pod is None or (node_name is not None and pod.node != node_name):
                continue
            ingress, egress = per_direction[INGRESS], per_direction[EGRESS]
            self._subjects[pod.ip] = _Subject(
                pod=pod,
                ingress=tuple(rule for p in ingress for rule in p.ingress),
                ingress_denied=_denied([p.key for p in ingress], INGRESS),
                egress=tuple(rule for p in egress for rule in p.egress),
                egress_denied=_denied([p.key for p in egress], EGRESS),
            )
        self._not_selected = {
            d: Verdict(allowed=True, reason="allowed: no policy selects the pod", direction=d)
            for d in DIRECTIONS
        }
        self._not_judged_here = {
            d: Verdict(
                allowed=True,
                reason="allowed: not a pod"
                if node_name is None
                else f"allowed: not a pod of node {node_name}",
                direction=d,
            )
            for d in DIRECTIONS
        }

    @property
    def pods(self) -> dict[str, str]:
        """Every pod policies know, "namespace/name" -> IP."""
        return {key: pod.ip_text for key, pod in self._pods_by_key.items()}

    def pod_ip(self, key: str) -> str | None:
        pod = self._pods_by_key.get(key)
        return None if pod is None else pod.ip_text

    def pod_at(self, ip: object) -> str | None:
        pod = self._pods_by_ip.get(ip_to_int(ip))
        return None if pod is None else pod.key

    def _unselected(self, direction: str, ip: int) -> Verdict:
        pod = self._pods_by_ip.get(ip)
        if pod is None or (self.node_name is not None and pod.node != self.node_name):
            return self._not_judged_here[direction]
        return self._not_selected[direction]

    def verdict(self, direction: str, flow: object) -> Verdict:
        protocol = flow.protocol
        if protocol not in PROTOCOLS:
            protocol = protocol_name(protocol)
        src, dst = ip_to_int(flow.src_ip), ip_to_int(flow.dst_ip)
        if direction == INGRESS:
            subject = self._subjects.get(dst)
            if subject is None:
                return self._unselected(INGRESS, dst)
            rules, denied, peer, named = subject.ingress, subject.ingress_denied, src, subject.pod.named_ports
        elif direction == EGRESS:
            subject = self._subjects.get(src)
            if subject is None:
                return self._unselected(EGRESS, src)
            rules, denied, peer = subject.egress, subject.egress_denied, dst
            dst_pod = self._pods_by_ip.get(dst)
            named = _NO_NAMED_PORTS if dst_pod is None else dst_pod.named_ports
        else:
            raise ValueError(f"direction must be {INGRESS!r} or {EGRESS!r}, not {direction!r}")
        if denied is None:
            return self._not_selected[direction]
        port = flow.dst_port
        for rule in rules:
            if peer in rule.peers and rule.ports.matches(protocol, port, named):
                return rule.verdict
        return denied
