"""Two tenants' pods whose names once joined to one network namespace (issue 23, item 6; root).

Namespace `a` / pod `b-c` and namespace `a-b` / pod `c` were both `podnet-<node>-a-b-c`: creating the
second deleted the first's namespace with its processes. Against a real API server and a real node agent
in `--pod-mode netns`, both run side by side, each in its own kernel namespace with its own process.
"""

from __future__ import annotations

import secrets

import pytest
from support.netns_pods import netns_node, netns_pod, wait_for
from support.nodeagent import wait_running

from podnet.netns.ip import list_namespaces, namespace_pids
from podnet.netns.names import namespace_name

pytestmark = pytest.mark.root

ADDRESS = "127.0.110.11"
TENANTS = (("a", "b-c"), ("a-b", "c"))


def test_pods_whose_joined_names_were_equal_run_side_by_side(tmp_path):
    node = f"pnten-{secrets.token_hex(3)}"
    names = [namespace_name(node, namespace, pod) for namespace, pod in TENANTS]
    assert names[0] != names[1]
    with netns_node(tmp_path, node, ADDRESS) as started:
        cluster = started.cluster
        for namespace, pod in TENANTS:
            manifest = netns_pod(pod, node, command=["sleep", "300"])
            manifest["metadata"]["namespace"] = namespace

            async def create(client, namespace=namespace, pod=pod, manifest=manifest):
                await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                await client.create(manifest, namespace)
                return await wait_running(client, namespace, pod, timeout=30)

            cluster.api_call(create)
        assert cluster.api_call(_phases) == {"a/b-c": "Running", "a-b/c": "Running"}
        existing = list_namespaces()
        for name in names:
            assert name in existing
            # The launcher enters the namespace as it starts, a moment after the pod is reported Running.
            wait_for(lambda name=name: namespace_pids(name), 10, f"{name}: the pod's process in its own namespace")
        assert not set(namespace_pids(names[0])) & set(namespace_pids(names[1]))
    assert started.cleaned.returncode == 0, started.cleaned.stderr
    for name in names:
        assert f"removed {name}" in started.cleaned.stdout
        assert name not in list_namespaces()


async def _phases(client) -> dict[str, str]:
    phases = {}
    for namespace, pod in TENANTS:
        obj = await client.get("pods", pod, namespace)
        phases[f"{namespace}/{pod}"] = obj["status"]["phase"]
    return phases
