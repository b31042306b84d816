"""A cluster's topology as plain data: which processes, on which addresses and ports, in which order.

The local supervisor and the docker-compose file are both generated from this, so they cannot drift. Names
and addresses are deterministic: node N is `node-N` on <prefix>.(10+N). On loopback (the local supervisor) the
control plane (etcd, API server, DNS, cloud load balancer) shares <prefix>.10; on a real network (containers,
one host each) each control-plane component has its own host: etcd <prefix>.2, the API server .3, DNS .4 and
the cloud load balancer .5.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from podnet.backends import BACKENDS, ENCRYPTIONS, POD_MODES, PROXY_MODES, routing_backend
from podnet.cluster import auditpolicy, credentials, etcd_credentials, kubelet_credentials
from podnet.netns.names import host_namespace
from podnet.nodeagent.hostguard import BGP_PORTS, ETCD_PORTS

STORES = ("sqlite", "etcd")
LAYOUTS = ("loopback", "network", "netns")
# The control-plane components that get a host of their own in the "network" layout, by last octet.
CONTROL_HOSTS = {"etcd": 2, "apiserver": 3, "dns": 4, "cloud-lb": 5, "ingress": 6}
# HTTP's port for the ingress controller where it may be bound (root, or a container), else an
# unprivileged one.
INGRESS_PORTS = (80, 8080)


class TopologyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    address: str


@dataclass(frozen=True, slots=True)
class Health:
    """How to tell a component is up: an HTTP(S) URL answering 200, or a Unix socket answering RPC ping. An
    HTTPS URL's certificate must chain to the CA in the file `ca`."""

    http: str | None = None
    rpc: str | None = None
    ca: str | None = None


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    name: str  # "apiserver", "dns", "node-2/agent", "node-1/kube-proxy", ...
    argv: tuple[str, ...]  # after `python -m podnet` (or the full command for etcd)
    health: Health
    external: bool = False  # not a podnet command (etcd)
    netns: str | None = None  # the network namespace it runs in (hosts as namespaces), None: this one


@dataclass(frozen=True, slots=True)
class Topology:
    home: Path
    nodes: tuple[NodeSpec, ...]
    prefix: str = "127.0.0"
    store: str = "sqlite"
    backend: str = "vxlan"
    proxy_mode: str = "iptables"
    encryption: str = "none"  # a name in podnet.backends.ENCRYPTIONS: how the agents protect the underlay
    api_port: int = 6443
    dns_port: int = 1053
    etcd_port: int = 2379
    vxlan_port: int = 4789
    bgp_port: int = 1790
    lb_pool: str = "127.0.1.0/24"
    ingress_port: int = 80
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    node_grace_period: float = 40.0
    pod_eviction_timeout: float = 300.0
    options: dict[str, str] = field(default_factory=dict)
    # Control-plane component -> its own address; a component not named here runs on control_address.
    hosts: dict[str, str] = field(default_factory=dict)
    host_mode: str = "local"  # "netns": each node's processes in namespace podnet-host-<node> on a bridge
    pod_mode: str = "virtual"  # the agents' default for pods without a podnet.io/pod-mode annotation
    insecure_http: bool = False  # the API server on plain HTTP, for debugging only
    ui: bool = True  # the web UI (podnet/ui/), which reads the agents' sockets: local layouts only
    dns_replicas: int = 1  # cluster DNS servers behind kube-dns, as CoreDNS's two replicas
    etcd_members: int = 1  # with the etcd store: 1, 3 or 5 members, each a process of its own
    apiservers: int = 1  # API servers on the one etcd, each on an address of its own (api_servers())

    @property
    def ui_url(self) -> str:
        return f"http://{self.control_address}:{self.api_port + 4}"

    @property
    def control_address(self) -> str:
        return f"{self.prefix}.10"

    def host(self, component: str) -> str:
        """The address a control-plane component ("etcd", "apiserver", "dns", "cloud-lb", "ingress") listens on."""
        return self.hosts.get(component, self.control_address)

    @property
    def api_url(self) -> str:
        """The first API server's URL: the one clients ask first."""
        return self.api_urls[0]

    @property
    def api_urls(self) -> tuple[str, ...]:
        """Every API server's URL, the first one first."""
        scheme = "http" if self.insecure_http else "https"
        return tuple(f"{scheme}://{address}:{self.api_port}" for _, address in api_servers(self))

    @property
    def api_addresses(self) -> tuple[str, ...]:
        """Where the API servers are reached from the cluster's hosts: what their certificate must name."""
        return tuple(dict.fromkeys((*(address for _, address in api_servers(self)), self.control_address)))

    @property
    def store_url(self) -> str:
        if self.store == "etcd":
            return "etcd://" + ",".join(f"{self.host('etcd')}:{m.client_port}" for m in etcd_members(self))
        return f"sqlite://{self.home / 'store.db'}"

    def node_dir(self, node: NodeSpec) -> Path:
        return self.home / "nodes" / node.name

    def agent_socket(self, node: NodeSpec) -> Path:
        return self.node_dir(node) / "agent.sock"

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise TopologyError(f"no node {name!r} in this cluster (nodes: {', '.join(n.name for n in self.nodes)})")


