from pathlib import Path

import pytest

from podnet.cluster import topology


def test_names_and_addresses_are_deterministic():
    topo = topology.build(Path("/h"), 3)
    assert [(n.name, n.address) for n in topo.nodes] == [
        ("node-1", "127.0.0.11"), ("node-2", "127.0.0.12"), ("node-3", "127.0.0.13")]
    assert topo.api_url == "https://127.0.0.10:6443"
    assert topo.store_url == "sqlite:///h/store.db"


def test_components_start_in_order_and_follow_the_options():
    topo = topology.build(Path("/h"), 2, store="etcd", backend="bgp", proxy_mode="ipvs")
    names = [c.name for c in topology.components(topo)]
    assert names == ["etcd", "apiserver", "dns", "node-1/agent", "node-1/kube-proxy", "node-1/bgp",
                     "node-2/agent", "node-2/kube-proxy", "node-2/bgp", "cloud-lb", "ingress", "ui"]
    specs = {c.name: c for c in topology.components(topo)}
    assert specs["etcd"].external and specs["etcd"].argv[0] == "etcd"
    assert "etcd://127.0.0.10:2379" in specs["apiserver"].argv
    assert ("--mode", "ipvs") == specs["node-2/kube-proxy"].argv[3:5]
    assert specs["node-1/agent"].health.rpc == "/h/nodes/node-1/agent.sock"
    # The UI is a client of the API server without a credential of its own: its users log in with theirs.
    assert specs["ui"].argv == ("ui", "--server", "https://127.0.0.10:6443", "--ca-file", "/h/pki/ca.crt", "--home", "/h",
                                "--address", "127.0.0.10", "--port", "6447")
    assert specs["ui"].health.http == "http://127.0.0.10:6447/healthz" == f"{topo.ui_url}/healthz"
    assert "ui" not in [c.name for c in topology.components(topology.build(Path("/h"), 1, ui=False))]


def test_two_clusters_side_by_side_share_no_address():
    a = topology.build(Path("/a"), 2)
    b = topology.build(Path("/b"), 2, prefix="127.0.7")
    addresses_a = {n.address for n in a.nodes} | {a.control_address}
    addresses_b = {n.address for n in b.nodes} | {b.control_address}
    assert not addresses_a & addresses_b


@pytest.mark.parametrize(
    "kwargs, message",
    [({"nodes": 0}, "--nodes"), ({"store": "mysql"}, "--store"), ({"backend": "ospf"}, "--backend"),
     ({"proxy_mode": "nft"}, "--proxy-mode"), ({"prefix": "10.0.0"}, "127.0.0.0/8"), ({"prefix": "x"}, "--prefix"),
     ({"encryption": "ipsec"}, "--encryption")],
)
def test_bad_options_are_refused_with_the_flag_named(kwargs, message):
    with pytest.raises(topology.TopologyError, match=message):
        topology.build(Path("/h"), **kwargs)


def test_network_layout_gives_each_control_plane_component_its_own_host():
    topo = topology.build(Path("/h"), 3, prefix="198.51.100", store="etcd", layout="network")
    specs = {c.name: c for c in topology.components(topo)}
    assert [n.address for n in topo.nodes] == ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
    assert topo.api_url == "https://198.51.100.3:6443"
    assert topo.store_url == "etcd://198.51.100.2:2379"
    assert "https://198.51.100.2:2379" in specs["etcd"].argv and "--client-cert-auth=true" in specs["etcd"].argv
    assert specs["etcd"].health.http == "http://198.51.100.2:2381/health"
    assert ("--etcd-cafile", "/h/pki/etcd/ca.crt") == specs["apiserver"].argv[specs["apiserver"].argv.index("--etcd-cafile"):][:2]
    assert ("--address", "198.51.100.4") == specs["dns"].argv[1:3]
    assert specs["cloud-lb"].argv[-2:] == ("--address", "198.51.100.5")
    assert specs["ingress"].argv[-2:] == ("--address", "198.51.100.6")
    assert specs["ingress"].argv[specs["ingress"].argv.index("--port") + 1] == "80"
    assert specs["node-2/agent"].argv[3:5] == ("--address", "198.51.100.12")
    assert "ui" not in specs  # it reads the agents' sockets, which containers keep to themselves


