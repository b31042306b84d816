"""NetworkPolicy semantics, the compiler's incremental updates and the evaluator's hook contract."""

import ipaddress

import pytest
from podnet.nodeagent.policy.compile import (
    PolicyCompiler,
    PolicyError,
    compile_objects,
    ip_block_ranges,
    parse_policy,
    parse_ports,
)
from podnet.nodeagent.policy.model import EGRESS, INGRESS, Flow, Verdict, ip_to_int


def namespace(name, **labels):
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(ns, name, ip, labels=None, ports=(), node=None, host_network=False):
    spec = {"containers": [{"name": "c", "ports": [dict(p) for p in ports]}]}
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    return {
        "kind": "Pod",
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": labels if labels is not None else {"app": name},
        },
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip},
    }


def netpol(ns, name, **spec):
    spec.setdefault("podSelector", {})
    return {"kind": "NetworkPolicy", "metadata": {"namespace": ns, "name": name}, "spec": spec}


def tcp(src, dst, port, protocol="TCP"):
    return Flow(protocol, src, 40000, dst, port)


def allowed(judge, direction, src, dst, port, protocol="TCP"):
    return judge.verdict(direction, tcp(src, dst, port, protocol)).allowed


# --- parsing and defaulting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ingress", "egress"),
    [
        ({}, True, False),
        ({"ingress": [{}]}, True, False),
        ({"egress": []}, True, False),  # an empty egress list does not make an egress policy
        ({"egress": [{}]}, True, True),
        ({"policyTypes": ["Egress"], "ingress": [{}]}, False, True),
        ({"policyTypes": ["Ingress", "Egress"]}, True, True),
    ],
)
def test_policy_types_defaulting(spec, ingress, egress):
    parsed = parse_policy(netpol("x", "p", **spec))
    assert (parsed.ingress is not None, parsed.egress is not None) == (ingress, egress)


