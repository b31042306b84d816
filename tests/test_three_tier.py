"""An ordinary three-tier app's manifest, applied unchanged by `podnet apply` into one namespace and by
`kubectl apply -f` into another, on a two-node cluster started as `podnet up` starts it: a ConfigMap, a
Secret, a StatefulSet database behind a headless Service, an API Deployment (real programs in network
namespaces) and a web Deployment, a DaemonSet log agent, a Job that runs once, an Ingress that routes
`/api` and `/` to the two Services, and a CronJob. Checked: the database's pods are db-0 and db-1 and
resolve by their own DNS names; one log agent per node, following a node that is killed and restarted;
the Job completes; the Ingress routes from the host to the right Service's pods, whose programs see the
ConfigMap's and the Secret's values in their environment and the Secret as a file of its volume (the web
tier's virtual pods list them at /env); the CronJob runs on its schedule; a label
removed from the manifest leaves the object when it is applied again."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess

import pytest
import yaml
from support.kubectl import PODNET, Kubectl, podnet_environment
from support.local_cluster import AGNHOST, eventually
from support.netns_pods import require_root
from support.plainhttp import http_get

from podnet.cluster.supervisor import ClusterState

pytestmark = [pytest.mark.slow, pytest.mark.host_network]

PREFIX = "127.0.140"
GRACE = 2.0  # seconds without heartbeats before a node is NotReady

# The API tier answers every request with what its environment says: a real program in the pod.
API_SERVER = """
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("/etc/db/password") as secret:
            matches = secret.read() == os.environ["DB_PASSWORD"]
        body = (f"api greeting={os.environ['GREETING']} secret-length={len(os.environ['DB_PASSWORD'])} "
                f"secret-file-matches={matches} path={self.path}\\n")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
