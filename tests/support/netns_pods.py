"""A cluster of real processes whose pods are network namespaces (root): the API server, the cluster
DNS, two node agents in `--pod-mode netns` and a kube-proxy per node.

`netns_cluster` (per module) yields a `NetnsCluster` (`support.nodeagent.Cluster` plus `.dns`,
`.proxies`, `.node_names`): a pod `web` on the first node runs a real `python3 -m http.server 8080`
serving `WEB_BODY` from a ConfigMap volume (a pod sees none of the node's files but its volumes), behind
a Service `web` (port 80 → 8080); a pod `client` on the second node runs
nothing. Node names are unique per run (`pn<hex>-1`, `pn<hex>-2`), so the namespaces they own never meet
another cluster's; every namespace the run made is removed at teardown, and the fixture fails if one
is left. `require_root()` skips outside root (network namespaces and TAP devices need it);
`ensure_tools()` installs curl, dig, iperf3 and nsenter with apt when one is missing.
`pod_exec(cluster, pod, *argv)` runs `podnet exec POD -- ARGV`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from podnet.netns.ip import list_namespaces
from podnet.netns.names import NAME_PREFIX
from support.apiserver import ApiServerProcess
from support.dns import DnsProcess, start_dns
from support.kubeproxy import KubeProxyProcess
from support.nodeagent import AgentProcess, Cluster, free_udp_port, wait_running

WEB_BODY = "hello from a network namespace\n"
ADDRESSES = ("127.0.9.11", "127.0.9.12")


# The programs the tests run inside pods, and the Debian packages that have them.
TOOLS = {"curl": "curl", "dig": "bind9-dnsutils", "iperf3": "iperf3", "nsenter": "util-linux"}


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and TAP devices need root")


def ensure_tools() -> None:
    """Installs (apt) whichever of TOOLS is missing; root only, as the tests that use them are."""
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    install = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if install.returncode != 0:
        pytest.fail(f"could not install {', '.join(missing)}: {install.stderr[-500:]}")


@dataclass
class NetnsCluster(Cluster):
    dns: DnsProcess | None = None
    proxies: dict[str, KubeProxyProcess] = field(default_factory=dict)
    node_names: tuple[str, ...] = ()

    def namespaces(self) -> list[str]:
        """The namespaces that belong to this cluster's nodes."""
        return [n for n in list_namespaces() if any(n.startswith(f"{NAME_PREFIX}{node}-") for node in self.node_names)]


def pod_exec(cluster: Cluster, pod: str, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return cluster.cli("exec", pod, "--", *argv, timeout=timeout)


@dataclass
class NetnsNode:
    """One API server and one agent in `--pod-mode netns`, sharing `home`; `.cleaned` is what
    `podnet clean --home` answered once both were killed."""

    home: Path
    api: ApiServerProcess
    agent: AgentProcess
    cleaned: subprocess.CompletedProcess | None = None

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.api, self.home, {self.agent.name: self.agent})


@contextlib.contextmanager
def netns_node(tmp_path: Path, node: str, address: str) -> Iterator[NetnsNode]:
    """Starts a NetnsNode (root); on the way out kills its processes and cleans what they left."""
    require_root()
    home = tmp_path / "home"
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    agent = AgentProcess(node, address, home, api.kubeconfig, free_udp_port(address), extra_args=("--pod-mode", "netns"))
    started = NetnsNode(home, api, agent)
    try:
        api.start()
        agent.start()
        yield started
    finally:
        agent.kill()
        api.kill()
        started.cleaned = subprocess.run([sys.executable, "-m", "podnet", "clean", "--home", str(home)],
                                         capture_output=True, text=True, timeout=60)


def netns_pod(name: str, node: str, *, command: list[str] | None = None, args: list[str] | None = None,
              labels: dict | None = None, ports: list[dict] | None = None) -> dict:
    container: dict = {"name": "main", "image": "debian"}
    if command:
        container["command"] = command
    if args:
        container["args"] = args
    if ports:
        container["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels or {"app": name},
                     "annotations": {"podnet.io/pod-mode": "netns"}},
        "spec": {"nodeName": node, "containers": [container]},
    }


WEB_CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "www", "namespace": "default"},
                 "data": {"index.html": WEB_BODY}}


def web_pod(node: str) -> dict:
    """`python3 -m http.server` serving the ConfigMap `www` (WEB_CONFIGMAP), mounted at /www."""
    pod = netns_pod("web", node, command=["python3"],
                    args=["-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "/www"],
                    labels={"app": "web"}, ports=[{"containerPort": 8080}])
    pod["spec"]["volumes"] = [{"name": "www", "configMap": {"name": "www"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "www", "mountPath": "/www"}]
    return pod


WEB_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]},
}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_serving(cluster: Cluster, client_pod: str, url: str, timeout: float = 15.0) -> str:
    """Polls `url` with curl from `client_pod` until it answers (the server inside may still be starting)."""
    last: list[subprocess.CompletedProcess] = []

    def answered() -> str | None:
        run = pod_exec(cluster, client_pod, "curl", "-sS", "--max-time", "2", url)
        last[:] = [run]
        return run.stdout if run.returncode == 0 else None

    try:
        return wait_for(answered, timeout, f"{url} from {client_pod}", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last[0].stderr if last else ''}") from None


@pytest.fixture(scope="module")
def netns_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    require_root()
    ensure_tools()
    home = tmp_path_factory.mktemp("podnet-netns")
    api_dir = home / "apiserver"
    api_dir.mkdir()
    tag = secrets.token_hex(2)
    names = (f"pn{tag}-1", f"pn{tag}-2")
    api = ApiServerProcess(api_dir, f"sqlite:///{api_dir / 'store.db'}", controllers=True)
    cluster = NetnsCluster(api, home, {}, node_names=names)
    try:
        api.start()
        cluster.dns = start_dns(["--kubeconfig", str(api.kubeconfig)], home / "dns.log")
        port = free_udp_port(*ADDRESSES)
        for name, address in zip(names, ADDRESSES, strict=True):
            agent = AgentProcess(name, address, home, api.kubeconfig, port, extra_args=("--pod-mode", "netns"))
            cluster.agents[name] = agent
            agent.start()
            cluster.proxies[name] = KubeProxyProcess(agent, api.kubeconfig)
            cluster.proxies[name].start()

        async def create(client) -> None:
            await client.create(WEB_CONFIGMAP)
            await client.create(web_pod(names[0]))
            await client.create(netns_pod("client", names[1]))
            await client.create(WEB_SERVICE)
            for pod in ("web", "client"):
                cluster.pod_ips[pod] = (await wait_running(client, "default", pod))["status"]["podIP"]

        cluster.api_call(create)
        yield cluster
    finally:
        for proxy in cluster.proxies.values():
            with contextlib.suppress(Exception):
                proxy.kill()
        for agent in cluster.agents.values():
            agent.kill(signal.SIGTERM)  # a graceful stop removes the agent's namespaces
        if cluster.dns is not None:
            cluster.dns.kill()
        api.kill()
        left = cluster.namespaces()
        for name in left:
            subprocess.run(["ip", "netns", "delete", name], check=False)
        assert not left, f"namespaces left after the agents stopped: {left}"
