"""The Kubernetes e2e network-policy model as data: namespaces x, y, z, pods a, b, c in each, every pod
serving TCP and UDP on 80 and 81, and the policy cases with their expected truth tables.

Plain data and builders, no fixtures: the static tests compile these objects, and an end-to-end test
can apply the very same objects to a live cluster and compare its probed matrix with the same tables.

The cases follow `test/e2e/network/netpol/network_policy.go` of kubernetes/kubernetes (policy names
are the e2e's where the e2e has the case). The e2e probes one port and protocol per step; every case
here also states what happens on the other port and protocol. Tables are written as the e2e prints
them: rows from, columns to, "." reachable, "X" not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from podnet.nodeagent.policy.render import TruthTable, parse_table

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PODS = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in POD_NAMES)
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")
COMBINATIONS = tuple((port, protocol) for port in PORTS for protocol in PROTOCOLS)

# Pod a on node-1, b on node-2, c on node-3 (each node a /24 of 10.244.0.0/16); x, y, z pick the host part.
POD_IPS = {
    f"{ns}/{pod}": f"10.244.{node}.{host}"
    for ns, host in zip(NAMESPACES, (10, 20, 30), strict=True)
    for pod, node in zip(POD_NAMES, (1, 2, 3), strict=True)
}
# The address an egress policy sees for cluster DNS: policies judge after Service DNAT, so this is the
# kube-dns endpoint, not 10.96.0.10. The model's live cluster runs no DNS server: a host address (node-1's)
# stands in for it, which the older e2e policies' ipBlock names; a live test passes it in
# `addresses["kube-dns"]`. (tests/test_dns_pods.py applies the allow-DNS policies that select DNS pods.)
KUBE_DNS = "kube-dns"
DNS_IP = "127.0.0.11"
ADDRESSES: Mapping[str, str] = {**POD_IPS, KUBE_DNS: DNS_IP}


def namespaces() -> list[dict]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"ns": ns, "kubernetes.io/metadata.name": ns}},
        }
        for ns in NAMESPACES
    ]


def pods(addresses: Mapping[str, str] | None = None) -> list[dict]:
    """The nine pods, agnhost-like: one container per port and protocol, ports named serve-80-tcp,
    serve-80-udp, serve-81-tcp, serve-81-udp. With `addresses`, each pod carries its IP in status (as a
    running pod does); without, the objects are ready to create on a live cluster."""
    objects = []
    for key in PODS:
        ns, name = key.split("/")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": {"pod": name}},
            "spec": {
                "containers": [
                    {
                        "name": f"cont-{port}-{protocol.lower()}",
                        "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                        "ports": [
                            {
                                "containerPort": port,
                                "name": f"serve-{port}-{protocol.lower()}",
                                "protocol": protocol,
                            }
                        ],
                    }
                    for port in PORTS
                    for protocol in PROTOCOLS
                ]
            },
        }
        if addresses is not None:
            pod["status"] = {"phase": "Running", "podIP": addresses[key], "podIPs": [{"ip": addresses[key]}]}
        objects.append(pod)
    return objects


def policy(namespace: str, name: str, spec: dict) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


def _host(addresses: Mapping[str, str], key: str) -> str:
    return f"{addresses[key]}/32"


def _large_cidr(ip: str) -> str:
    """The /4 that holds `ip`, as the e2e's makeLargeCIDRForIP builds it."""
    first = int(ip.split(".")[0]) & 0xF0
    return f"{first}.0.0.0/4"


@dataclass(frozen=True)
class Probe:
    """One connection outside the 9x9 tables; `dst` is a pod key or a key of `addresses` (kube-dns)."""

    src: str
    dst: str
    port: int
    protocol: str
    allowed: bool


@dataclass(frozen=True)
class Case:
    name: str
    e2e: str  # the e2e test it follows, or what it adds to them
    build: Callable[[Mapping[str, str]], list[dict]]  # addresses -> NetworkPolicies
    tables: Mapping[tuple[int, str], str]  # (port, protocol) -> expected table text
    probes: tuple[Probe, ...] = field(default=())

    def policies(self, addresses: Mapping[str, str] = ADDRESSES) -> list[dict]:
        return self.build(addresses)

    def objects(self, addresses: Mapping[str, str] = ADDRESSES) -> list[dict]:
        """Namespaces, pods (with their addresses) and this case's policies."""
        return [*namespaces(), *pods(addresses), *self.policies(addresses)]

    def expected(self, port: int, protocol: str) -> TruthTable:
        return parse_table(self.tables[port, protocol])