@pytest.mark.parametrize("prefix", ["127.0.0", "8.8.8"])
def test_network_layout_needs_a_private_network(prefix):
    with pytest.raises(topology.TopologyError, match="private or documentation network"):
        topology.build(Path("/h"), prefix=prefix, layout="network")


def test_clients_of_the_api_find_it_in_a_kubeconfig_of_their_own_and_no_secret_is_on_a_command_line():
    topo = topology.build(Path("/h"), 2, backend="bgp")
    specs = {c.name: c for c in topology.components(topo)}
    assert all("--token" not in c.argv for c in specs.values())
    for name in ("dns", "node-1/agent", "node-2/kube-proxy", "node-1/bgp", "cloud-lb", "ingress"):
        argv = specs[name].argv
        assert argv[argv.index("--kubeconfig") + 1] == f"/h/pki/{name.replace('/', '_')}.kubeconfig"
    apiserver = specs["apiserver"].argv
    flags = {apiserver[i]: apiserver[i + 1] for i in range(len(apiserver) - 1) if apiserver[i].startswith("--")}
    assert flags["--tls-cert"] == "/h/pki/apiserver.crt" and flags["--client-ca-file"] == "/h/pki/ca.crt"
    assert specs["apiserver"].health.http == "https://127.0.0.10:6443/readyz"
    assert specs["apiserver"].health.ca == "/h/pki/ca.crt"


def test_insecure_http_is_plain_http_without_certificates():
    topo = topology.build(Path("/h"), 1, insecure_http=True)
    apiserver = {c.name: c for c in topology.components(topo)}["apiserver"]
    assert topo.api_url == "http://127.0.0.10:6443"
    assert "--tls-cert" not in apiserver.argv and apiserver.health.ca is None


def test_several_api_servers_each_on_an_address_of_its_own():
    topo = topology.build(Path("/h"), 2, store="etcd", etcd_members=3, apiservers=3, prefix="127.0.7")
    assert topo.api_urls == ("https://127.0.7.10:6443", "https://127.0.7.9:6443", "https://127.0.7.8:6443")
    assert set(topo.api_addresses) == {"127.0.7.10", "127.0.7.9", "127.0.7.8"}
    specs = {c.name: c for c in topology.components(topo)}
    for name, address, audit in (("apiserver", "127.0.7.10", "/h/logs/audit.log"),
                                  ("apiserver-3", "127.0.7.8", "/h/logs/audit-apiserver-3.log")):
        argv = specs[name].argv
        assert argv[argv.index("--host") + 1] == address
        assert argv[argv.index("--audit-log-path") + 1] == audit
        assert argv[argv.index("--store") + 1] == topo.store_url
        assert specs[name].health.http == f"https://{address}:6443/readyz"
    names = [c.name for c in topology.components(topo)]
    assert names.index("etcd-3") < names.index("apiserver") < names.index("apiserver-3") < names.index("dns")


@pytest.mark.parametrize(("settings", "message"), [
    ({"apiservers": 2}, "--apiservers needs --store etcd"),
    ({"apiservers": 6, "store": "etcd"}, "--apiservers must be between 1 and 5"),
    ({"apiservers": 2, "store": "etcd", "layout": "network", "prefix": "198.51.100"}, "--apiservers needs --store etcd"),
])
def test_several_api_servers_need_etcd_and_loopback(settings, message):
    with pytest.raises(topology.TopologyError, match=message):
        topology.build(Path("/h"), 1, **settings)


def test_encryption_reaches_every_agent_and_the_compose_file():
    from podnet.cluster import compose

    for topo in (topology.build(Path("/h"), 2, encryption="wireguard"), compose.build_topology(2, encryption="wireguard")):
        agents = [c for c in topology.components(topo) if c.name.endswith("/agent")]
        assert len(agents) == 2
        for agent in agents:
            at = agent.argv.index("--encryption")
            assert agent.argv[at + 1] == "wireguard"
    plain = [c for c in topology.components(topology.build(Path("/h"), 2)) if c.name.endswith("/agent")]
    assert not any("--encryption" in c.argv for c in plain)