def build(
    home: Path,
    nodes: int = 3,
    *,
    prefix: str = "127.0.0",
    store: str = "sqlite",
    backend: str = "vxlan",
    proxy_mode: str = "iptables",
    layout: str = "loopback",
    **settings: object,
) -> Topology:
    """`layout` "loopback": every host is an address of 127/8 on this machine; "network": hosts are
    separate machines (containers) on a private /24 given by `prefix`; "netns": each node is a network
    namespace on a bridge that holds <prefix>.10, the control plane's address (root, Linux)."""
    if not 1 <= nodes <= 200:
        raise TopologyError("--nodes must be between 1 and 200")
    if not 1 <= int(settings.get("dns_replicas", 1)) <= 5:  # type: ignore[call-overload]
        raise TopologyError("--dns-replicas must be between 1 and 5")
    members = int(settings.get("etcd_members", 1))  # type: ignore[call-overload]
    if members not in (1, 3, 5):
        raise TopologyError("--etcd-members must be 1, 3 or 5 (a quorum of an even number is no safer)")
    if members > 1 and (store != "etcd" or layout == "network"):
        raise TopologyError("--etcd-members needs --store etcd, and a local cluster")
    apiservers = int(settings.get("apiservers", 1))  # type: ignore[call-overload]
    if not 1 <= apiservers <= MAX_API_SERVERS:
        raise TopologyError(f"--apiservers must be between 1 and {MAX_API_SERVERS}")
    if apiservers > 1 and (store != "etcd" or layout != "loopback"):
        raise TopologyError("--apiservers needs --store etcd (every API server reads the one store), "
                            "and hosts on loopback addresses")
    for value, allowed, flag in ((store, STORES, "--store"), (backend, BACKENDS, "--backend"),
                                 (proxy_mode, PROXY_MODES, "--proxy-mode"), (layout, LAYOUTS, "layout")):
        if value not in allowed:
            raise TopologyError(f"{flag} must be one of {', '.join(allowed)}, not {value!r}")
    try:
        network = ipaddress.ip_network(f"{prefix}.0/24")
    except ValueError:
        raise TopologyError(f"--prefix must be three octets of a loopback address, like 127.0.0, not {prefix!r}") from None
    hosts: dict[str, str] = {}
    encryption = str(settings.get("encryption", "none"))
    if encryption not in ENCRYPTIONS:
        raise TopologyError(f"--encryption must be one of {', '.join(ENCRYPTIONS)}, not {encryption!r}")
    pod_mode = str(settings.get("pod_mode", "virtual"))
    if pod_mode not in POD_MODES:
        raise TopologyError(f"--pod-mode must be one of {', '.join(POD_MODES)}, not {pod_mode!r}")
    if layout == "netns":
        if not network.is_private or network.is_loopback:
            raise TopologyError(f"--prefix {prefix} is not a private network (like 192.0.2)")
        settings["host_mode"] = "netns"
    if layout == "loopback" and not network.is_loopback:
        raise TopologyError(f"--prefix {prefix} is not in 127.0.0.0/8")
    if layout == "network":
        if not network.is_private or network.is_loopback:
            raise TopologyError(f"--prefix {prefix} is not a private or documentation network (like 198.51.100)")
        if nodes > 244:
            raise TopologyError("--nodes must be at most 244 on one /24")
        hosts = {component: f"{prefix}.{octet}" for component, octet in CONTROL_HOSTS.items()}
        settings["ui"] = False
    specs = tuple(NodeSpec(f"node-{i}", f"{prefix}.{10 + i}") for i in range(1, nodes + 1))
    settings.setdefault("ingress_port", INGRESS_PORTS[0] if layout == "network" or os.geteuid() == 0 else INGRESS_PORTS[1])
    return Topology(home=home, nodes=specs, prefix=prefix, store=store, backend=backend, proxy_mode=proxy_mode,
                    hosts=hosts, **settings)  # type: ignore[arg-type]


