"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (cilium.io/v2) as parsed and validated, pure:
what the API server refuses a policy for and what the node agents compile (nodeagent/l7/cilium.py).

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
  httprules). Allows add up: when one allow rule covers a peer and port with no HTTP rules, the HTTP
  rules of another rule on the same port have no effect for that peer.
- `ingressDeny`/`egressDeny` rules (L3/L4 only) take precedence over every allow rule, Kubernetes
  NetworkPolicies included.
- `fromCIDR`/`toCIDR` and `fromCIDRSet`/`toCIDRSet` (with `except`) match addresses outside the cluster
  only: never a pod's, never a node's ("CIDR rules do not apply to traffic where both sides of the
  connection are either managed by Cilium or use an IP belonging to a node in the cluster").
- `fromEntities`/`toEntities`: `all` every address; `world` what is neither a pod nor a node; `cluster`
  every pod and node; `host` the pod's own node; `remote-node` the other nodes; `none` nothing.
Other peer kinds (the entities init, ingress, unmanaged, health and kube-apiserver; services, FQDNs,
groups, nodes) are not modelled: such a peer matches no address, so an allow rule using only them allows
nothing; the agents report them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network

from podnet.api.httprules import HttpRule, RuleError, parse_http_rules
from podnet.api.kinds import Kind
from podnet.api.selectors import Selector, SelectorError, from_label_selector

GROUP_VERSION = "cilium.io/v2"
NAMESPACED_KIND = "CiliumNetworkPolicy"
CLUSTERWIDE_KIND = "CiliumClusterwideNetworkPolicy"

# The kinds as Cilium's CRDs define them (deploy/crds/cilium.yaml), for clients that list and watch them.
CILIUM_KINDS = {
    NAMESPACED_KIND: Kind(NAMESPACED_KIND, "cilium.io", "v2", "ciliumnetworkpolicies", True),
    CLUSTERWIDE_KIND: Kind(CLUSTERWIDE_KIND, "cilium.io", "v2", "ciliumclusterwidenetworkpolicies", False),
}

# The directions and protocols as the policy hook names them.
INGRESS, EGRESS = "ingress", "egress"
PROTOCOLS = ("TCP", "UDP", "SCTP")
_PORT_MAX = 65535

POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
_LABEL_SOURCES = ("k8s:", "any:")

# (direction, allow list, deny list, the peer fields' prefix, peer kinds not modelled)
_SECTIONS = {
    INGRESS: ("ingress", "ingressDeny", "from", ("fromGroups", "fromNodes", "fromRequires")),
    EGRESS: ("egress", "egressDeny", "to", ("toFQDNs", "toGroups", "toNodes", "toRequires", "toServices")),
}
# Cilium's entities (its CRD's enum), and those podnet tells apart.
ENTITIES = (
    "all", "world", "cluster", "host", "init", "ingress", "unmanaged", "remote-node", "health", "none",
    "kube-apiserver",
)
MODELLED_ENTITIES = frozenset({"all", "world", "cluster", "host", "remote-node", "none"})


# ---------------------------------------------------------------------------------------------------
# Policies as parsed


@dataclass(frozen=True, slots=True)
class PortProtocol:
    """One port of a `toPorts` entry in NetworkPolicy's terms: a number (with `end_port`, a range), a
    container port name, or None for every port of the protocol."""

    protocol: str
    port: int | str | None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class PortRule:
    """One `toPorts` entry: ports (None: every port), and the HTTP rules that filter them (None: no L7
    filtering)."""

    ports: tuple[PortProtocol, ...] | None
    http: tuple[HttpRule, ...] | None


@dataclass(frozen=True, slots=True)
class CidrRule:
    """A CIDR peer, less the networks of its `except` list."""

    network: IPv4Network | IPv6Network
    excepts: tuple[IPv4Network | IPv6Network, ...] = ()

    def contains(self, address: IPv4Address) -> bool:
        return address in self.network and not any(address in e for e in self.excepts)


@dataclass(frozen=True, slots=True)
class CiliumRule:
    index: int
    peers: tuple[Selector, ...] | None  # endpoint selectors; None: every address
    port_rules: tuple[PortRule, ...] | None  # None: every port, no L7 filtering
    cidrs: tuple[CidrRule, ...] = ()
    entities: frozenset[str] = frozenset()  # of MODELLED_ENTITIES


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


def _cilium_port(entry: object, where: str) -> list[PortProtocol]:
    """One PortProtocol (port as a string, protocol defaulting to ANY) as NetworkPolicy ports."""
    if not isinstance(entry, Mapping):
        raise RuleError(where, entry, "must be an object")
    port, end_port = entry.get("port"), entry.get("endPort")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if port == 0 or port is None:
        port = None  # Cilium's "0" or none: every port
    elif isinstance(port, int) and not isinstance(port, bool):
        if not 1 <= port <= _PORT_MAX:
            raise RuleError(f"{where}.port", entry.get("port"), f"must be a port number up to {_PORT_MAX}")
    elif not isinstance(port, str) or not port:
        raise RuleError(f"{where}.port", port, "must be a port number or a port name")
    if end_port is not None and (
        not isinstance(port, int)
        or not isinstance(end_port, int)
        or isinstance(end_port, bool)
        or not port <= end_port <= _PORT_MAX
    ):
        raise RuleError(f"{where}.endPort", end_port, "must be a port number not below port")
    protocol = (entry.get("protocol") or "ANY").upper()
    if protocol != "ANY" and protocol not in PROTOCOLS:
        raise RuleError(f"{where}.protocol", entry.get("protocol"), "must be TCP, UDP, SCTP or ANY")
    return [PortProtocol(p, port, end_port) for p in (PROTOCOLS if protocol == "ANY" else (protocol,))]


def _cilium_ports(ports: object, where: str) -> tuple[PortProtocol, ...] | None:
    if ports is None:
        return None
    if not isinstance(ports, list):
        raise RuleError(where, ports, "must be a list")
    parsed = [p for i, entry in enumerate(ports) for p in _cilium_port(entry, f"{where}[{i}]")]
    return tuple(parsed) or None


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


def _network(text: object, where: str) -> IPv4Network | IPv6Network:
    if not isinstance(text, str):
        raise RuleError(where, text, "must be a CIDR")
    try:
        return ip_network(text, strict=False)
    except ValueError as e:
        raise RuleError(where, text, f"invalid CIDR: {e}") from e


def _cidrs(rule: Mapping, where: str, prefix: str, unsupported: list[str]) -> tuple[CidrRule, ...]:
    parsed: list[CidrRule] = []
    plain, sets = rule.get(f"{prefix}CIDR"), rule.get(f"{prefix}CIDRSet")
    for field, value in ((f"{prefix}CIDR", plain), (f"{prefix}CIDRSet", sets)):
        if value is not None and not isinstance(value, list):
            raise RuleError(f"{where}.{field}", value, "must be a list")
    for i, text in enumerate(plain or []):
        parsed.append(CidrRule(_network(text, f"{where}.{prefix}CIDR[{i}]")))
    for i, entry in enumerate(sets or []):
        at = f"{where}.{prefix}CIDRSet[{i}]"
        if not isinstance(entry, Mapping) or (entry.get("cidr") is None) == (entry.get("cidrGroupRef") is None):
            raise RuleError(at, entry, "needs one of cidr and cidrGroupRef")
        if entry.get("cidr") is None:
            unsupported.append(f"{at}.cidrGroupRef")
            continue
        excepts = entry.get("except") or []
        if not isinstance(excepts, list):
            raise RuleError(f"{at}.except", excepts, "must be a list")
        parsed.append(CidrRule(
            _network(entry["cidr"], f"{at}.cidr"),
            tuple(_network(e, f"{at}.except[{j}]") for j, e in enumerate(excepts)),
        ))
    return tuple(parsed)


def _entities(rule: Mapping, where: str, prefix: str, unsupported: list[str]) -> frozenset[str] | None:
    """The rule's modelled entities; None when it names none."""
    field = f"{prefix}Entities"
    value = rule.get(field)
    if value is None:
        return None
    if not isinstance(value, list):
        raise RuleError(f"{where}.{field}", value, "must be a list")
    for i, entity in enumerate(value):
        if entity not in ENTITIES:
            raise RuleError(f"{where}.{field}[{i}]", entity, f"must be one of {', '.join(ENTITIES)}")
        if entity not in MODELLED_ENTITIES:
            unsupported.append(f"{where}.{field}[{i}]: {entity}")
    return frozenset(value) & MODELLED_ENTITIES


def _parse_rules(
    rules: object,
    where: str,
    peer_prefix: str,
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
        peer_field = f"{peer_prefix}Endpoints"
        selectors = rule.get(peer_field)
        if selectors is not None and not isinstance(selectors, list):
            raise RuleError(f"{where}[{i}].{peer_field}", selectors, "must be a list")
        cidrs = _cidrs(rule, f"{where}[{i}]", peer_prefix, unsupported)
        entities = _entities(rule, f"{where}[{i}]", peer_prefix, unsupported)
        port_rules = _port_rules(rule.get("toPorts"), f"{where}[{i}].toPorts", allow_l7=allow_l7)
        named_peers = [f for f in ("CIDR", "CIDRSet", "Entities") if rule.get(f"{peer_prefix}{f}") is not None]
        if selectors is None and not others and not named_peers:
            # No peer field: with toPorts every peer; with nothing at all, nothing.
            peers = None if port_rules is not None else ()
        else:
            peers = tuple(
                endpoint_selector(s, f"{where}[{i}].{peer_field}[{j}]", namespace)
                for j, s in enumerate(selectors or [])
            )
        parsed.append(
            CiliumRule(index=i, peers=peers, port_rules=port_rules, cidrs=cidrs, entities=entities or frozenset())
        )
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
    for direction, (allow_field, deny_field, peer_prefix, unmodelled) in _SECTIONS.items():
        allow[direction] = _parse_rules(
            spec.get(allow_field),
            f"{where}.{allow_field}",
            peer_prefix,
            unmodelled,
            namespace,
            allow_l7=True,
            unsupported=unsupported,
        )
        deny[direction] = _parse_rules(
            spec.get(deny_field),
            f"{where}.{deny_field}",
            peer_prefix,
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
