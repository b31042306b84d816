"""`podnet clean` after a crash: a SIGKILLed agent leaves its pods' namespaces and processes; clean, given
the cluster's home, removes every one of them (root)."""

from __future__ import annotations

import pytest
from support.netns_pods import netns_node, netns_pod, wait_for
from support.nodeagent import wait_running

from podnet.netns.ip import list_namespaces, namespace_pids
from podnet.netns.names import namespace_name

pytestmark = pytest.mark.root


def test_clean_removes_what_a_killed_agent_left(tmp_path):
    node = f"pnclean-{tmp_path.name[-6:].lower().strip('_-')}"
    netns = namespace_name(node, "default", "sleeper")
    with netns_node(tmp_path, node, "127.0.9.31") as started:
        cluster = started.cluster
        cluster.api_call(lambda c: c.create(netns_pod("sleeper", node, command=["sleep", "300"])))
        cluster.api_call(lambda c: wait_running(c, "default", "sleeper"))
        assert netns in list_namespaces()
        # The launcher enters the namespace as it starts, a moment after the pod is reported Running.
        wait_for(lambda: namespace_pids(netns), 10, "the container's process in the namespace")
        started.agent.kill()  # SIGKILL: the namespace, its process and the agent's records stay behind
        assert netns in list_namespaces() and namespace_pids(netns)
    assert started.cleaned.returncode == 0, started.cleaned.stderr
    assert f"removed {netns}" in started.cleaned.stdout
    assert not namespace_pids(netns) and not list_namespaces().count(netns)
