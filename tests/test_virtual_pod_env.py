"""A virtual pod shows the environment its manifest gives it from ConfigMaps and Secrets at `/env`, as a pod
whose program prints its environment would, on a real one-node cluster: asked for from another pod with
`podnet exec -- http`. While a ConfigMap it names is missing, the kubelet's event says so and it has no
variables; once the ConfigMap and Secret are written it has them, and they stay what they were when it got
them (a container's environment is fixed when it starts) when the ConfigMap changes later."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from support.kubectl import PODNET, podnet_environment
from support.local_cluster import AGNHOST, eventually

pytestmark = pytest.mark.slow

PREFIX = "127.0.230"
NAMESPACE = "cfg"
APP = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": NAMESPACE, "labels": {"role": "app"}},
       "spec": {"containers": [{
           "name": "app", "image": AGNHOST, "ports": [{"containerPort": 80}],
           "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "APP_"}],
           "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                   {"name": "LITERAL", "value": "plain"}]}]}}
CLIENT = {"apiVersion": "v1", "kind": "Pod",
          "metadata": {"name": "client", "namespace": NAMESPACE, "labels": {"role": "client"}},
          "spec": {"containers": [{"name": "client", "image": AGNHOST}]}}


async def _env(cluster, ip: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [*PODNET, "exec", f"{NAMESPACE}/client", "--home", str(cluster.home), "--", "http",
                         f"http://{ip}/env"], capture_output=True, text=True, timeout=60, env=podnet_environment())
    assert done.returncode == 0, done
    return done.stdout


async def test_a_virtual_pod_lists_its_configmap_and_secret_variables_at_env(local_cluster):
    cluster = await local_cluster(PREFIX, nodes=1)
    await cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, APP, CLIENT)
    (app,) = await cluster.wait_running(NAMESPACE, "role=app", 1, timeout=60)
    await cluster.wait_running(NAMESPACE, "role=client", 1, timeout=60)
    ip = app["status"]["podIP"]

    async def failed_event() -> dict | None:
        events = (await cluster.client.list("events", NAMESPACE)).get("items") or []
        return next((e for e in events if e.get("reason") == "Failed"
                     and e["involvedObject"].get("name") == "app"), None)

    event = await eventually(failed_event, 30, "the kubelet's Failed event for the missing ConfigMap")
    assert event["message"] == 'Error: configmap "settings" not found'
    assert await _env(cluster, ip) == ""

    await cluster.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": NAMESPACE},
         "data": {"MODE": "fast"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NAMESPACE},
         "stringData": {"password": "s3cret"}})

    async def listed() -> str | None:
        env = await _env(cluster, ip)
        return env or None

    env = (await eventually(listed, 30, "the variables at /env")).splitlines()
    assert env[:3] == ["APP_MODE=fast", "PASSWORD=s3cret", "LITERAL=plain"]
    kubernetes = await cluster.client.get("services", "kubernetes", "default")
    assert f"KUBERNETES_SERVICE_HOST={kubernetes['spec']['clusterIP']}" in env[3:]

    settings = await cluster.client.get("configmaps", "settings", NAMESPACE)
    settings["data"]["MODE"] = "slow"
    await cluster.client.replace(settings)
    await asyncio.sleep(1.0)  # the agent has seen the change
    assert (await _env(cluster, ip)).splitlines()[:3] == env[:3]
