"""Cilium's policies compiled against the pods that exist: per-pod rules indexed by address, and the
decision for one new connection (see podnet/api/ciliumpolicy.py for the policies' semantics). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address

from podnet.api.ciliumpolicy import (
    NAMESPACE_LABELS_PREFIX,
    POD_NAMESPACE_LABEL,
    CidrRule,
    CiliumPolicySpec,
    CiliumRule,
    PortProtocol,
)
from podnet.api.httprules import HttpRule

from ..policy.compile import EVERY_PORT, PodInfo, PortSet, parse_ports
from ..policy.model import EGRESS, INGRESS, Verdict, ip_to_int, protocol_name


@lru_cache(maxsize=1024)
def port_set(ports: tuple[PortProtocol, ...] | None) -> PortSet:
    if ports is None:
        return EVERY_PORT
    return parse_ports([{"protocol": p.protocol, "port": p.port, "endPort": p.end_port} for p in ports])


def identity_labels(pod: PodInfo, namespace_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels Cilium derives a pod's identity from, source prefixes stripped."""
    return {
        **{NAMESPACE_LABELS_PREFIX + k: v for k, v in namespace_labels.items()},
        **pod.labels,
        POD_NAMESPACE_LABEL: pod.namespace,
    }


@dataclass(frozen=True, slots=True)
class Allow:
    """An allow rule that matched a connection; `http` None means no request filtering."""

    policy: str
    rule_index: int
    http: tuple[HttpRule, ...] | None


# What a peer address is, for entities and CIDRs: a pod, this node, another node, or outside the cluster.
POD, HOST, REMOTE_NODE, WORLD = "pod", "host", "remote-node", "world"
_ENTITY_KINDS = {
    "all": frozenset({POD, HOST, REMOTE_NODE, WORLD}),
    "cluster": frozenset({POD, HOST, REMOTE_NODE}),
    "host": frozenset({HOST}),
    "remote-node": frozenset({REMOTE_NODE}),
    "world": frozenset({WORLD}),
    "none": frozenset(),
}


@dataclass(frozen=True, slots=True)
class _Entry:
    policy: str
    rule_index: int
    peers: frozenset[int] | None  # pods the endpoint selectors select; None: every address
    ports: PortSet
    http: tuple[HttpRule, ...] | None
    kinds: frozenset[str] = frozenset()  # kinds of address the rule's entities match
    cidrs: tuple[CidrRule, ...] = ()  # matching addresses outside the cluster

    def matches(self, peer: int, kind: str) -> bool:
        if self.peers is None or kind in self.kinds:
            return True
        if kind == POD:
            return peer in self.peers
        return kind == WORLD and any(c.contains(IPv4Address(peer)) for c in self.cidrs)


@dataclass(frozen=True, slots=True)
class CiliumDecision:
    """What Cilium's policies say about one new connection, before Kubernetes NetworkPolicies join in.
    `isolated`: some policy puts the judged pod in default deny in this direction."""

    direction: str
    isolated: bool = False
    denied_by: Verdict | None = None
    allows: tuple[Allow, ...] = ()


_NOTHING_SELECTED = {d: CiliumDecision(d) for d in (INGRESS, EGRESS)}


@dataclass
class _Subject:
    named_ports: Mapping[tuple[str, str], int]
    isolated: dict[str, list[str]] = field(default_factory=lambda: {INGRESS: [], EGRESS: []})
    allow: dict[str, list[_Entry]] = field(default_factory=lambda: {INGRESS: [], EGRESS: []})
    deny: dict[str, list[_Entry]] = field(default_factory=lambda: {INGRESS: [], EGRESS: []})


