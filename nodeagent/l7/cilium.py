"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (cilium.io/v2) compiled to per-pod rules.

Cilium's semantics, as its policy documentation states them:
- `endpointSelector` selects pods; a CiliumNetworkPolicy only pods of its own namespace, a clusterwide
  policy pods of every namespace. Label keys may carry Cilium's source prefix (`k8s:`, `any:`); every
  pod carries `io.kubernetes.pod.namespace` and `io.cilium.k8s.namespace.labels.<key>` for its
  namespace's labels.
- A pod selected by a policy with a non-empty `ingress` or `ingressDeny` list is in default deny at
  ingress (likewise egress), unless `enableDefaultDeny.ingress` is false.
- An allow rule matches a peer by `fromEndpoints`/`toEndpoints` selectors — in a CiliumNetworkPolicy a
  selector that names no namespace means the policy's namespace — and a port by `toPorts`. A rule with
  `toPorts` but no peer field matches every peer; a rule with neither matches nothing (`ingress: [{}]`
  is how Cilium writes "default deny"). `toPorts[].ports[].protocol` defaults to ANY.
- `toPorts[].rules.http` makes the port's traffic from those peers filtered per request (see
  http_rules). Allows add up: when one allow rule covers a peer and port with no HTTP rules, the HTTP
  rules of another rule on the same port have no effect for that peer.
- `ingressDeny`/`egressDeny` rules (L3/L4 only) take precedence over every allow rule, Kubernetes
  NetworkPolicies included.
Peer kinds other than endpoints (CIDRs, entities, services, FQDNs) are not modelled: such a peer
matches no address, so an allow rule using only them allows nothing here; the compiler reports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from podnet.api.kinds import Kind
from podnet.api.selectors import Selector, SelectorError, from_label_selector

from ..policy.compile import EVERY_PORT, PodInfo, PolicyError, PortSet, parse_ports
from ..policy.model import EGRESS, INGRESS, PROTOCOLS, Verdict, ip_to_int, protocol_name
from .http_rules import HttpRule, RuleError, parse_http_rules

GROUP_VERSION = "cilium.io/v2"
NAMESPACED_KIND = "CiliumNetworkPolicy"
CLUSTERWIDE_KIND = "CiliumClusterwideNetworkPolicy"

# The kinds as Cilium's CRDs define them (deploy/crds/cilium.yaml), for clients that list and watch them.
CILIUM_KINDS = {
    NAMESPACED_KIND: Kind(NAMESPACED_KIND, "cilium.io", "v2", "ciliumnetworkpolicies", True),
    CLUSTERWIDE_KIND: Kind(CLUSTERWIDE_KIND, "cilium.io", "v2", "ciliumclusterwidenetworkpolicies", False),
}

POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
_LABEL_SOURCES = ("k8s:", "any:")

# (direction, allow list, deny list, peer field, peer kinds not modelled)
_SECTIONS = {
    INGRESS: (
        "ingress",
        "ingressDeny",
        "fromEndpoints",
        ("fromCIDR", "fromCIDRSet", "fromEntities", "fromGroups", "fromNodes", "fromRequires"),
    ),
    EGRESS: (
        "egress",
        "egressDeny",
        "toEndpoints",
        ("toCIDR", "toCIDRSet", "toEntities", "toFQDNs", "toGroups", "toNodes", "toRequires", "toServices"),
    ),
}


# ---------------------------------------------------------------------------------------------------
# Policies as parsed


@dataclass(frozen=True, slots=True)
class PortRule:
    """One `toPorts` entry: ports, and the HTTP rules that filter them (None: no L7 filtering)."""

    ports: PortSet
    http: tuple[HttpRule, ...] | None


@dataclass(frozen=True, slots=True)
class CiliumRule:
    index: int
    peers: tuple[Selector, ...] | None  # None: every address
    port_rules: tuple[PortRule, ...] | None  # None: every port, no L7 filtering


@dataclass(frozen=True, slots=True)
class CiliumPolicySpec:
    key: str  # "namespace/name", or the name of a clusterwide policy
    namespace: str | None  # None: clusterwide
    endpoint_selector: Selector
    allow: Mapping[str, tuple[CiliumRule, ...]]
    deny: Mapping[str, tuple[CiliumRule, ...]]
    default_deny: Mapping[str, bool]
    unsupported: tuple[str, ...] = ()  # fields of peer kinds not modelled, reported