def _every(table: str) -> dict[tuple[int, str], str]:
    return {combination: table for combination in COMBINATIONS}


# ---------------------------------------------------------------------------------------------------
# Expected tables

ALL_ALLOWED = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b .   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
"""

DENIED_INTO_X = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   X   X   .   .   .   .   .   .
x/b X   X   X   .   .   .   .   .   .
x/c X   X   X   .   .   .   .   .   .
y/a X   X   X   .   .   .   .   .   .
y/b X   X   X   .   .   .   .   .   .
y/c X   X   X   .   .   .   .   .   .
z/a X   X   X   .   .   .   .   .   .
z/b X   X   X   .   .   .   .   .   .
z/c X   X   X   .   .   .   .   .   .
"""

DENIED_OUT_OF_X = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   X   X   X   X   X   X   X   X
x/b X   X   X   X   X   X   X   X   X
x/c X   X   X   X   X   X   X   X   X
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
"""

DENIED_INTO_AND_OUT_OF_X = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   X   X   X   X   X   X   X   X
x/b X   X   X   X   X   X   X   X   X
x/c X   X   X   X   X   X   X   X   X
y/a X   X   X   .   .   .   .   .   .
y/b X   X   X   .   .   .   .   .   .
y/c X   X   X   .   .   .   .   .   .
z/a X   X   X   .   .   .   .   .   .
z/b X   X   X   .   .   .   .   .   .
z/c X   X   X   .   .   .   .   .   .
"""

DENIED_INTO_XA = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b X   .   .   .   .   .   .   .   .
y/c X   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
"""

ONLY_Y_INTO_XA = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
"""

ONLY_X_INTO_X = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   .   .   .   .   .   .
x/b .   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a X   X   X   .   .   .   .   .   .
y/b X   X   X   .   .   .   .   .   .
y/c X   X   X   .   .   .   .   .   .
z/a X   X   X   .   .   .   .   .   .
z/b X   X   X   .   .   .   .   .   .
z/c X   X   X   .   .   .   .   .   .
"""

ONLY_YB_ZB_INTO_XA = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c X   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
"""

ALL_BUT_XA_XC_INTO_XA = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   .   .   .   .   .   .   .   .
x/b .   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
"""

ONLY_YB_YC_ZB_ZC_INTO_XA = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   .   .   .   .   .   .   .   .
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
"""

ALL_BUT_XA_TO_XB = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   X   .   .   .   .   .   .   .
x/b .   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
"""

XA_ONLY_TO_YA = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   X   X   .   X   X   X   X   X
x/b .   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
"""

XA_ONLY_TO_X = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a .   .   .   X   X   X   X   X   X
x/b .   .   .   .   .   .   .   .   .
x/c .   .   .   .   .   .   .   .   .
y/a .   .   .   .   .   .   .   .   .
y/b .   .   .   .   .   .   .   .   .
y/c .   .   .   .   .   .   .   .   .
z/a .   .   .   .   .   .   .   .   .
z/b .   .   .   .   .   .   .   .   .
z/c .   .   .   .   .   .   .   .   .
"""

DENIED_INTO_AND_OUT_OF_XA = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   X   X   X   X   X   X   X   X
x/b X   .   .   .   .   .   .   .   .
x/c X   .   .   .   .   .   .   .   .
y/a X   .   .   .   .   .   .   .   .
y/b X   .   .   .   .   .   .   .   .
y/c X   .   .   .   .   .   .   .   .
z/a X   .   .   .   .   .   .   .   .
z/b X   .   .   .   .   .   .   .   .
z/c X   .   .   .   .   .   .   .   .
"""


# ---------------------------------------------------------------------------------------------------
# The cases

_DENY_INGRESS = policy("x", "deny-ingress", {"podSelector": {}})  # policyTypes defaults to [Ingress]
_NS_Y = {"matchLabels": {"ns": "y"}}
_NOT_NS_X = {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}
_POD_A = {"matchLabels": {"pod": "a"}}
_POD_B = {"matchLabels": {"pod": "b"}}


def _ingress_to_xa(name: str, *rules: dict) -> dict:
    return policy("x", name, {"podSelector": _POD_A, "ingress": list(rules)})


