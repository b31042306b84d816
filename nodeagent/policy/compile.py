"""NetworkPolicy (networking.k8s.io/v1) compiled to per-pod rule sets.

Kubernetes' semantics, in the order the compiler applies them:
- A policy selects the pods of its own namespace that match `spec.podSelector` (`{}` selects them all).
  Host-network pods and pods without an IP are never selected and never match a pod peer: their
  address is the node's, which only an `ipBlock` can match.
- `policyTypes` absent or empty defaults to Ingress, plus Egress when the policy has egress rules.
  A policy isolates its pods in each direction it lists; `ingress`/`egress` of an unlisted type are ignored.
- An isolated pod accepts a connection if any rule of any policy selecting it allows it (policies
  add up; there is no deny rule). An empty rule list allows nothing.
- A rule allows a connection when its peers and its ports both match. A missing or empty `from`/`to`
  matches every address; a peer with `podSelector` alone means pods of the policy's namespace, with
  `namespaceSelector` alone all pods of the matching namespaces, with both (one peer) the matching pods
  of the matching namespaces; separate peers are alternatives. `ipBlock` is a CIDR minus its `except`
  CIDRs and matches any address in it, pod addresses included.
- A missing or empty `ports` matches every port of every protocol. A port entry defaults to TCP; a port
  number with `endPort` is an inclusive range; a port name matches the destination pod's container
  port of that name and protocol (for ingress the selected pod, for egress the pod being reached; an
  address that is not a pod has no named ports); an entry with only a protocol matches all its ports.

The compiled form holds addresses as ints: pod peers as frozensets, ipBlocks as sorted disjoint
ranges, so that judging a connection costs a few set and bisect lookups per rule of the pods involved,
whatever the number of policies in the cluster.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from podnet.api.keys import object_key
from podnet.api.selectors import Selector, SelectorError, from_label_selector

from .evaluate import Evaluator
from .model import EGRESS, INGRESS, PROTOCOLS, TCP, Verdict, ip_to_int

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_PORT_MAX = 65535


class PolicyError(ValueError):
    """A NetworkPolicy that the API server's validation would have refused."""


# ---------------------------------------------------------------------------------------------------
# Address and port sets


@dataclass(frozen=True, slots=True)
class AddressSet:
    """Pod addresses as a frozenset of ints plus ipBlock ranges as two parallel sorted tuples of
    disjoint inclusive bounds; `everything` stands for a missing or empty peer list."""

    ips: frozenset[int] = frozenset()
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    everything: bool = False

    def __contains__(self, ip: int) -> bool:
        if self.everything or ip in self.ips:
            return True
        if self.starts:
            i = bisect_right(self.starts, ip) - 1
            return i >= 0 and ip <= self.ends[i]
        return False


EVERY_ADDRESS = AddressSet(everything=True)


def _cidr_range(cidr: str) -> tuple[int, int]:
    try:
        net = ipaddress.IPv4Network(cidr, strict=False)
    except ValueError as e:
        raise PolicyError(f"ipBlock: {cidr!r} is not an IPv4 CIDR") from e
    return int(net.network_address), int(net.broadcast_address)


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(ranges: list[tuple[int, int]], cut: tuple[int, int]) -> list[tuple[int, int]]:
    out = []
    for start, end in ranges:
        if cut[1] < start or cut[0] > end:
            out.append((start, end))
            continue
        if start < cut[0]:
            out.append((start, cut[0] - 1))
        if end > cut[1]:
            out.append((cut[1] + 1, end))
    return out


def ip_block_ranges(block: Mapping) -> list[tuple[int, int]]:
    """An ipBlock `{cidr, except}` as sorted disjoint inclusive ranges of ints."""
    if not isinstance(block, Mapping) or not isinstance(block.get("cidr"), str):
        raise PolicyError("ipBlock.cidr is required")
    ranges = [_cidr_range(block["cidr"])]
    for cut in block.get("except") or []:
        if not isinstance(cut, str):
            raise PolicyError("ipBlock.except must be a list of CIDRs")
        ranges = _subtract(ranges, _cidr_range(cut))
    return ranges


