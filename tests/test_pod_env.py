"""A pod's environment from ConfigMaps and Secrets, as the kubelet builds it: the pure resolution
(envFrom then env, prefixes, optional references, the kubelet's errors), and a real program in a
network-namespace pod on a real node agent (root) that sees the variables its manifest asked for."""

from __future__ import annotations

import base64
import secrets
import signal

import pytest
from podnet.nodeagent.podenv import EnvError, resolve
from support.apiserver import ApiServerProcess
from support.netns_pods import netns_pod, pod_exec, require_root, wait_for
from support.nodeagent import AgentProcess, Cluster, free_udp_port, wait_running

pytestmark = pytest.mark.host_network

ADDRESS = "127.0.105.11"

CONFIGMAPS = {"shop/app": {"data": {"MODE": "fast", "LEVEL": "3", "not a name": "x"},
                           "binaryData": {"BLOB": base64.b64encode(b"bytes").decode()}}}
SECRETS = {"shop/db": {"data": {"password": base64.b64encode(b"s3cret").decode()}}}
POD = {"metadata": {"name": "p", "namespace": "shop"}}


def test_env_from_then_env_with_references():
    container = {
        "envFrom": [{"configMapRef": {"name": "app"}}, {"secretRef": {"name": "db"}, "prefix": "DB_"}],
        "env": [{"name": "MODE", "value": "slow"},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "LEVEL_TOO", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "LEVEL"}}},
                {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}}}],
    }
    assert resolve(POD, container, CONFIGMAPS, SECRETS) == [
        ("BLOB", "bytes"), ("MODE", "slow"), ("LEVEL", "3"), ("DB_password", "s3cret"), ("PASSWORD", "s3cret"),
        ("LEVEL_TOO", "3")]


@pytest.mark.parametrize("env, message", [
    ([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}], 'configmap "absent" not found'),
    ([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}}],
     "couldn't find key user in Secret shop/db"),
])
def test_a_missing_reference_keeps_the_container_from_starting(env, message):
    with pytest.raises(EnvError, match=message):
        resolve(POD, {"env": env}, CONFIGMAPS, SECRETS)


@pytest.mark.slow
def test_a_netns_pod_program_sees_its_configmap_and_secret_env(tmp_path):
    require_root()
    (tmp_path / "apiserver").mkdir()
    api = ApiServerProcess(tmp_path / "apiserver", f"sqlite:///{tmp_path / 'store.db'}", controllers=True)
    node = f"pe{secrets.token_hex(2)}-1"
    agent = AgentProcess(node, ADDRESS, tmp_path, api.kubeconfig, free_udp_port(ADDRESS),
                         extra_args=("--pod-mode", "netns"))
    cluster = Cluster(api, tmp_path, {node: agent})

    def written(pod: str, path: str) -> str | None:
        """What the pod's program wrote to `path` in the pod's own /tmp, read as kubectl exec would."""
        done = pod_exec(cluster, pod, "cat", path)
        return done.stdout if done.returncode == 0 else None

    try:
        api.start()
        agent.start()
        pod = netns_pod("reader", node, command=["sh", "-c", "env > /tmp/env.tmp && mv /tmp/env.tmp /tmp/env.txt; sleep 600"])
        pod["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "app-config"}}]
        pod["spec"]["containers"][0]["env"] = [
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "GREETING", "value": "hello"}]

        async def create(client) -> None:
            await client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "app-config", "namespace": "default"},
                                 "data": {"MODE": "fast", "LEVEL": "3"}})
            await client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
                                 "stringData": {"password": "s3cret"}})
            await client.create(pod)
            await wait_running(client, "default", "reader", timeout=30)

        cluster.api_call(create)
        text = wait_for(lambda: written("reader", "/tmp/env.txt"), 15, "the pod's program to write its env")
        env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert (env["MODE"], env["LEVEL"], env["DB_PASSWORD"], env["GREETING"]) == ("fast", "3", "s3cret", "hello")

        # A ConfigMap that does not exist yet: the container waits, as the kubelet's does, then starts.
        late = netns_pod("late", node, command=["sh", "-c", "echo $LATE > /tmp/late.tmp && mv /tmp/late.tmp /tmp/late.txt; "
                                                            "sleep 600"])
        late["spec"]["containers"][0]["env"] = [
            {"name": "LATE", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "value"}}}]

        async def waiting_state(client) -> dict:
            pod = await client.get("pods", "late", "default")
            statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
            return statuses[0].get("state") or {}

        cluster.api_call(lambda client: client.create(late))
        state = wait_for(lambda: cluster.api_call(waiting_state).get("waiting"), 15, "the container to wait")
        assert state == {"reason": "CreateContainerConfigError", "message": 'configmap "later" not found'}
        assert written("late", "/tmp/late.txt") is None
        cluster.api_call(lambda client: client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                                       "metadata": {"name": "later", "namespace": "default"},
                                                       "data": {"value": "arrived"}}))
        assert wait_for(lambda: written("late", "/tmp/late.txt"), 15, "the waiting container") == "arrived\n"
    finally:
        agent.kill(signal.SIGTERM)
        api.kill()