http.server.HTTPServer(("", 8080), Handler).serve_forever()
"""


def _workload(kind: str, name: str, spec: dict, template: dict, labels: dict | None = None) -> dict:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "labels": {**labels, "tier": name}},
            "spec": {**spec, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, **template.pop("metadata", {})}, "spec": template}}}


NETNS = {"annotations": {"podnet.io/pod-mode": "netns"}}
MANIFEST = [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"}, "data": {"GREETING": "hello"}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-credentials"}, "type": "Opaque",
     "stringData": {"password": "s3cret-pass"}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
     "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}},
    _workload("StatefulSet", "db", {"serviceName": "db", "replicas": 2},
              {"containers": [{"name": "db", "image": AGNHOST, "ports": [{"containerPort": 5432}]}]}),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
     "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
    _workload("Deployment", "api", {"replicas": 1}, {
        "metadata": NETNS,
        "containers": [{"name": "api", "image": "python:3.12-slim", "command": ["python3", "-c", API_SERVER],
                        "ports": [{"containerPort": 8080}],
                        "envFrom": [{"configMapRef": {"name": "app-config"}}],
                        "env": [{"name": "DB_PASSWORD",
                                 "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}}}],
                        "volumeMounts": [{"name": "credentials", "mountPath": "/etc/db", "readOnly": True}]}],
        "volumes": [{"name": "credentials", "secret": {"secretName": "db-credentials"}}]}),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]}},
    _workload("Deployment", "web", {"replicas": 2},
              {"containers": [{"name": "web", "image": AGNHOST, "ports": [{"containerPort": 80}],
                               "envFrom": [{"configMapRef": {"name": "app-config"}}],
                               "env": [{"name": "DB_PASSWORD", "valueFrom": {
                                   "secretKeyRef": {"name": "db-credentials", "key": "password"}}}]}]}),
    _workload("DaemonSet", "log-agent", {},
              {"containers": [{"name": "agent", "image": AGNHOST}]}),
    {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
     "spec": {"backoffLimit": 2, "template": {"metadata": NETNS, "spec": {
         "restartPolicy": "Never", "containers": [{"name": "migrate", "image": "busybox",
                                                   "command": ["sh", "-c", "echo migrated"]}]}}}},
    {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
     "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
         "restartPolicy": "OnFailure", "containers": [{"name": "report", "image": "busybox"}]}}}}}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "shop"},
     "spec": {"rules": [{"http": {"paths": [
         {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"name": "http"}}}},
         {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}},
]
APPLIED = ["configmap/app-config", "secret/db-credentials", "service/db", "statefulset.apps/db", "service/api",
           "deployment.apps/api", "service/web", "deployment.apps/web", "daemonset.apps/log-agent", "job.batch/migrate",
           "cronjob.batch/report", "ingress.networking.k8s.io/shop"]


async def _podnet(home, *args: str, input: str | None = None):
    return await asyncio.to_thread(subprocess.run, [*PODNET, *args, "--home", str(home)], input=input,
                                   capture_output=True, text=True, timeout=120, env=podnet_environment())


async def _check_app(cluster, kubectl: Kubectl, namespace: str) -> None:
    """What the issue asks of the app in `namespace`: the database's names, a log agent per node, the Job,
    the Ingress."""
    pods = await cluster.wait_running(namespace, "app=db", 2, timeout=90)
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1"]
    for pod in pods:
        fqdn = f"{pod['metadata']['name']}.db.{namespace}.svc.cluster.local"
        ip = pod["status"]["podIP"]
        await eventually(lambda fqdn=fqdn, ip=ip: _resolves(cluster, fqdn, ip), 30, f"{fqdn} resolves to {ip}")

    async def job_complete() -> dict | None:
        job = await cluster.client.get("jobs", "migrate", namespace)
        done = [c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
        return job if "Complete" in done else None

    daemons = await cluster.wait_running(namespace, "app=log-agent", 2, timeout=60)
    assert sorted(p["spec"]["nodeName"] for p in daemons) == ["node-1", "node-2"], "one log agent per node"

    job = await eventually(job_complete, 90, f"job {namespace}/migrate complete")
    assert job["status"]["succeeded"] == 1

    web = {p["metadata"]["name"] for p in await cluster.wait_running(namespace, "app=web", 2, timeout=60)}
    await cluster.wait_running(namespace, "app=api", 1, timeout=60)
    base = f"http://{cluster.topo.host('ingress')}:{cluster.topo.ingress_port}"

    async def routed(path: str, check) -> tuple[int, str] | None:
        answer = await asyncio.to_thread(http_get, base + path)
        return answer if check(answer) else None

    status, body = await eventually(lambda: routed("/api/orders?page=2", lambda a: a[0] == 200), 60,
                                    "the Ingress routes /api to the api Service")
    assert body == "api greeting=hello secret-length=11 secret-file-matches=True path=/api/orders?page=2\n"
    status, body = await eventually(lambda: routed("/hostname", lambda a: a[1] in web), 60,
                                    "the Ingress routes / to the web Service")
    answered = {(await routed("/hostname", lambda a: True))[1] for _ in range(4)}
    assert answered == web, "round robin over both web pods"
    # The web tier's virtual pods show the same ConfigMap and Secret values at /env.
    status, body = await routed("/env", lambda a: True)
    assert status == 200 and body.splitlines()[:2] == ["GREETING=hello", "DB_PASSWORD=s3cret-pass"], body


async def _resolves(cluster, fqdn: str, ip: str) -> bool:
    return cluster.dns(fqdn) == [ip]


async def test_a_three_tier_app_applies_unchanged_through_podnet_and_kubectl(local_cluster, tmp_path):
    require_root()
    cluster = await local_cluster(PREFIX, nodes=2, node_grace_period=GRACE)
    kubectl = Kubectl(cluster.home)
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(yaml.safe_dump_all(copy.deepcopy(MANIFEST)))
    for namespace in ("tier-a", "tier-b"):
        made = await kubectl.arun("create", "namespace", namespace)
        assert made.returncode == 0, made

    applied = await _podnet(cluster.home, "apply", "-f", str(manifest), "-n", "tier-a")
    assert applied.returncode == 0, applied
    assert applied.stdout.splitlines() == [f"{ref} created" for ref in APPLIED]

    ingress_class = json.loads((await kubectl.arun("get", "ingressclass", "podnet", "-o", "json")).stdout)
    assert ingress_class["spec"]["controller"] == "podnet.io/ingress"
    await _check_app(cluster, kubectl, "tier-a")
    address = cluster.topo.host("ingress")

    async def ingress_row() -> str | None:
        out = (await kubectl.arun("get", "ingress", "-n", "tier-a")).stdout
        return out if address in out else None

    out = await eventually(ingress_row, 30, "the Ingress's address in its status")
    assert out.splitlines()[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert out.splitlines()[1].split()[:5] == ["shop", "podnet", "*", address, "80"]

    # A killed node keeps its log agent pod (it tolerates the unreachable node) and has it ready again once
    # restarted.
    async def ds_ready(count: int) -> dict | None:
        status = (await cluster.client.get("daemonsets", "log-agent", "tier-a")).get("status") or {}
        return status if status.get("numberReady") == count and status.get("desiredNumberScheduled") == 2 else None

    killed = await _podnet(cluster.home, "kill", "node-2/agent")
    assert killed.returncode == 0, killed
    await cluster.wait_dead("node-2/agent")
    await eventually(lambda: ds_ready(1), GRACE + 30, "the log agent on the killed node not ready")
    started = await _podnet(cluster.home, "start", "node-2/agent")
    assert started.returncode == 0, started
    restarted = ClusterState.load(cluster.home).process("node-2/agent")  # the fixture stops what its state names
    cluster.process("node-2/agent").pid, cluster.process("node-2/agent").pid_start = restarted.pid, restarted.pid_start
    await eventually(lambda: ds_ready(2), 60, "both log agents ready again")
    after = await cluster.wait_running("tier-a", "app=log-agent", 2, timeout=30)
    assert sorted(p["spec"]["nodeName"] for p in after) == ["node-1", "node-2"]

    # The CronJob runs on its minute: a Job named after the scheduled minute, owned by the CronJob.
    async def cron_ran() -> dict | None:
        cronjob = await cluster.client.get("cronjobs", "report", "tier-a")
        return cronjob if (cronjob.get("status") or {}).get("lastScheduleTime") else None

    cronjob = await eventually(cron_ran, 70, "the CronJob's first run")
    jobs = (await cluster.client.list("jobs", "tier-a")).get("items") or []
    runs = [j for j in jobs if (j["metadata"].get("ownerReferences") or [{}])[0].get("kind") == "CronJob"]
    assert runs and all(j["metadata"]["name"].startswith("report-") for j in runs)
    assert runs[0]["metadata"]["ownerReferences"][0]["uid"] == cronjob["metadata"]["uid"]

    # The same file through kubectl, into the other namespace; the first app's Ingress gives up the paths
    # both claim (the older Ingress would keep them).
    applied = await kubectl.arun("apply", "-f", str(manifest), "-n", "tier-b")
    assert applied.returncode == 0, applied
    assert applied.stdout.splitlines() == [f"{ref} created" for ref in APPLIED]
    deleted = await kubectl.arun("delete", "ingress", "shop", "-n", "tier-a")
    assert deleted.returncode == 0, deleted
    await _check_app(cluster, kubectl, "tier-b")

    # A label taken out of the manifest leaves the object when the manifest is applied again.
    without = copy.deepcopy(MANIFEST)
    del next(d for d in without if d["kind"] == "Deployment" and d["metadata"]["name"] == "web")["metadata"]["labels"]["tier"]
    manifest.write_text(yaml.safe_dump_all(without))
    again = await _podnet(cluster.home, "apply", "-f", str(manifest), "-n", "tier-a")
    assert again.returncode == 0, again
    assert "deployment.apps/web configured" in again.stdout.splitlines()
    labels = (await cluster.client.get("deployments", "web", "tier-a"))["metadata"]["labels"]
    assert labels == {"app": "web"}