@dataclass(frozen=True, slots=True)
class PortSet:
    """The `ports` of one rule. `ranges` maps a protocol to sorted inclusive port ranges; `named` maps
    a protocol to port names, resolved against the destination pod when a connection is judged."""

    everything: bool = False
    ranges: Mapping[str, tuple[tuple[int, int], ...]] | None = None
    named: Mapping[str, tuple[str, ...]] | None = None

    def matches(self, protocol: str, port: int, dst_named_ports: Mapping[tuple[str, str], int]) -> bool:
        if self.everything:
            return True
        for start, end in self.ranges.get(protocol, ()):
            if start <= port <= end:
                return True
        for name in self.named.get(protocol, ()):
            if dst_named_ports.get((protocol, name)) == port:
                return True
        return False


EVERY_PORT = PortSet(everything=True)


def parse_ports(ports: list | None) -> PortSet:
    if not ports:
        return EVERY_PORT
    if not isinstance(ports, list):
        raise PolicyError("ports must be a list")
    ranges: dict[str, list[tuple[int, int]]] = {}
    named: dict[str, list[str]] = {}
    for i, entry in enumerate(ports):
        if not isinstance(entry, Mapping):
            raise PolicyError(f"ports[{i}] must be an object")
        protocol = entry.get("protocol") or TCP
        if protocol not in PROTOCOLS:
            raise PolicyError(f"ports[{i}].protocol: {protocol!r} is not one of TCP, UDP, SCTP")
        port, end_port = entry.get("port"), entry.get("endPort")
        if port is None:
            if end_port is not None:
                raise PolicyError(f"ports[{i}].endPort needs a port")
            ranges.setdefault(protocol, []).append((0, _PORT_MAX))
        elif isinstance(port, str):
            if end_port is not None:
                raise PolicyError(f"ports[{i}].endPort cannot be used with the named port {port!r}")
            named.setdefault(protocol, []).append(port)
        elif isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= _PORT_MAX:
            end = port if end_port is None else end_port
            if not isinstance(end, int) or isinstance(end, bool) or not port <= end <= _PORT_MAX:
                raise PolicyError(f"ports[{i}].endPort must be a port number not below port")
            ranges.setdefault(protocol, []).append((port, end))
        else:
            raise PolicyError(f"ports[{i}].port: {port!r} is neither a port number nor a port name")
    return PortSet(
        ranges={p: tuple(_merge(r)) for p, r in ranges.items()},
        named={p: tuple(dict.fromkeys(n)) for p, n in named.items()},
    )


