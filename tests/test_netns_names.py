"""The plain-data parts of netns pods: names, modes, resolv.conf and container commands."""

from __future__ import annotations

from podnet.nodeagent.pods.netns import ContainerSpec, pod_mode

from podnet.api.clusterdns import resolv_conf
from podnet.cluster.netns_hosts import VETH_PREFIX, recorded_pod_namespaces, veth_name
from podnet.netns.names import (
    HOST_END_PREFIX,
    MAX_NAME,
    POD_END_PREFIX,
    namespace_name,
    owner_prefix,
    wire_names,
)


def test_namespace_names_keep_the_owner_prefix_and_fit():
    assert namespace_name("node-1", "default", "web") == "podnet-node-1-default.web"
    long = namespace_name("node-1", "a-very-long-namespace-name", "and-an-even-longer-pod-name-" + "x" * 40)
    assert len(long) <= MAX_NAME and long.startswith(owner_prefix("node-1"))
    other = namespace_name("node-1", "a-very-long-namespace-name", "and-an-even-longer-pod-name-" + "y" * 40)
    assert other != long  # the hash tells apart names that share a long prefix


def test_owner_prefixes_of_different_nodes_do_not_claim_each_other():
    assert not namespace_name("node-10", "default", "web").startswith(owner_prefix("node-1"))


def test_pod_mode_from_annotation_else_the_agent_default():
    annotated = {"metadata": {"annotations": {"podnet.io/pod-mode": "netns"}}}
    assert pod_mode(annotated, "virtual") == "netns"
    assert pod_mode({"metadata": {}}, "netns") == "netns"
    assert pod_mode({"metadata": {"annotations": {"podnet.io/pod-mode": "vm"}}}, "virtual") == "virtual"


def test_resolv_conf_is_a_cluster_first_pods():
    assert resolv_conf("shop") == (
        "nameserver 10.96.0.10\n"
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )


def test_containers_with_a_command_run_it_with_their_args_and_env():
    pod = {"spec": {"containers": [
        {"name": "web", "command": ["python3", "-m", "http.server"], "args": [8080],
         "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {}}}]},
        {"name": "sidecar", "image": "agnhost"},
    ]}}
    [spec] = ContainerSpec.from_pod(pod)
    assert (spec.name, spec.argv, spec.env) == ("web", ("python3", "-m", "http.server", "8080"), (("A", "1"),))
    assert (spec.security.uid, spec.config_error) == (65534, None)  # no runAsUser: nobody, as sandbox.py says


def test_link_names_fit_the_kernels_fifteen_bytes_and_carry_their_prefix():
    veth = veth_name("node-with-a-rather-long-name-12")
    host_end, pod_end = wire_names(f"/run/netns/{namespace_name('node-1', 'default', 'web')}", "eth0")
    assert len(veth) <= 15 and veth.startswith(VETH_PREFIX)
    assert len(host_end) <= 15 and host_end.startswith(HOST_END_PREFIX)
    assert len(pod_end) <= 15 and pod_end.startswith(POD_END_PREFIX)
    assert wire_names("/run/netns/a", "eth0") != wire_names("/run/netns/a", "net1")
    assert veth_name("node-1") != veth_name("node-2")


def test_recorded_pod_namespaces_are_found_in_the_homes_agent_state(tmp_path):
    for node, name in (("node-1", "podnet-node-1-default-a"), ("node-2", "podnet-node-2-x-b")):
        directory = tmp_path / "nodes" / node / "netns"
        directory.mkdir(parents=True)
        (directory / f"{name}.json").write_text("{}")
    (tmp_path / "nodes" / "node-1" / "netns" / "unrelated.json").write_text("{}")
    assert recorded_pod_namespaces(tmp_path) == ["podnet-node-1-default-a", "podnet-node-2-x-b"]