# API servers beyond the first listen on the control address's neighbours below it (<prefix>.9, .8, ...),
# which no node takes.
MAX_API_SERVERS = 5


def api_servers(topo: Topology) -> list[tuple[str, str]]:
    """(component name, address) of each API server: `apiserver` on its host, then `apiserver-2`,
    `apiserver-3`... on <prefix>.9, <prefix>.8..., all on the API port."""
    return [("apiserver", topo.host("apiserver")),
            *((f"apiserver-{i}", f"{topo.prefix}.{11 - i}") for i in range(2, topo.apiservers + 1))]


@dataclass(frozen=True, slots=True)
class EtcdMember:
    name: str  # the component's: etcd, etcd-2, etcd-3...
    member: str  # etcd's --name: podnet, podnet-2...
    data_dir: str  # under the cluster home
    client_port: int
    peer_port: int
    metrics_port: int  # plain-HTTP /health and /metrics (kubeadm's --listen-metrics-urls, 2381)


def etcd_members(topo: Topology) -> list[EtcdMember]:
    """The members on the etcd host: the first on the client, peer and metrics ports kubeadm uses (2379-2381
    by default), each further one ten ports on."""
    return [EtcdMember("etcd" if i == 1 else f"etcd-{i}", "podnet" if i == 1 else f"podnet-{i}",
                       "etcd" if i == 1 else f"etcd-{i}", topo.etcd_port + 10 * (i - 1),
                       topo.etcd_port + 10 * (i - 1) + 1, topo.etcd_port + 10 * (i - 1) + 2)
            for i in range(1, topo.etcd_members + 1)]


def _etcd(topo: Topology) -> list[ComponentSpec]:
    """etcd as kubeadm runs it: clients and peers over TLS, each proving itself with a certificate from
    etcd's own CA (podnet/cluster/etcd_credentials.py), the members naming each other in --initial-cluster.
    Health is on a plain-HTTP metrics port, which tells whether etcd is up and nothing of what it stores:
    the last member's /health (which needs a quorum), the others' /metrics (the process serves), since they
    are started one after another and no member has a quorum before enough of them run."""
    host, home = topo.host("etcd"), topo.home
    members = etcd_members(topo)
    cluster = ",".join(f"{m.member}=https://{host}:{m.peer_port}" for m in members)
    ca = str(etcd_credentials.ca_file(home))
    (server_cert, server_key), (peer_cert, peer_key) = etcd_credentials.server_files(home), etcd_credentials.peer_files(home)
    specs = []
    for m in members:
        client_url, peer_url, metrics_url = (f"https://{host}:{m.client_port}", f"https://{host}:{m.peer_port}",
                                             f"http://{host}:{m.metrics_port}")
        specs.append(ComponentSpec(
            m.name,
            ("etcd", "--name", m.member, "--data-dir", str(home / m.data_dir),
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", cluster,
             "--cert-file", str(server_cert), "--key-file", str(server_key),
             "--client-cert-auth=true", "--trusted-ca-file", ca,
             "--peer-cert-file", str(peer_cert), "--peer-key-file", str(peer_key),
             "--peer-client-cert-auth=true", "--peer-trusted-ca-file", ca,
             "--listen-metrics-urls", metrics_url),
            Health(http=f"{metrics_url}/health" if m is members[-1] else f"{metrics_url}/metrics"),
            external=True,
        ))
    return specs


