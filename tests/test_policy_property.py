"""Random policies over the e2e model: the compiled evaluator agrees with a plain reading of the API
documentation, applied straight to the objects, and incremental compilation agrees with compiling
from scratch."""

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from podnet.nodeagent.policy.compile import PolicyCompiler, compile_objects
from podnet.nodeagent.policy.matrix import explain
from support.netpol_model import ADDRESSES, NAMESPACES, PODS, namespaces, pods, policy

PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP", "SCTP")

# --- a plain reading of the API, one connection at a time ------------------------------------------


def selector_matches(selector, labels):
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(spec):
    return spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])


def peer_matches(peer, policy_ns, who, world):
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(world["ips"][who])
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"], strict=False) and not any(
            ip in ipaddress.ip_network(cut, strict=False) for cut in block.get("except") or []
        )
    ns = who.split("/")[0]
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], world["ns_labels"][ns]):
            return False
    elif ns != policy_ns:
        return False
    return "podSelector" not in peer or selector_matches(peer["podSelector"], world["labels"][who])


def port_matches(ports, protocol, port, dst):
    if not ports:
        return True
    for entry in ports:
        if (entry.get("protocol") or "TCP") != protocol:
            continue
        want = entry.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            # The model's pods name their ports serve-<port>-<protocol>.
            if (
                dst in PODS
                and want == f"serve-{port}-{protocol.lower()}"
                and port in PORTS
                and protocol != "SCTP"
            ):
                return True
        elif want <= port <= entry.get("endPort", want):
            return True
    return False


def direction_allows(direction, subject, peer, dst, protocol, port, world):
    ns = subject.split("/")[0]
    rules_field, peers_field = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in world["policies"]
        if p["metadata"]["namespace"] == ns
        and selector_matches(p["spec"].get("podSelector") or {}, world["labels"][subject])
        and direction in policy_types(p["spec"])
    ]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get(rules_field) or []:
            peers = rule.get(peers_field)
            if (not peers or any(peer_matches(x, ns, peer, world) for x in peers)) and port_matches(
                rule.get("ports"), protocol, port, dst
            ):
                return True
    return False


def reference_allowed(src, dst, protocol, port, world):
    return direction_allows("Egress", src, dst, dst, protocol, port, world) and direction_allows(
        "Ingress", dst, src, dst, protocol, port, world
    )


# --- random policies --------------------------------------------------------------------------------

