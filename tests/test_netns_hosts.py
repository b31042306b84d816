"""Namespace-per-node hosts (`podnet up --hosts netns`): each node's agent and kube-proxy in its own network
namespace on the bridge podnet-br0, VXLAN between real interfaces, netns pods on top (by pod IP, by Service
name, DNS, a denying policy); then a crash (every process SIGKILLed) and `podnet clean`, which must leave
nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from support.netns_pods import WEB_BODY, WEB_SERVICE, ensure_tools, require_root, wait_for
from support.nodeagent import REPO

from podnet.cluster import netns_hosts
from podnet.netns.ip import list_namespaces

pytestmark = [pytest.mark.root, pytest.mark.slow]


class LocalCluster:
    def __init__(self, home):
        self.home = home
        self.env = dict(os.environ, PYTHONPATH=str(REPO), PODNET_HOME=str(home),
                        KUBECONFIG=str(home / "kubeconfig"))

    def cli(self, *args: str, timeout: float = 60.0, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "podnet", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, input=stdin)

    def curl(self, url: str) -> subprocess.CompletedProcess:
        return self.cli("exec", "client", "--", "curl", "-sS", "--max-time", "2", url)


def _mine(name: str) -> bool:
    return name.startswith(("podnet-host-node-", "podnet-node-"))


def test_hosts_as_namespaces_carry_netns_pod_traffic_and_clean_leaves_nothing(tmp_path):
    require_root()
    ensure_tools()
    assert not [n for n in list_namespaces() if _mine(n)], "a previous run left namespaces: podnet clean --all"
    cluster = LocalCluster(tmp_path / "home")
    manifests = tmp_path / "pods.json"
    www = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "www"}, "data": {"index.html": WEB_BODY}}
    web = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"nodeName": "node-1", "volumes": [{"name": "www", "configMap": {"name": "www"}}],
                    "containers": [{"name": "main", "image": "debian", "command": [
                        "python3", "-m", "http.server", "8080", "--directory", "/www"],
                        "volumeMounts": [{"name": "www", "mountPath": "/www"}]}]}}
    client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
              "spec": {"nodeName": "node-2", "containers": [{"name": "main", "image": "debian"}]}}
    manifests.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [www, web, client, WEB_SERVICE]}))
    try:
        up = cluster.cli("up", "--nodes", "2", "--hosts", "netns", "--pod-mode", "netns",
                         "--home", str(cluster.home), timeout=150)
        assert up.returncode == 0, up.stdout + up.stderr
        # each node is its own kernel: its address lives only in its namespace, and its agent's VXLAN
        # socket is bound to it there
        for index in (1, 2):
            addresses = subprocess.run(["ip", "-n", f"podnet-host-node-{index}", "-4", "-o", "addr", "show", "eth0"],
                                       capture_output=True, text=True).stdout
            assert f"{netns_hosts.LAB_PREFIX}.{10 + index}/24" in addresses
        applied = cluster.cli("apply", "-f", str(manifests))
        assert applied.returncode == 0, applied.stderr
        pods = json.loads(wait_for(
            lambda: (r := cluster.cli("get", "pods", "-o", "json")).returncode == 0
            and all(p.get("status", {}).get("podIP") for p in json.loads(r.stdout)["items"])
            and len(json.loads(r.stdout)["items"]) == 2 and r.stdout, 20, "both pods Running"))
        web_ip = next(p["status"]["podIP"] for p in pods["items"] if p["metadata"]["name"] == "web")
        body = wait_for(lambda: (r := cluster.curl(f"http://{web_ip}:8080/")).returncode == 0 and r.stdout,
                        20, "the web server across the nodes' namespaces")
        assert body == WEB_BODY
        assert wait_for(lambda: (r := cluster.curl("http://web/")).returncode == 0 and r.stdout, 20,
                        "the Service by name") == WEB_BODY
        dig = cluster.cli("exec", "client", "--", "dig", "+short", "+time=2", "kubernetes.default.svc.cluster.local")
        assert dig.stdout.split() == ["10.96.0.1"], dig.stdout + dig.stderr
        assert "podnet-node-1-default.web" in list_namespaces()
        deny = tmp_path / "deny.json"
        deny.write_text(json.dumps({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-web", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
        }))
        assert cluster.cli("apply", "-f", str(deny)).returncode == 0
        wait_for(lambda: cluster.curl(f"http://{web_ip}:8080/").returncode != 0, 15, "the policy to deny the curl")
        # a crash: every process of the cluster killed at once, nothing tidied
        state = json.loads((cluster.home / "cluster.json").read_text())
        for process in state["processes"]:
            if process.get("pid"):
                try:
                    os.kill(process["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
    finally:
        cleaned = cluster.cli("clean", "--home", str(cluster.home))
    assert cleaned.returncode == 0, cleaned.stderr
    assert not [n for n in list_namespaces() if _mine(n)]
    links = [name for name in netns_hosts.leftovers() if name == netns_hosts.BRIDGE or name.startswith("pnv")]
    assert not links
    forward = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    assert "podnet lab bridge" not in forward
    assert "podnet-node-1-default.web" in cleaned.stdout and "podnet-br0" in cleaned.stdout