@pytest.mark.parametrize(
    "spec",
    [
        {"ingress": [{"from": [{}]}]},
        {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
        {"ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]},
        {"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]},
        {"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
        {"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
        {"ingress": [{"ports": [{"endPort": 80}]}]},
        {"ingress": [{"ports": [{"port": 0}]}]},
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
        {"policyTypes": ["Sideways"]},
    ],
)
def test_invalid_policies_are_refused(spec):
    with pytest.raises(PolicyError):
        parse_policy(netpol("x", "bad", **spec))


def test_invalid_policy_is_reported_and_not_enforced():
    compiler = compile_objects(
        [pod("x", "a", "10.0.0.1"), netpol("x", "bad", ingress=[{"from": [{}]}]), netpol("x", "deny")]
    )
    assert set(compiler.errors) == {"x/bad"}
    assert "from[0] must specify" in compiler.errors["x/bad"]
    # The valid policy still isolates the pod; fixing the bad one clears its error.
    assert not allowed(compiler, INGRESS, "10.0.0.9", "10.0.0.1", 80)
    compiler.set_policy(netpol("x", "bad", ingress=[{}]))
    assert compiler.errors == {}
    assert allowed(compiler, INGRESS, "10.0.0.9", "10.0.0.1", 80)


def test_ip_block_except_ranges():
    ranges = ip_block_ranges(
        {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/26", "10.0.0.128/32", "10.1.0.0/16"]}
    )
    as_text = [(str(ipaddress.IPv4Address(s)), str(ipaddress.IPv4Address(e))) for s, e in ranges]
    assert as_text == [("10.0.0.64", "10.0.0.127"), ("10.0.0.129", "10.0.0.255")]
    # A CIDR with host bits set names its network, as Kubernetes' parser does.
    assert ip_block_ranges({"cidr": "10.244.1.10/4"}) == [(0, ip_to_int("15.255.255.255"))]


def test_ports_default_to_tcp_and_merge_ranges():
    ports = parse_ports(
        [{"port": 80}, {"port": 81, "endPort": 85}, {"protocol": "UDP"}, {"port": "dns", "protocol": "UDP"}]
    )
    assert ports.ranges == {"TCP": ((80, 85),), "UDP": ((0, 65535),)}
    assert ports.named == {"UDP": ("dns",)}
    assert (
        ports.matches("TCP", 85, {})
        and not ports.matches("TCP", 86, {})
        and not ports.matches("SCTP", 80, {})
    )
    # An entry with neither port nor protocol is all TCP ports, not all traffic.
    only_tcp = parse_ports([{}])
    assert only_tcp.matches("TCP", 1, {}) and not only_tcp.matches("UDP", 53, {})


# --- semantics ---------------------------------------------------------------------------------------


def small_cluster(*policies, **kw):
    return compile_objects(
        [
            namespace("x", team="red"),
            namespace("y", team="blue"),
            pod("x", "web", "10.0.1.1", {"app": "web"}, ports=[{"name": "http", "containerPort": 8080}]),
            pod("x", "api", "10.0.1.2", {"app": "api"}, ports=[{"name": "http", "containerPort": 9090}]),
            pod("y", "web", "10.0.2.1", {"app": "web"}, ports=[{"name": "http", "containerPort": 7070}]),
            pod(
                "y",
                "db",
                "10.0.2.2",
                {"app": "db"},
                ports=[{"name": "sql", "containerPort": 5432, "protocol": "TCP"}],
            ),
            *policies,
        ],
        **kw,
    )


def test_named_port_resolves_per_destination_pod():
    compiler = small_cluster(netpol("x", "http-only", ingress=[{"ports": [{"port": "http"}]}]))
    # x/web serves http on 8080, x/api on 9090: one rule, a different number for each selected pod.
    assert allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.1", 8080)
    assert not allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.1", 9090)
    assert allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.2", 9090)
    assert not allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.2", 8080)


def test_egress_named_port_resolves_by_the_pod_reached():
    compiler = small_cluster(
        netpol("x", "out-http", policyTypes=["Egress"], egress=[{"ports": [{"port": "http"}]}])
    )
    assert allowed(compiler, EGRESS, "10.0.1.1", "10.0.2.1", 7070)
    assert not allowed(compiler, EGRESS, "10.0.1.1", "10.0.2.1", 8080)
    assert allowed(compiler, EGRESS, "10.0.1.1", "10.0.1.2", 9090)
    # y/db has no port named http; an address outside the cluster has no named ports at all.
    assert not allowed(compiler, EGRESS, "10.0.1.1", "10.0.2.2", 5432)
    assert not allowed(compiler, EGRESS, "10.0.1.1", "192.0.2.1", 7070)


def test_ip_block_matches_pods_and_other_addresses_while_selectors_match_only_pods():
    compiler = compile_objects(
        [
            pod("x", "a", "10.0.1.1"),
            pod("x", "b", "10.0.1.2"),
            pod("kube-system", "agent", "127.0.0.11", host_network=True),
            netpol(
                "x",
                "everyone-but-hosts",
                podSelector={"matchLabels": {"app": "a"}},
                ingress=[{"from": [{"namespaceSelector": {}}]}],
            ),
        ]
    )
    assert allowed(compiler, INGRESS, "10.0.1.2", "10.0.1.1", 80)
    # A host-network pod's address is the node's: no pod selector matches it, and it is not selected.
    assert not allowed(compiler, INGRESS, "127.0.0.11", "10.0.1.1", 80)
    verdict = compiler.verdict(INGRESS, tcp("10.0.1.1", "127.0.0.11", 80))
    assert verdict.allowed and verdict.reason == "allowed: not a pod"
    compiler.set_policy(
        netpol(
            "x",
            "hosts",
            podSelector={"matchLabels": {"app": "a"}},
            ingress=[{"from": [{"ipBlock": {"cidr": "127.0.0.0/8"}}]}],
        )
    )
    assert compiler.verdict(INGRESS, tcp("127.0.0.11", "10.0.1.1", 80)) == Verdict(
        allowed=True,
        reason="allowed by x/hosts ingress rule 0",
        policy="x/hosts",
        rule_index=0,
        direction=INGRESS,
    )


def test_namespace_without_object_still_has_its_name_label():
    compiler = compile_objects(
        [
            pod("x", "a", "10.0.1.1"),
            pod("q", "client", "10.0.9.1"),
            netpol(
                "x",
                "from-q",
                ingress=[
                    {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "q"}}}]}
                ],
            ),
        ]
    )
    assert allowed(compiler, INGRESS, "10.0.9.1", "10.0.1.1", 80)


def test_reasons_name_policies_and_rule_indexes():
    compiler = small_cluster(
        netpol(
            "x",
            "p2",
            ingress=[{"ports": [{"port": 1}]}, {"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}],
        ),
        netpol("x", "p1", ingress=[{"ports": [{"port": 2}]}]),
    )
    assert compiler.verdict(INGRESS, tcp("10.0.1.2", "10.0.1.1", 80)) == Verdict(
        allowed=True, reason="allowed by x/p2 ingress rule 1", policy="x/p2", rule_index=1, direction=INGRESS
    )
    denied = compiler.verdict(INGRESS, tcp("10.0.2.1", "10.0.1.1", 80))
    assert denied == Verdict(
        allowed=False, reason="denied: selected by x/p1, x/p2 and no rule matched", direction=INGRESS
    )
    unselected = compiler.verdict(INGRESS, tcp("10.0.1.1", "10.0.2.1", 80))
    assert unselected.allowed and unselected.reason == "allowed: no policy selects the pod"
    assert unselected.policy is None and unselected.rule_index is None


def test_other_protocols_only_match_rules_without_ports():
    compiler = small_cluster(
        netpol("x", "web-tcp", ingress=[{"ports": [{"port": 80}]}]),
        netpol("x", "from-api", ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}]),
    )
    assert not allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.1", 0, protocol="ICMP")
    assert allowed(compiler, INGRESS, "10.0.1.2", "10.0.1.1", 0, protocol="ICMP")


def test_hook_accepts_protocol_numbers_and_integer_addresses():
    compiler = small_cluster(netpol("x", "udp-53", ingress=[{"ports": [{"port": 53, "protocol": "UDP"}]}]))
    assert compiler.verdict(INGRESS, Flow(17, ip_to_int("10.0.2.1"), 5000, ip_to_int("10.0.1.1"), 53)).allowed
    assert not compiler.verdict(INGRESS, Flow(6, "10.0.2.1", 5000, b"\x0a\x00\x01\x01", 53)).allowed
    with pytest.raises(ValueError):
        compiler.verdict("sideways", tcp("10.0.2.1", "10.0.1.1", 53))


def test_node_agent_judges_only_its_own_pods():
    objects = [
        pod("x", "here", "10.0.1.1", node="node-1"),
        pod("x", "there", "10.0.2.1", node="node-2"),
        netpol("x", "deny-all", policyTypes=["Ingress", "Egress"]),
    ]
    node1 = compile_objects(objects, node_name="node-1")
    assert not allowed(node1, INGRESS, "10.0.2.1", "10.0.1.1", 80)
    assert not allowed(node1, EGRESS, "10.0.1.1", "10.0.2.1", 80)
    # node-2's pod is judged on node-2: here its ingress is not this node's business.
    verdict = node1.verdict(INGRESS, tcp("10.0.1.1", "10.0.2.1", 80))
    assert verdict.allowed and verdict.reason == "allowed: not a pod of node node-1"


def test_a_pod_reached_is_judged_only_by_policies_selecting_it():
    """The per-connection work is the rules of the pods involved, not all rules in the cluster."""
    unrelated = [
        netpol("y", f"p{i}", podSelector={"matchLabels": {"app": "db"}}, ingress=[{}]) for i in range(50)
    ]
    compiler = small_cluster(netpol("x", "web", podSelector={"matchLabels": {"app": "web"}}), *unrelated)
    subjects = compiler.evaluator()._subjects
    assert len(subjects[ip_to_int("10.0.1.1")].ingress) == 0
    assert len(subjects[ip_to_int("10.0.2.2")].ingress) == 50
    assert ip_to_int("10.0.1.2") not in subjects


# --- incremental updates -----------------------------------------------------------------------------


def test_new_connections_see_policy_changes_at_once():
    compiler = small_cluster()
    hook = compiler.verdict  # what the node agent hands the pipeline, once
    flow = tcp("10.0.2.1", "10.0.1.1", 80)
    assert hook(INGRESS, flow).allowed
    compiler.set_policy(netpol("x", "deny"))
    assert not hook(INGRESS, flow).allowed
    compiler.set_policy(
        netpol("x", "deny", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}])
    )
    assert hook(INGRESS, flow).allowed
    compiler.remove_policy("x/deny")
    assert hook(INGRESS, flow).reason == "allowed: no policy selects the pod"