class CiliumPolicyIndex:
    """An immutable index of Cilium policies by the address of each pod they select; `decide` judges
    one new connection (ingress at the destination pod, egress at the source pod)."""

    def __init__(
        self,
        policies: Iterable[CiliumPolicySpec],
        pods: Iterable[PodInfo],
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
        *,
        host_addresses: Iterable[object] = (),
        node_addresses: Iterable[object] = (),
    ) -> None:
        """`host_addresses`: the judging node's own (the `host` entity); `node_addresses`: every node's."""
        self._subjects: dict[int, _Subject] = {}
        self._host = frozenset(map(ip_to_int, host_addresses))
        self._nodes = frozenset(map(ip_to_int, node_addresses)) | self._host
        policies = sorted(policies, key=lambda s: s.key)
        # The selected pods' addresses as the hook's flows spell them: a connection of an unselected pod,
        # the common case, is told so without converting its addresses.
        self._selected: frozenset[object] = frozenset()
        if not policies:  # the common case: nothing to index, and no labels worth computing
            self._pods_by_ip = {}
            return
        namespace_labels = namespace_labels or {}
        pods = list(pods)
        labels = {p.key: identity_labels(p, namespace_labels.get(p.namespace, {})) for p in pods}
        self._pods_by_ip = {p.ip: p for p in pods}
        for spec in policies:
            for pod in pods:
                if not spec.endpoint_selector.matches(labels[pod.key]):
                    continue
                subject = self._subjects.setdefault(pod.ip, _Subject(pod.named_ports))
                for direction in (INGRESS, EGRESS):
                    if spec.default_deny[direction]:
                        subject.isolated[direction].append(spec.key)
                    for rules, into in ((spec.allow, subject.allow), (spec.deny, subject.deny)):
                        into[direction].extend(self._entries(spec.key, rules[direction], pods, labels))
        self._selected = frozenset(self._subjects) | {str(IPv4Address(ip)) for ip in self._subjects}

    @staticmethod
    def _entries(policy: str, rules: Iterable[CiliumRule], pods: list[PodInfo], labels) -> list[_Entry]:
        entries = []
        for rule in rules:
            peers = None
            if rule.peers is not None:
                peers = frozenset(p.ip for p in pods if any(s.matches(labels[p.key]) for s in rule.peers))
            kinds = frozenset().union(*(_ENTITY_KINDS[e] for e in rule.entities))
            if rule.port_rules is None:
                entries.append(_Entry(policy, rule.index, peers, EVERY_PORT, None, kinds, rule.cidrs))
            for port_rule in rule.port_rules or ():
                ports = port_set(port_rule.ports)
                entries.append(_Entry(policy, rule.index, peers, ports, port_rule.http, kinds, rule.cidrs))
        return entries

    def _kind(self, address: int) -> str:
        if address in self._pods_by_ip:
            return POD
        if address in self._host:
            return HOST
        return REMOTE_NODE if address in self._nodes else WORLD

    def selects(self, ip: object) -> bool:
        return ip_to_int(ip) in self._subjects

    def decide(self, direction: str, flow: object) -> CiliumDecision:
        if (flow.dst_ip if direction == INGRESS else flow.src_ip) not in self._selected:
            return _NOTHING_SELECTED[direction]
        src, dst = ip_to_int(flow.src_ip), ip_to_int(flow.dst_ip)
        subject_ip, peer = (dst, src) if direction == INGRESS else (src, dst)
        subject = self._subjects.get(subject_ip)
        if subject is None:
            return _NOTHING_SELECTED[direction]
        if direction == INGRESS:
            named = subject.named_ports
        else:
            dst_pod = self._pods_by_ip.get(dst)
            named = {} if dst_pod is None else dst_pod.named_ports
        protocol, port = protocol_name(flow.protocol), flow.dst_port
        kind = self._kind(peer)

        def matching(entries: list[_Entry]) -> list[_Entry]:
            return [e for e in entries if e.matches(peer, kind) and e.ports.matches(protocol, port, named)]

        deny_field = "ingressDeny" if direction == INGRESS else "egressDeny"
        for entry in matching(subject.deny[direction]):
            return CiliumDecision(
                direction,
                isolated=True,
                denied_by=Verdict(
                    allowed=False,
                    reason=f"denied by {entry.policy} {deny_field} rule {entry.rule_index}",
                    policy=entry.policy,
                    rule_index=entry.rule_index,
                    direction=direction,
                ),
            )
        return CiliumDecision(
            direction,
            isolated=bool(subject.isolated[direction]),
            allows=tuple(Allow(e.policy, e.rule_index, e.http) for e in matching(subject.allow[direction])),
        )