def components(topo: Topology) -> list[ComponentSpec]:
    """Every process of the cluster in start order (stop order is the reverse). Clients of the API server
    find it, its CA and their token in a kubeconfig of their own (no secret on a command line)."""

    def api(component: str) -> tuple[str, ...]:
        return ("--kubeconfig", str(credentials.component_kubeconfig(topo.home, component)))

    ca = None if topo.insecure_http else str(credentials.ca_file(topo.home))
    tls: tuple[str, ...] = ()
    if not topo.insecure_http:
        cert, key = credentials.serving_files(topo.home)
        tls = ("--tls-cert", str(cert), "--tls-key", str(key), "--client-ca-file", str(ca))
    # The kubelet API (exec, logs) exists only over TLS: the agents and the API server know each other by
    # certificates from the cluster CA.
    kubelet_client: tuple[str, ...] = ()
    kubelet_serving: tuple[str, ...] = ()
    if not topo.insecure_http:
        client_cert, client_key = kubelet_credentials.client_files(topo.home)
        kubelet_client = ("--kubelet-client-certificate", str(client_cert), "--kubelet-client-key", str(client_key),
                          "--kubelet-certificate-authority", str(ca))
        serving_cert, serving_key = kubelet_credentials.serving_files(topo.home)
        kubelet_serving = ("--kubelet-tls-cert-file", str(serving_cert), "--kubelet-tls-private-key-file",
                           str(serving_key), "--kubelet-client-ca-file", str(ca))
    specs: list[ComponentSpec] = []
    etcd_client: tuple[str, ...] = ()
    if topo.store == "etcd":
        specs.extend(_etcd(topo))
        etcd_cert, etcd_key = etcd_credentials.client_files(topo.home)
        etcd_client = ("--etcd-cafile", str(etcd_credentials.ca_file(topo.home)), "--etcd-certfile", str(etcd_cert),
                       "--etcd-keyfile", str(etcd_key))
    scheme = "http" if topo.insecure_http else "https"
    for name, address in api_servers(topo):
        specs.append(ComponentSpec(
            name,
            ("apiserver", "--host", address, "--port", str(topo.api_port), "--store", topo.store_url,
             "--token-file", str(credentials.token_file(topo.home)), *tls, *kubelet_client, *etcd_client,
             "--service-account-signing-key-file", str(credentials.service_account_key_file(topo.home)),
             "--audit-policy-file", str(auditpolicy.policy_file(credentials.pki_dir(topo.home))),
             "--audit-log-path", str(auditpolicy.log_file(topo.home, name)),
             "--service-cidr", topo.service_cidr, "--cluster-cidr", topo.cluster_cidr,
             "--node-grace-period", str(topo.node_grace_period),
             "--eviction-timeout", str(topo.pod_eviction_timeout)),
            Health(http=f"{scheme}://{address}:{topo.api_port}/readyz", ca=ca),
        ))
    for name, port, metrics_port in dns_replicas(topo):
        specs.append(ComponentSpec(
            name,
            ("dns", "--address", topo.host("dns"), "--port", str(port), *api(name), "--metrics-port", str(metrics_port)),
            Health(http=f"http://{topo.host('dns')}:{metrics_port}/healthz"),
        ))
    protected = _protected_ports(topo)
    for index, node in enumerate(topo.nodes):
        node_dir = str(topo.node_dir(node))
        netns = host_namespace(node.name) if topo.host_mode == "netns" else None
        pod_mode = ("--pod-mode", topo.pod_mode) if topo.pod_mode != "virtual" else ()
        encryption = ("--encryption", topo.encryption) if topo.encryption != "none" else ()
        # As the kubelet renews every quarter of its lease: a short grace period needs quicker renewals.
        renew = ("--renew-interval", f"{topo.node_grace_period / 4:g}") if topo.node_grace_period < 20 else ()
        agent_socket = str(topo.agent_socket(node))
        metrics_port = 10250 + index * 10
        kubelet = ("--kubelet-port", str(metrics_port + 2), *kubelet_serving)
        specs.append(ComponentSpec(
            f"{node.name}/agent",
            ("nodeagent", "--name", node.name, "--address", node.address, *api(f"{node.name}/agent"), "--state-dir", node_dir,
             "--vxlan-port", str(topo.vxlan_port), "--backend", topo.backend, "--metrics-port", str(metrics_port),
             *kubelet, *pod_mode, *encryption, *renew, "--proxy-protocol-from", topo.host("cloud-lb"), *protected),
            Health(rpc=agent_socket),
            netns=netns,
        ))
        specs.append(ComponentSpec(
            f"{node.name}/kube-proxy",
            ("kubeproxy", "--node", node.name, "--mode", topo.proxy_mode, *api(f"{node.name}/kube-proxy"),
             "--agent-socket", agent_socket,
             "--metrics-port", str(metrics_port + 1)),
            Health(http=f"http://{node.address}:{metrics_port + 1}/healthz"),
            netns=netns,
        ))
        if routing_backend(topo.backend).runs_speaker:
            specs.append(ComponentSpec(
                f"{node.name}/bgp",
                ("bgp", "--node", node.name, "--address", node.address, "--port", str(topo.bgp_port), *api(f"{node.name}/bgp"),
                 "--agent-socket", agent_socket, "--state-dir", node_dir, "--cluster-cidr", topo.cluster_cidr),
                Health(rpc=str(topo.node_dir(node) / "bgp.sock")),
                netns=netns,
            ))
    specs.append(ComponentSpec(
        "cloud-lb",
        ("cloud-lb", *api("cloud-lb"), "--pool", topo.lb_pool, "--metrics-port", str(topo.api_port + 3),
         "--address", topo.host("cloud-lb")),
        Health(http=f"http://{topo.host('cloud-lb')}:{topo.api_port + 3}/healthz"),
    ))
    ingress_kubelet: tuple[str, ...] = ()
    if not topo.insecure_http:
        cert, key = kubelet_credentials.ingress_client_files(topo.home)
        ingress_kubelet = ("--kubelet-client-certificate", str(cert), "--kubelet-client-key", str(key),
                           "--kubelet-certificate-authority", str(ca))
    specs.append(ComponentSpec(
        "ingress",
        ("ingress", *api("ingress"), "--port", str(topo.ingress_port), *ingress_kubelet,
         "--metrics-port", str(topo.api_port + 5), "--address", topo.host("ingress")),
        Health(http=f"http://{topo.host('ingress')}:{topo.api_port + 5}/healthz"),
    ))
    if topo.ui:
        # A client of the API server with its users' tokens only: it has no credential of its own.
        ca_option = () if ca is None else ("--ca-file", ca)
        specs.append(ComponentSpec(
            "ui",
            ("ui", "--server", topo.api_url, *ca_option, "--home", str(topo.home), "--address", topo.control_address,
             "--port", str(topo.api_port + 4)),
            Health(http=f"{topo.ui_url}/healthz"),
        ))
    return specs