def web_from_api():
    return netpol(
        "x",
        "web-from-api",
        podSelector={"matchLabels": {"app": "web"}},
        ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}],
    )


def test_pod_label_change_moves_it_in_and_out_of_peer_sets_and_selection():
    compiler = small_cluster(web_from_api())
    assert allowed(compiler, INGRESS, "10.0.1.2", "10.0.1.1", 80)
    compiler.set_pod(pod("x", "api", "10.0.1.2", {"app": "batch"}))
    assert not allowed(compiler, INGRESS, "10.0.1.2", "10.0.1.1", 80)
    # Relabelled to web, the pod is now selected itself.
    compiler.set_pod(pod("x", "api", "10.0.1.2", {"app": "web"}))
    assert not allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.2", 80)
    compiler.remove_pod("x/api")
    assert compiler.verdict(INGRESS, tcp("10.0.2.1", "10.0.1.2", 80)).reason == "allowed: not a pod"


def test_pod_address_change_follows_the_pod():
    compiler = small_cluster(web_from_api())
    compiler.set_pod(pod("x", "api", "10.0.1.99", {"app": "api"}))
    assert allowed(compiler, INGRESS, "10.0.1.99", "10.0.1.1", 80)
    assert not allowed(compiler, INGRESS, "10.0.1.2", "10.0.1.1", 80)