def _egress_of_xa(name: str, *rules: dict) -> dict:
    return policy("x", name, {"podSelector": _POD_A, "policyTypes": ["Egress"], "egress": list(rules)})


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case(
            "default-deny-ingress",
            "should support a 'default-deny-ingress' policy",
            lambda addrs: [_DENY_INGRESS],
            _every(DENIED_INTO_X),
        ),
        Case(
            "default-deny-egress",
            "should deny egress from all pods in a namespace",
            lambda addrs: [policy("x", "deny-egress-ns-x", {"podSelector": {}, "policyTypes": ["Egress"]})],
            _every(DENIED_OUT_OF_X),
        ),
        Case(
            "allow-all-ingress-in-namespace",
            "should support allow-all policy (one empty rule allows everything)",
            lambda addrs: [policy("x", "allow-all", {"podSelector": {}, "ingress": [{}]})],
            _every(ALL_ALLOWED),
        ),
        Case(
            "allow-from-same-namespace",
            "should deny ingress from pods on other namespaces",
            lambda addrs: [
                policy(
                    "x",
                    "deny-empty-policy",
                    {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
                )
            ],
            _every(ONLY_X_INTO_X),
        ),
        Case(
            "namespace-selector",
            "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
            lambda addrs: [
                _ingress_to_xa("allow-client-a-via-ns-selector", {"from": [{"namespaceSelector": _NS_Y}]})
            ],
            _every(ONLY_Y_INTO_XA),
        ),
        Case(
            "pod-and-namespace-selector-in-one-peer",
            "should enforce policy based on PodSelector and NamespaceSelector",
            lambda addrs: [
                _ingress_to_xa(
                    "allow-ns-y-podselector-and-nsselector",
                    {"from": [{"namespaceSelector": _NOT_NS_X, "podSelector": _POD_B}]},
                )
            ],
            _every(ONLY_YB_ZB_INTO_XA),
        ),
        Case(
            "pod-or-namespace-selector-in-two-peers",
            "should enforce policy based on PodSelector or NamespaceSelector",
            lambda addrs: [
                _ingress_to_xa(
                    "allow-ns-y-match-selector",
                    {"from": [{"namespaceSelector": _NOT_NS_X}, {"podSelector": _POD_B}]},
                )
            ],
            _every(ALL_BUT_XA_XC_INTO_XA),
        ),
        Case(
            "match-expressions",
            "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
            lambda addrs: [
                _ingress_to_xa(
                    "allow-ns-y-z-pod-b-c",
                    {
                        "from": [
                            {
                                "namespaceSelector": _NOT_NS_X,
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "pod", "operator": "In", "values": ["b", "c"]}
                                    ]
                                },
                            }
                        ]
                    },
                )
            ],
            _every(ONLY_YB_YC_ZB_ZC_INTO_XA),
        ),
        Case(
            "ipblock-with-except",
            "should enforce except clause while egress access to server in CIDR block",
            lambda addrs: [
                _egress_of_xa(
                    "allow-client-a-via-cidr-egress-rule",
                    {
                        "to": [
                            {"ipBlock": {"cidr": _large_cidr(addrs["x/b"]), "except": [_host(addrs, "x/b")]}}
                        ]
                    },
                )
            ],
            _every(ALL_BUT_XA_TO_XB),
        ),
        Case(
            "ipblock-except-overlapped-by-another-policy",
            "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
            lambda addrs: [
                _egress_of_xa(
                    "allow-client-a-via-cidr-egress-rule",
                    {
                        "to": [
                            {"ipBlock": {"cidr": _large_cidr(addrs["x/b"]), "except": [_host(addrs, "x/b")]}}
                        ]
                    },
                ),
                _egress_of_xa(
                    "allow-client-a-to-x-b-via-cidr", {"to": [{"ipBlock": {"cidr": _host(addrs, "x/b")}}]}
                ),
            ],
            _every(ALL_ALLOWED),
        ),
        Case(
            "named-port",
            "should allow ingress access on one named port",
            lambda addrs: [
                policy(
                    "x", "allow-all", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}
                )
            ],
            {**_every(DENIED_INTO_X), (81, "TCP"): ALL_ALLOWED},
        ),
        Case(
            "named-port-egress",
            "should allow egress access on one named port (resolved by the destination pod's ports)",
            lambda addrs: [
                policy(
                    "x",
                    "allow-egress",
                    {
                        "podSelector": {},
                        "policyTypes": ["Egress"],
                        "egress": [{"ports": [{"port": "serve-80-tcp"}]}],
                    },
                )
            ],
            {**_every(DENIED_OUT_OF_X), (80, "TCP"): ALL_ALLOWED},
        ),
        Case(
            "end-port-range",
            "endPort (the e2e has none in network_policy.go): namespace y may reach x/a on TCP 81-90 only",
            lambda addrs: [
                _ingress_to_xa(
                    "allow-ns-y-ports-81-90",
                    {
                        "from": [{"namespaceSelector": _NS_Y}],
                        "ports": [{"protocol": "TCP", "port": 81, "endPort": 90}],
                    },
                )
            ],
            {**_every(DENIED_INTO_XA), (81, "TCP"): ONLY_Y_INTO_XA},
        ),
        Case(
            "multiple-policies-add-up",
            "should enforce multiple, stacked policies with overlapping podSelectors",
            lambda addrs: [
                _ingress_to_xa(
                    "allow-client-a-via-ns-selector",
                    {"from": [{"namespaceSelector": _NS_Y}], "ports": [{"port": 81, "protocol": "TCP"}]},
                ),
                _ingress_to_xa(
                    "allow-client-a-via-ns-selector-80",
                    {"from": [{"namespaceSelector": _NS_Y}], "ports": [{"port": 80, "protocol": "TCP"}]},
                ),
            ],
            {**_every(DENIED_INTO_XA), (80, "TCP"): ONLY_Y_INTO_XA, (81, "TCP"): ONLY_Y_INTO_XA},
        ),
        Case(
            "egress-to-one-pod-plus-dns",
            "should enforce egress policy allowing traffic to a server in a different namespace based on "
            "PodSelector and NamespaceSelector, plus the DNS rule the older e2e policies carried",
            lambda addrs: [
                _egress_of_xa(
                    "allow-to-ns-y-pod-a",
                    {"to": [{"namespaceSelector": _NS_Y, "podSelector": _POD_A}]},
                    {
                        "to": [{"ipBlock": {"cidr": _host(addrs, KUBE_DNS)}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                )
            ],
            _every(XA_ONLY_TO_YA),
            probes=(
                Probe("x/a", KUBE_DNS, 53, "UDP", True),
                Probe("x/a", KUBE_DNS, 53, "TCP", True),
                Probe("x/a", KUBE_DNS, 54, "UDP", False),
                Probe("x/a", "y/b", 53, "UDP", False),
                Probe("x/b", KUBE_DNS, 54, "UDP", True),
            ),
        ),
        Case(
            "policy-types-egress-only",
            "policyTypes [Egress]: the ingress list (empty, which would deny everything) is ignored",
            lambda addrs: [
                policy(
                    "x",
                    "egress-only",
                    {
                        "podSelector": _POD_A,
                        "policyTypes": ["Egress"],
                        "ingress": [],
                        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
                    },
                )
            ],
            _every(XA_ONLY_TO_X),
        ),
        Case(
            "policy-types-defaulted",
            "should work with Ingress, Egress specified together: without policyTypes, egress rules make "
            "the policy isolate for both directions",
            lambda addrs: [
                policy(
                    "x", "ingress-and-egress", {"podSelector": _POD_A, "egress": [{"ports": [{"port": 80}]}]}
                )
            ],
            {**_every(DENIED_INTO_AND_OUT_OF_XA), (80, "TCP"): DENIED_INTO_XA},
        ),
        Case(
            "deny-all-then-allow-one-port",
            "should support a 'default-deny-all' policy, then one port opened in both directions",
            lambda addrs: [
                policy("x", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
                policy(
                    "x",
                    "allow-port-81",
                    {
                        "podSelector": {},
                        "policyTypes": ["Ingress", "Egress"],
                        "ingress": [{"ports": [{"port": 81}]}],
                        "egress": [{"ports": [{"port": 81}]}],
                    },
                ),
            ],
            {**_every(DENIED_INTO_AND_OUT_OF_X), (81, "TCP"): ALL_ALLOWED},
        ),
        Case(
            "sctp-is-not-tcp",
            "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'",
            lambda addrs: [
                _DENY_INGRESS,
                _ingress_to_xa(
                    "allow-only-sctp-ingress-on-port-81", {"ports": [{"port": 81, "protocol": "SCTP"}]}
                ),
            ],
            _every(DENIED_INTO_X),
            probes=(
                Probe("y/a", "x/a", 81, "SCTP", True),
                Probe("y/a", "x/a", 80, "SCTP", False),
                Probe("y/a", "x/b", 81, "SCTP", False),
            ),
        ),
    )
}