# ---------------------------------------------------------------------------------------------------
# Policies as parsed (independent of the pods that exist)


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One entry of `from`/`to`: pods (by selectors) or an address range, never both."""

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ranges: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class RuleSpec:
    peers: tuple[PeerSpec, ...] | None  # None: every address
    ports: PortSet


@dataclass(frozen=True, slots=True)
class PolicySpec:
    key: str
    namespace: str
    pod_selector: Selector
    ingress: tuple[RuleSpec, ...] | None  # None: the policy does not isolate pods for ingress
    egress: tuple[RuleSpec, ...] | None


def _selector(value: object, where: str) -> Selector:
    try:
        return from_label_selector(value)
    except SelectorError as e:
        raise PolicyError(f"{where}: {e}") from e


def _parse_peer(peer: object, where: str) -> PeerSpec:
    if not isinstance(peer, Mapping):
        raise PolicyError(f"{where} must be an object")
    block = peer.get("ipBlock")
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if block is not None:
        if pods is not None or namespaces is not None:
            raise PolicyError(f"{where}: ipBlock cannot be combined with podSelector or namespaceSelector")
        return PeerSpec(ranges=tuple(ip_block_ranges(block)))
    if pods is None and namespaces is None:
        raise PolicyError(f"{where} must specify podSelector, namespaceSelector or ipBlock")
    return PeerSpec(
        pod_selector=None if pods is None else _selector(pods, f"{where}.podSelector"),
        namespace_selector=None
        if namespaces is None
        else _selector(namespaces, f"{where}.namespaceSelector"),
    )


def _parse_rules(rules: object, peers_field: str, where: str) -> tuple[RuleSpec, ...]:
    if rules is None:
        return ()
    if not isinstance(rules, list):
        raise PolicyError(f"{where} must be a list")
    parsed = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            raise PolicyError(f"{where}[{i}] must be an object")
        peers = rule.get(peers_field)
        if peers is not None and not isinstance(peers, list):
            raise PolicyError(f"{where}[{i}].{peers_field} must be a list")
        try:
            ports = parse_ports(rule.get("ports"))
        except PolicyError as e:
            raise PolicyError(f"{where}[{i}].{e}") from e
        parsed.append(
            RuleSpec(
                peers=tuple(_parse_peer(p, f"{where}[{i}].{peers_field}[{j}]") for j, p in enumerate(peers))
                if peers
                else None,
                ports=ports,
            )
        )
    return tuple(parsed)


def parse_policy(obj: Mapping) -> PolicySpec:
    """Validates and parses a NetworkPolicy dict; raises PolicyError."""
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name")
    if not name:
        raise PolicyError("metadata.name is required")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise PolicyError(f"{namespace}/{name}: spec is required")
    try:
        types = spec.get("policyTypes") or []
        if not isinstance(types, list) or any(t not in ("Ingress", "Egress") for t in types):
            raise PolicyError("policyTypes may hold only Ingress and Egress")
        if not types:
            # Kubernetes' defaulting: every policy isolates for ingress; for egress only when it has
            # egress rules (an absent or empty egress list does not make it an egress policy).
            types = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
        return PolicySpec(
            key=f"{namespace}/{name}",
            namespace=namespace,
            # A missing podSelector is `{}` after defaulting: every pod of the namespace.
            pod_selector=_selector(spec.get("podSelector") or {}, "podSelector"),
            ingress=_parse_rules(spec.get("ingress"), "from", "ingress") if "Ingress" in types else None,
            egress=_parse_rules(spec.get("egress"), "to", "egress") if "Egress" in types else None,
        )
    except PolicyError as e:
        raise PolicyError(f"{namespace}/{name}: {e}") from e


# ---------------------------------------------------------------------------------------------------
# Pods and namespaces as the compiler needs them


@dataclass(frozen=True, slots=True)
class PodInfo:
    key: str  # "namespace/name"
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: int
    ip_text: str
    node: str | None
    named_ports: Mapping[tuple[str, str], int]  # (protocol, port name) -> container port


def pod_info(obj: Mapping) -> PodInfo | None:
    """The policy-relevant part of a Pod, or None when policies neither select it nor see it as a pod:
    no IP yet, host network (its address is the node's), or finished."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ip_text = status.get("podIP") or next(
        (p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")), None
    )
    if not ip_text or spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    try:
        ip = ip_to_int(ip_text)
    except ValueError:
        return None
    named: dict[tuple[str, str], int] = {}
    # Restartable init containers (sidecars) serve for the pod's lifetime like its containers.
    containers = list(spec.get("containers") or []) + [
        c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
    ]
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") and isinstance(port.get("containerPort"), int):
                named.setdefault((port.get("protocol") or TCP, port["name"]), port["containerPort"])
    namespace = meta.get("namespace") or "default"
    return PodInfo(
        key=f"{namespace}/{meta.get('name')}",
        namespace=namespace,
        name=meta.get("name") or "",
        labels=dict(meta.get("labels") or {}),
        ip=ip,
        ip_text=ip_text,
        node=spec.get("nodeName"),
        named_ports=named,
    )


def namespace_labels(obj: Mapping) -> dict[str, str]:
    """A Namespace's labels, with the immutable name label the API server always sets."""
    meta = obj.get("metadata") or {}
    return {**(meta.get("labels") or {}), NAMESPACE_NAME_LABEL: meta.get("name") or ""}


# ---------------------------------------------------------------------------------------------------
# Compiled policies


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, ready to judge connections; `verdict` is what it answers when it allows one."""

    peers: AddressSet
    ports: PortSet
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    key: str
    selected: frozenset[str]  # pod keys
    ingress: tuple[Rule, ...] | None
    egress: tuple[Rule, ...] | None


class ClusterView:
    """Pods and namespace labels: what peer selectors are evaluated against."""

    def __init__(self) -> None:
        self.pods: dict[str, PodInfo] = {}
        self.pods_by_namespace: dict[str, dict[str, PodInfo]] = {}
        self.namespace_labels: dict[str, dict[str, str]] = {}

    def labels_of_namespace(self, namespace: str) -> Mapping[str, str]:
        labels = self.namespace_labels.get(namespace)
        return labels if labels is not None else {NAMESPACE_NAME_LABEL: namespace}

    def put_pod(self, key: str, info: PodInfo | None) -> None:
        old = self.pods.pop(key, None)
        if old is not None:
            self.pods_by_namespace[old.namespace].pop(key, None)
        if info is not None:
            self.pods[key] = info
            self.pods_by_namespace.setdefault(info.namespace, {})[key] = info

    def peer_pods(self, peer: PeerSpec, policy_namespace: str) -> Iterable[PodInfo]:
        if peer.namespace_selector is None:
            candidates = self.pods_by_namespace.get(policy_namespace, {}).values()
        else:
            candidates = (
                pod
                for ns, pods in self.pods_by_namespace.items()
                if peer.namespace_selector.matches(self.labels_of_namespace(ns))
                for pod in pods.values()
            )
        if peer.pod_selector is None or peer.pod_selector.empty:
            return candidates
        return (pod for pod in candidates if peer.pod_selector.matches(pod.labels))

    def peer_matches_pod(self, peer: PeerSpec, policy_namespace: str, pod: PodInfo) -> bool:
        if peer.ranges is not None:
            return False
        if peer.namespace_selector is None:
            if pod.namespace != policy_namespace:
                return False
        elif not peer.namespace_selector.matches(self.labels_of_namespace(pod.namespace)):
            return False
        return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)


def _compile_rule(spec: PolicySpec, rule: RuleSpec, index: int, direction: str, view: ClusterView) -> Rule:
    verdict = Verdict(
        allowed=True,
        reason=f"allowed by {spec.key} {direction} rule {index}",
        policy=spec.key,
        rule_index=index,
        direction=direction,
    )
    if rule.peers is None:
        return Rule(EVERY_ADDRESS, rule.ports, verdict)
    ips: set[int] = set()
    ranges: list[tuple[int, int]] = []
    for peer in rule.peers:
        if peer.ranges is not None:
            ranges.extend(peer.ranges)
        else:
            ips.update(pod.ip for pod in view.peer_pods(peer, spec.namespace))
    merged = _merge(ranges)
    peers = AddressSet(frozenset(ips), tuple(s for s, _ in merged), tuple(e for _, e in merged))
    return Rule(peers, rule.ports, verdict)


def compile_policy(spec: PolicySpec, view: ClusterView) -> CompiledPolicy:
    selected = frozenset(
        key
        for key, pod in view.pods_by_namespace.get(spec.namespace, {}).items()
        if spec.pod_selector.matches(pod.labels)
    )

    def rules(specs: tuple[RuleSpec, ...] | None, direction: str) -> tuple[Rule, ...] | None:
        if specs is None:
            return None
        return tuple(_compile_rule(spec, r, i, direction, view) for i, r in enumerate(specs))

    return CompiledPolicy(spec.key, selected, rules(spec.ingress, INGRESS), rules(spec.egress, EGRESS))


def repatch_pod(
    compiled: CompiledPolicy, spec: PolicySpec, old: PodInfo | None, new: PodInfo | None, view: ClusterView
) -> CompiledPolicy:
    """The compiled policy with one pod's old version taken out of its selection and peer sets and its
    new version put in: the same result as compiling again, without evaluating every pod's labels."""
    selected = compiled.selected
    if old is not None:
        selected = selected - {old.key}
    if new is not None and new.namespace == spec.namespace and spec.pod_selector.matches(new.labels):
        selected = selected | {new.key}

    def rules(
        compiled_rules: tuple[Rule, ...] | None, specs: tuple[RuleSpec, ...] | None
    ) -> tuple[Rule, ...] | None:
        if compiled_rules is None or specs is None:
            return compiled_rules
        patched = []
        for rule, rule_spec in zip(compiled_rules, specs, strict=True):
            ips = rule.peers.ips
            if rule_spec.peers is not None:
                if old is not None:
                    ips = ips - {old.ip}
                if new is not None and any(
                    view.peer_matches_pod(p, spec.namespace, new) for p in rule_spec.peers
                ):
                    ips = ips | {new.ip}
            patched.append(
                rule if ips == rule.peers.ips else replace(rule, peers=replace(rule.peers, ips=ips))
            )
        return tuple(patched)

    return CompiledPolicy(
        compiled.key, selected, rules(compiled.ingress, spec.ingress), rules(compiled.egress, spec.egress)
    )


def _policy_sees_pod(spec: PolicySpec, pod: PodInfo, view: ClusterView) -> bool:
    """Whether the pod's presence, labels or address can change what the compiled policy holds."""
    if pod.namespace == spec.namespace and spec.pod_selector.matches(pod.labels):
        return True
    for rules in (spec.ingress or (), spec.egress or ()):
        for rule in rules:
            for peer in rule.peers or ():
                if view.peer_matches_pod(peer, spec.namespace, pod):
                    return True
    return False


def _policy_sees_namespace(spec: PolicySpec, labels: Mapping[str, str]) -> bool:
    return any(
        peer.namespace_selector is not None and peer.namespace_selector.matches(labels)
        for rules in (spec.ingress or (), spec.egress or ())
        for rule in rules
        for peer in rule.peers or ()
    )


# ---------------------------------------------------------------------------------------------------
# The incremental compiler


class PolicyCompiler:
    """Keeps Pods, Namespaces and NetworkPolicies (plain Kubernetes dicts, as informers deliver them)
    and their compiled form current. A policy change recompiles that policy; a pod change patches the
    selection and peer sets of the policies that select or name it; a namespace label change recompiles
    the policies whose namespace selectors match it. `evaluator()` returns an immutable snapshot,
    rebuilt on first use after a change; `verdict` is the pipeline's hook and always judges by the
    latest objects, so new connections see new rules at once.

    With `node_name`, only pods bound to that node get rule sets (a node agent judges its own pods:
    egress at the source node, ingress at the destination node); peers are still every pod."""

    # What each kind's watch events do: (method for a new version, method for a deletion by key).
    _KINDS = {
        "Pod": ("set_pod", "remove_pod"),
        "Namespace": ("set_namespace", "remove_namespace"),
        "NetworkPolicy": ("set_policy", "remove_policy"),
    }

    def __init__(self, *, node_name: str | None = None) -> None:
        self.node_name = node_name
        self.errors: dict[str, str] = {}  # policy key -> why it is not enforced
        self._view = ClusterView()
        self._specs: dict[str, PolicySpec] = {}
        self._compiled: dict[str, CompiledPolicy] = {}
        self._evaluator: Evaluator | None = None

    # -- objects in

    def set_policy(self, obj: Mapping) -> None:
        key = object_key(obj)
        try:
            spec = parse_policy(obj)
        except PolicyError as e:
            # The API server refuses such objects; one that slips through is reported, not enforced.
            self.errors[key] = str(e)
            self.remove_policy(key)
            return
        self.errors.pop(key, None)
        self._specs[key] = spec
        self._compiled[key] = compile_policy(spec, self._view)
        self._evaluator = None

    def remove_policy(self, key: str) -> None:
        self._specs.pop(key, None)
        if self._compiled.pop(key, None) is not None:
            self._evaluator = None

    def set_pod(self, obj: Mapping) -> None:
        key = object_key(obj)
        new = pod_info(obj)
        old = self._view.pods.get(key)
        if old == new:
            return
        # Policies that saw the old pod must forget it, those that see the new one must learn it.
        touched = {
            k
            for k, spec in self._specs.items()
            if old is not None and _policy_sees_pod(spec, old, self._view)
        }
        self._view.put_pod(key, new)
        if new is not None:
            touched |= {k for k, spec in self._specs.items() if _policy_sees_pod(spec, new, self._view)}
        for k in touched:
            self._compiled[k] = repatch_pod(self._compiled[k], self._specs[k], old, new, self._view)
        self._evaluator = None

    def remove_pod(self, key: str) -> None:
        self.set_pod({"metadata": dict(zip(("namespace", "name"), key.split("/", 1), strict=True))})

    def set_namespace(self, obj: Mapping) -> None:
        name = object_key(obj)
        self._put_namespace(name, namespace_labels(obj))

    def remove_namespace(self, name: str) -> None:
        self._put_namespace(name, None)

    def _put_namespace(self, name: str, labels: dict[str, str] | None) -> None:
        old = self._view.labels_of_namespace(name)
        if labels is None:
            self._view.namespace_labels.pop(name, None)
        else:
            self._view.namespace_labels[name] = labels
        new = self._view.labels_of_namespace(name)
        if old == new:
            return
        for k, spec in self._specs.items():
            if _policy_sees_namespace(spec, old) or _policy_sees_namespace(spec, new):
                self._compiled[k] = compile_policy(spec, self._view)
        self._evaluator = None

    def apply(self, event_type: str, obj: Mapping, *, kind: str | None = None) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) for a Pod, Namespace or NetworkPolicy; `kind`
        names the kind when the object does not (items of a list carry no kind)."""
        kind = kind or obj.get("kind")
        if kind not in self._KINDS:
            raise ValueError(f"the policy compiler does not take {kind!r} objects")
        set_object, remove_object = self._KINDS[kind]
        if event_type == "DELETED":
            getattr(self, remove_object)(object_key(obj))
        else:
            getattr(self, set_object)(obj)

    def handler(self, kind: str) -> Callable[[str, Mapping | None, Mapping | None], None]:
        """An informer handler `(event_type, old, new)` for one kind: Pod, Namespace or NetworkPolicy."""
        if kind not in self._KINDS:
            raise ValueError(f"the policy compiler does not take {kind!r} objects")

        def handle(event_type: str, old: Mapping | None, new: Mapping | None) -> None:
            self.apply(event_type, new if new is not None else old, kind=kind)

        return handle

    # -- verdicts out

    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = Evaluator(
                self._view.pods.values(), self._compiled.values(), node_name=self.node_name
            )
        return self._evaluator

    def verdict(self, direction: str, flow: object) -> Verdict:
        return self.evaluator().verdict(direction, flow)


def compile_objects(objects: Iterable[Mapping], *, node_name: str | None = None) -> PolicyCompiler:
    """A compiler fed with a list of Namespaces, Pods and NetworkPolicies (any order)."""
    compiler = PolicyCompiler(node_name=node_name)
    order = {"Namespace": 0, "Pod": 1, "NetworkPolicy": 2}
    for obj in sorted(objects, key=lambda o: order.get(o.get("kind"), 3)):
        compiler.apply("ADDED", obj)
    return compiler