def test_namespace_label_change_updates_namespace_selectors():
    compiler = small_cluster(
        netpol(
            "x", "from-green", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "green"}}}]}]
        )
    )
    assert not allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.1", 80)
    compiler.set_namespace(namespace("y", team="green"))
    assert allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.1", 80)
    compiler.remove_namespace("y")
    assert not allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.1", 80)


def test_incremental_result_equals_compiling_from_scratch():
    final = [
        namespace("x", team="red"),
        namespace("y", team="green"),
        pod("x", "web", "10.0.1.1", {"app": "web"}),
        pod("y", "db", "10.0.2.2", {"app": "db", "tier": "data"}),
        netpol(
            "x",
            "p",
            ingress=[
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "green"}},
                            "podSelector": {"matchLabels": {"tier": "data"}},
                        }
                    ]
                }
            ],
        ),
        netpol(
            "y", "q", policyTypes=["Egress"], egress=[{"to": [{"podSelector": {}, "namespaceSelector": {}}]}]
        ),
    ]
    compiler = PolicyCompiler()
    for obj in final[:2] + final[4:] + final[2:4]:  # policies before the pods they select and name
        compiler.apply("ADDED", obj)
    compiler.apply("ADDED", pod("x", "gone", "10.0.1.7"))
    compiler.apply("DELETED", pod("x", "gone", "10.0.1.7"))
    scratch = compile_objects(final)
    for src in ("10.0.1.1", "10.0.2.2", "10.0.1.7"):
        for dst in ("10.0.1.1", "10.0.2.2"):
            for direction in (INGRESS, EGRESS):
                flow = tcp(src, dst, 80)
                assert compiler.verdict(direction, flow) == scratch.verdict(direction, flow), (
                    src,
                    dst,
                    direction,
                )


def test_unchanged_objects_keep_the_evaluator():
    compiler = small_cluster(netpol("x", "deny"))
    evaluator = compiler.evaluator()
    compiler.set_pod(
        pod("x", "web", "10.0.1.1", {"app": "web"}, ports=[{"name": "http", "containerPort": 8080}])
    )
    assert compiler.evaluator() is evaluator
    compiler.set_namespace(namespace("x", team="red"))
    assert compiler.evaluator() is evaluator


def test_apply_refuses_other_kinds():
    with pytest.raises(ValueError):
        PolicyCompiler().apply("ADDED", {"kind": "Service", "metadata": {"name": "s"}})


def test_hook_takes_the_pipelines_own_flow_and_direction():
    from podnet.overlay.pipeline.policyhook import Flow as PipelineFlow
    from podnet.overlay.pipeline.policyhook import PolicyDirection

    compiler = small_cluster(netpol("x", "web-only", ingress=[{"ports": [{"port": 8080}]}]))
    hook = compiler.verdict
    assert hook(PolicyDirection.INGRESS, PipelineFlow("TCP", "10.0.2.1", 40000, "10.0.1.1", 8080)).allowed
    denied = hook(PolicyDirection.INGRESS, PipelineFlow("ICMP", "10.0.2.1", 7, "10.0.1.1", 0))
    assert not denied.allowed and denied.reason == "denied: selected by x/web-only and no rule matched"
    assert hook(PolicyDirection.EGRESS, PipelineFlow("UDP", "10.0.1.1", 40000, "10.0.2.1", 53)).allowed


def test_informer_handlers_take_list_items_without_kind():
    compiler = PolicyCompiler()
    on_pod, on_policy = compiler.handler("Pod"), compiler.handler("NetworkPolicy")
    web = pod("x", "web", "10.0.1.1")
    del web["kind"]
    deny = netpol("x", "deny")
    del deny["kind"]
    on_pod("ADDED", None, web)
    on_policy("ADDED", None, deny)
    assert not allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.1", 80)
    on_policy("DELETED", deny, None)
    assert allowed(compiler, INGRESS, "10.0.2.1", "10.0.1.1", 80)
    with pytest.raises(ValueError):
        compiler.handler("Service")