class NotModelled(ValueError):
    """A valid Cilium policy in a form podnet does not enforce (the API server accepts it; the agent
    reports it)."""


def _strip_source(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise RuleError(where, key, "a label key must be a string")
    for source in _LABEL_SOURCES:
        if key.startswith(source):
            return key[len(source) :]
    if ":" in key.split("/", 1)[0]:
        raise RuleError(where, key, "only the k8s: and any: label sources select pods")
    return key


def endpoint_selector(value: object, where: str, namespace: str | None) -> Selector:
    """A Cilium EndpointSelector as a label Selector over pod identity labels; with `namespace`, one that
    names no namespace is confined to it."""
    if not isinstance(value, Mapping):
        raise RuleError(where, value, "must be a label selector")
    match_labels = value.get("matchLabels") or {}
    expressions = value.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise RuleError(where, value, "must be a label selector")
    labels = {_strip_source(k, f"{where}.matchLabels"): v for k, v in match_labels.items()}
    exprs = [
        {**e, "key": _strip_source(e.get("key"), f"{where}.matchExpressions[{i}].key")}
        if isinstance(e, Mapping)
        else e
        for i, e in enumerate(expressions)
    ]
    if (
        namespace is not None
        and POD_NAMESPACE_LABEL not in labels
        and not any(isinstance(e, Mapping) and e.get("key") == POD_NAMESPACE_LABEL for e in exprs)
    ):
        labels[POD_NAMESPACE_LABEL] = namespace
    try:
        return from_label_selector({"matchLabels": labels, "matchExpressions": exprs})
    except SelectorError as e:
        raise RuleError(where, dict(value), str(e)) from e


def _cilium_ports(ports: object, where: str) -> PortSet:
    """Cilium's PortProtocol list (port as a string, protocol defaulting to ANY) as a PortSet."""
    if ports is None:
        return EVERY_PORT
    if not isinstance(ports, list):
        raise RuleError(where, ports, "must be a list")
    entries = []
    for i, entry in enumerate(ports):
        if not isinstance(entry, Mapping):
            raise RuleError(f"{where}[{i}]", entry, "must be an object")
        port = entry.get("port")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if port == 0:
            port = None  # Cilium's "0": every port
        protocol = (entry.get("protocol") or "ANY").upper()
        if protocol != "ANY" and protocol not in PROTOCOLS:
            raise RuleError(f"{where}[{i}].protocol", entry.get("protocol"), "must be TCP, UDP, SCTP or ANY")
        for p in PROTOCOLS if protocol == "ANY" else (protocol,):
            entries.append({"port": port, "protocol": p, "endPort": entry.get("endPort")})
    try:
        return parse_ports(entries) if entries else EVERY_PORT
    except PolicyError as e:
        raise RuleError(where, ports, str(e)) from e


def _port_rules(to_ports: object, where: str, *, allow_l7: bool) -> tuple[PortRule, ...] | None:
    if to_ports is None:
        return None
    if not isinstance(to_ports, list):
        raise RuleError(where, to_ports, "must be a list")
    parsed = []
    for i, entry in enumerate(to_ports):
        if not isinstance(entry, Mapping):
            raise RuleError(f"{where}[{i}]", entry, "must be an object")
        rules = entry.get("rules")
        http = None
        if rules is not None:
            if not allow_l7:
                raise RuleError(f"{where}[{i}].rules", rules, "deny rules cannot have layer 7 rules")
            if not isinstance(rules, Mapping):
                raise RuleError(f"{where}[{i}].rules", rules, "must be an object")
            if rules.get("http") is not None:
                http = parse_http_rules(rules["http"], f"{where}[{i}].rules.http")
        parsed.append(PortRule(_cilium_ports(entry.get("ports"), f"{where}[{i}].ports"), http))
    return tuple(parsed)


def _parse_rules(
    rules: object,
    where: str,
    peer_field: str,
    unmodelled: tuple[str, ...],
    namespace: str | None,
    *,
    allow_l7: bool,
    unsupported: list[str],
) -> tuple[CiliumRule, ...]:
    if rules is None:
        return ()
    if not isinstance(rules, list):
        raise RuleError(where, rules, "must be a list")
    parsed = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            raise RuleError(f"{where}[{i}]", rule, "must be an object")
        others = [f"{where}[{i}].{f}" for f in unmodelled if rule.get(f) is not None]
        unsupported.extend(others)
        selectors = rule.get(peer_field)
        if selectors is not None and not isinstance(selectors, list):
            raise RuleError(f"{where}[{i}].{peer_field}", selectors, "must be a list")
        port_rules = _port_rules(rule.get("toPorts"), f"{where}[{i}].toPorts", allow_l7=allow_l7)
        if selectors is None and not others:
            # No peer field: with toPorts every peer; with nothing at all, nothing.
            peers = None if port_rules is not None else ()
        else:
            peers = tuple(
                endpoint_selector(s, f"{where}[{i}].{peer_field}[{j}]", namespace)
                for j, s in enumerate(selectors or [])
            )
        parsed.append(CiliumRule(index=i, peers=peers, port_rules=port_rules))
    return tuple(parsed)


def parse_cilium_policy(obj: Mapping) -> CiliumPolicySpec:
    """Validates and parses a CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy. Raises RuleError
    naming the field for what Cilium refuses, NotModelled for the forms podnet does not enforce (a
    `specs` list of several rules, a `nodeSelector`)."""
    kind = obj.get("kind") or NAMESPACED_KIND
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    namespace = None if kind == CLUSTERWIDE_KIND else meta.get("namespace") or "default"
    specs = [obj["spec"]] if obj.get("spec") is not None else []
    specs += obj.get("specs") or []
    if not specs:
        raise RuleError("spec", None, "a policy needs spec or specs")
    if len(specs) > 1:
        raise NotModelled("podnet enforces one rule per policy: the specs list is not enforced")
    spec, where = specs[0], "spec" if obj.get("spec") is not None else "specs[0]"
    if not isinstance(spec, Mapping):
        raise RuleError(where, spec, "must be an object")
    if spec.get("endpointSelector") is None:
        raise NotModelled("podnet selects pods by endpointSelector only: a nodeSelector is not enforced")
    selector = endpoint_selector(spec["endpointSelector"], f"{where}.endpointSelector", namespace)
    unsupported: list[str] = []
    allow, deny, default_deny = {}, {}, {}
    enable = spec.get("enableDefaultDeny") or {}
    for direction, (allow_field, deny_field, peer_field, unmodelled) in _SECTIONS.items():
        allow[direction] = _parse_rules(
            spec.get(allow_field),
            f"{where}.{allow_field}",
            peer_field,
            unmodelled,
            namespace,
            allow_l7=True,
            unsupported=unsupported,
        )
        deny[direction] = _parse_rules(
            spec.get(deny_field),
            f"{where}.{deny_field}",
            peer_field,
            unmodelled,
            namespace,
            allow_l7=False,
            unsupported=unsupported,
        )
        has_section = bool(spec.get(allow_field)) or bool(spec.get(deny_field))
        default_deny[direction] = has_section and enable.get(direction) is not False
    return CiliumPolicySpec(
        key=name if namespace is None else f"{namespace}/{name}",
        namespace=namespace,
        endpoint_selector=selector,
        allow=allow,
        deny=deny,
        default_deny=default_deny,
        unsupported=tuple(unsupported),
    )


# ---------------------------------------------------------------------------------------------------
# Compiled against the pods that exist


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


@dataclass(frozen=True, slots=True)
class _Entry:
    policy: str
    rule_index: int
    peers: frozenset[int] | None  # None: every address
    ports: PortSet
    http: tuple[HttpRule, ...] | None


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
    ) -> None:
        self._subjects: dict[int, _Subject] = {}
        policies = sorted(policies, key=lambda s: s.key)
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

    @staticmethod
    def _entries(policy: str, rules: Iterable[CiliumRule], pods: list[PodInfo], labels) -> list[_Entry]:
        entries = []
        for rule in rules:
            peers = None
            if rule.peers is not None:
                peers = frozenset(p.ip for p in pods if any(s.matches(labels[p.key]) for s in rule.peers))
            for port_rule in rule.port_rules or (PortRule(EVERY_PORT, None),):
                entries.append(_Entry(policy, rule.index, peers, port_rule.ports, port_rule.http))
        return entries

    def selects(self, ip: object) -> bool:
        return ip_to_int(ip) in self._subjects

    def decide(self, direction: str, flow: object) -> CiliumDecision:
        if not self._subjects:
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

        def matching(entries: list[_Entry]) -> list[_Entry]:
            return [
                e
                for e in entries
                if (e.peers is None or peer in e.peers) and e.ports.matches(protocol, port, named)
            ]

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