def dns_replicas(topo: Topology) -> list[tuple[str, int, int]]:
    """(component name, DNS port, status port) of each DNS replica: `dns` on the cluster's DNS port, then
    `dns-2`, `dns-3`... on the ports after it, their status ports after the other components' (API port + 6...)."""
    first = [("dns", topo.dns_port, topo.api_port + 2)]
    return first + [(f"dns-{i}", topo.dns_port + i - 1, topo.api_port + 4 + i) for i in range(2, topo.dns_replicas + 1)]


def _protected_ports(topo: Topology) -> list[str]:
    """`--protect-port` for every port of the cluster's own that pods must not reach from their node's address
    (nodeagent/hostguard.py): etcd's and BGP's when not the ones every agent refuses, and the status and
    metrics ports of every component."""
    etcd_ports = [port for m in etcd_members(topo) for port in (m.client_port, m.peer_port)]
    own = [port for port in (*etcd_ports, topo.bgp_port) if port not in (*BGP_PORTS, *ETCD_PORTS)]
    ports = [*(f"tcp/{port}" for port in own),
             f"tcp/{topo.host('dns')}:{topo.api_port + 2}", f"tcp/{topo.host('cloud-lb')}:{topo.api_port + 3}",
             f"tcp/{topo.host('ingress')}:{topo.api_port + 5}",
             *(f"tcp/{topo.host('dns')}:{metrics}" for _, _, metrics in dns_replicas(topo)[1:])]
    if topo.ui:
        ports.append(f"tcp/{topo.control_address}:{topo.api_port + 4}")
    for index, node in enumerate(topo.nodes):
        metrics = 10250 + index * 10  # the agent's status port; kube-proxy's is next, the kubelet API's after
        ports += [f"tcp/{node.address}:{metrics}", f"tcp/{node.address}:{metrics + 1}"]
    return [argument for port in ports for argument in ("--protect-port", port)]
