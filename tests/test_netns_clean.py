"""`podnet clean` after a crash: a SIGKILLed agent leaves its pods' namespaces and processes; clean, given
the cluster's home, removes every one of them (root)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from podnet.nodeagent.pods.netns import list_namespaces, namespace_name, namespace_pids
from support.apiserver import ApiServerProcess
from support.netns_pods import netns_pod, require_root
from support.nodeagent import AgentProcess, Cluster, free_udp_port, wait_running

pytestmark = pytest.mark.root


def test_clean_removes_what_a_killed_agent_left(tmp_path):
    require_root()
    home = tmp_path / "home"
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    node = f"pnclean-{tmp_path.name[-6:].lower().strip('_-')}"
    agent = AgentProcess(node, "127.0.9.31", home, api.kubeconfig, free_udp_port("127.0.9.31"),
                         extra_args=("--pod-mode", "netns"))
    netns = namespace_name(node, "default", "sleeper")
    try:
        api.start()
        agent.start()
        cluster = Cluster(api, home, {node: agent})
        cluster.api_call(lambda c: c.create(netns_pod("sleeper", node, command=["sleep", "300"])))
        cluster.api_call(lambda c: wait_running(c, "default", "sleeper"))
        assert netns in list_namespaces()
        assert namespace_pids(netns), "the container's process runs in the namespace"
        agent.kill()  # SIGKILL: the namespace, its process and the agent's records stay behind
        assert netns in list_namespaces() and namespace_pids(netns)
    finally:
        agent.kill()
        api.kill()
        cleaned = subprocess.run([sys.executable, "-m", "podnet", "clean", "--home", str(home)],
                                 capture_output=True, text=True, timeout=60)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"removed {netns}" in cleaned.stdout
    assert not namespace_pids(netns) and not list_namespaces().count(netns)