label_key = st.sampled_from(["pod", "ns", "tier"])
label_value = st.sampled_from(["a", "b", "c", "x", "y", "z"])
expression = st.one_of(
    st.fixed_dictionaries(
        {
            "key": label_key,
            "operator": st.sampled_from(["In", "NotIn"]),
            "values": st.lists(label_value, min_size=1, max_size=2, unique=True),
        }
    ),
    st.fixed_dictionaries({"key": label_key, "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
)
selector = st.one_of(
    st.just({}),
    st.builds(lambda k, v: {"matchLabels": {k: v}}, label_key, label_value),
    st.builds(lambda e: {"matchExpressions": e}, st.lists(expression, min_size=1, max_size=2)),
)
host = st.sampled_from(PODS).map(lambda key: f"{ADDRESSES[key]}/32")
ip_block = st.one_of(
    st.builds(
        lambda cidr: {"cidr": cidr}, st.one_of(host, st.sampled_from(["10.244.0.0/16", "10.244.2.0/24"]))
    ),
    st.builds(
        lambda cidr, cuts: {"cidr": cidr, "except": cuts},
        st.sampled_from(["10.244.0.0/16", "0.0.0.0/4"]),
        st.lists(st.one_of(host, st.just("10.244.1.0/24")), min_size=1, max_size=2),
    ),
)
peer = st.one_of(
    st.builds(lambda s: {"podSelector": s}, selector),
    st.builds(lambda s: {"namespaceSelector": s}, selector),
    st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, selector, selector),
    st.builds(lambda b: {"ipBlock": b}, ip_block),
)
port_entry = st.one_of(
    st.builds(lambda p: {"port": p}, st.sampled_from([80, 81])),
    st.builds(
        lambda p, proto: {"port": p, "protocol": proto}, st.sampled_from([80, 81]), st.sampled_from(PROTOCOLS)
    ),
    st.builds(lambda p: {"port": p, "endPort": p + 1}, st.sampled_from([79, 80, 81])),
    st.builds(
        lambda name, proto: {"port": name, **({"protocol": proto} if proto else {})},
        st.sampled_from(["serve-80-tcp", "serve-81-udp", "serve-81-tcp", "nope"]),
        st.sampled_from([None, "TCP", "UDP"]),
    ),
    st.builds(lambda proto: {"protocol": proto}, st.sampled_from(PROTOCOLS)),
)


def rules(peers_field):
    return st.lists(
        st.builds(
            lambda peers, ports: {
                **({} if peers is None else {peers_field: peers}),
                **({} if ports is None else {"ports": ports}),
            },
            st.one_of(st.none(), st.lists(peer, max_size=2)),
            st.one_of(st.none(), st.lists(port_entry, max_size=2)),
        ),
        max_size=2,
    )


policy_spec = st.builds(
    lambda pod_selector, ingress, egress, types: {
        "podSelector": pod_selector,
        **({} if ingress is None else {"ingress": ingress}),
        **({} if egress is None else {"egress": egress}),
        **({} if types is None else {"policyTypes": types}),
    },
    selector,
    st.one_of(st.none(), rules("from")),
    st.one_of(st.none(), rules("to")),
    st.one_of(st.none(), st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]])),
)
policies = st.lists(st.tuples(st.sampled_from(NAMESPACES), policy_spec), max_size=4).map(
    lambda specs: [policy(ns, f"p{i}", spec) for i, (ns, spec) in enumerate(specs)]
)
relabels = st.dictionaries(st.sampled_from(PODS), st.fixed_dictionaries({"tier": label_value}), max_size=3)


def world_of(objects):
    return {
        "ips": dict(ADDRESSES),
        "labels": {
            f"{o['metadata']['namespace']}/{o['metadata']['name']}": o["metadata"]["labels"]
            for o in objects
            if o["kind"] == "Pod"
        },
        "ns_labels": {
            o["metadata"]["name"]: o["metadata"]["labels"] for o in objects if o["kind"] == "Namespace"
        },
        "policies": [o for o in objects if o["kind"] == "NetworkPolicy"],
    }


def model_objects(netpols, extra_labels):
    the_pods = pods(ADDRESSES)
    for pod in the_pods:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        pod["metadata"]["labels"].update(extra_labels.get(key, {}))
    return [*namespaces(), *the_pods, *netpols]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies, relabels)
def test_evaluator_agrees_with_the_api_reading(netpols, extra_labels):
    objects = model_objects(netpols, extra_labels)
    compiler = compile_objects(objects)
    assert compiler.errors == {}
    evaluator, world = compiler.evaluator(), world_of(objects)
    for src in PODS:
        for dst in PODS:
            for protocol in PROTOCOLS:
                for port in PORTS:
                    got = explain(evaluator, src, dst, port, protocol)
                    assert got.allowed == reference_allowed(src, dst, protocol, port, world), got.text()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies, relabels, st.randoms(use_true_random=False))
def test_incremental_compilation_agrees_with_compiling_from_scratch(netpols, extra_labels, rnd):
    final = model_objects(netpols, extra_labels)
    start = model_objects(netpols, {})  # pods begin with their plain labels and are relabelled later
    events = [("ADDED", o) for o in start]
    rnd.shuffle(events)
    events += [("MODIFIED", o) for o in final if o["kind"] == "Pod"]
    compiler = PolicyCompiler()
    for event_type, obj in events:
        compiler.apply(event_type, obj)
    incremental, scratch = compiler.evaluator(), compile_objects(final).evaluator()
    for src in PODS:
        for dst in PODS:
            for protocol in ("TCP", "UDP"):
                a, b = explain(incremental, src, dst, 80, protocol), explain(scratch, src, dst, 80, protocol)
                assert (a.egress, a.ingress) == (b.egress, b.ingress)
