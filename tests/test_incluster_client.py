"""In-cluster API access from a netns pod, the way controllers and operators get it (issue 20, item 2; root).

A `podnet up --pod-mode netns` cluster; team-a's `default` ServiceAccount may view team-a. A pod of team-a runs
a Python program with the official `kubernetes` client: `load_incluster_config()` finds the API server by
KUBERNETES_SERVICE_HOST/PORT (10.96.0.1:443, through the pod network and kube-proxy) and its credentials in
the projected volume the ServiceAccount admission gave the pod (a bound token, the cluster CA from
kube-root-ca.crt, the namespace). It lists its namespace's pods, is refused team-b's (403), and loses the API
when a NetworkPolicy denies the pod's egress — all of it, or only to the API server's endpoint (where
10.96.0.1:443 leads: policies judge the address a Service's DNAT chose), the cluster DNS still answering —
and has it again once the policy is gone. Meanwhile no command line on the host shows the pod's token.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from support.kubectl import Kubectl, podnet_up

pytestmark = pytest.mark.root

PREFIX = "127.0.153"
# Each round opens a new connection: a NetworkPolicy judges new connections, and lets established ones finish.
PROGRAM = """\
import socket, time
from kubernetes import client, config

config.load_incluster_config()
while True:
    with client.ApiClient() as api:
        pods = client.CoreV1Api(api)
        try:
            print("own:", " ".join(sorted(p.metadata.name for p in pods.list_namespaced_pod("team-a", _request_timeout=3).items)), flush=True)
        except client.ApiException as e:
            print("own refused:", e.status, flush=True)
        except Exception as e:
            print("own unreachable:", type(e).__name__, time.strftime("%T"), getattr(e, "reason", e), flush=True)
        try:
            pods.list_namespaced_pod("team-b", _request_timeout=3)
            print("other: allowed", flush=True)
        except client.ApiException as e:
            print("other refused:", e.status, e.reason, flush=True)
        except Exception as e:
            print("other unreachable:", type(e).__name__, time.strftime("%T"), getattr(e, "reason", e), flush=True)
    try:
        print("dns:", socket.getaddrinfo("kubernetes.default.svc.cluster.local", 443, proto=socket.IPPROTO_TCP)[0][4][0], flush=True)
    except OSError as e:
        print("dns failed:", e, flush=True)
    time.sleep(1)
"""
DENY_EGRESS = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: team-a}
spec:
  podSelector: {}
  policyTypes: [Egress]
"""


def _deny_api_egress(api: str, dns: str, dns_port: int) -> dict:
    """Egress anywhere but the API server's address; to that address only the DNS port, should the cluster
    DNS share it (it does, on one machine)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-api-egress", "namespace": "team-a"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [f"{api}/32"]}}]},
                {"to": [{"ipBlock": {"cidr": f"{dns}/32"}}],
                 "ports": [{"protocol": "UDP", "port": dns_port}, {"protocol": "TCP", "port": dns_port}]}]}}


def _pod(site_packages: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator", "namespace": "team-a"},
            "spec": {"containers": [{
                "name": "operator", "image": "python",
                # The system interpreter, with the client this test imports: the pod runs as an unprivileged
                # user, who cannot read the test's own interpreter under /root.
                "command": ["/usr/bin/python3", "/program/operator.py"],
                "env": [{"name": "PYTHONPATH", "value": "/site-packages"}],
                "volumeMounts": [{"name": "program", "mountPath": "/program"},
                                 {"name": "client", "mountPath": "/site-packages", "readOnly": True}]}],
                # The client is bound in from the test's own environment, wherever it is: the pod's /tmp is its
                # own, so a checkout under /tmp is not otherwise visible. A hostPath takes a privileged namespace.
                "volumes": [{"name": "program", "configMap": {"name": "operator"}},
                            {"name": "client", "hostPath": {"path": site_packages, "type": "Directory"}}]}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    with podnet_up(tmp_path_factory.mktemp("incluster"), PREFIX, nodes=1, extra_args=("--pod-mode", "netns")) as home:
        yield Kubectl(home)


def _ok(done) -> str:  # type: ignore[no-untyped-def]
    assert done.returncode == 0, done.stderr
    return done.stdout


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0,
          explain: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f": {explain()}" if explain else ""))
        time.sleep(0.5)


def test_an_operator_pod_reaches_the_api_as_its_service_account(cluster: Kubectl) -> None:
    for namespace in ("team-a", "team-b"):
        _ok(cluster.run("create", "namespace", namespace))
    _wait("team-a's default ServiceAccount and kube-root-ca.crt",
          lambda: cluster.run("get", "serviceaccount/default", "configmap/kube-root-ca.crt", "-n", "team-a").returncode == 0)
    _ok(cluster.run("label", "namespace", "team-a", "pod-security.kubernetes.io/enforce=privileged"))
    _ok(cluster.run("create", "rolebinding", "operator-view", "-n", "team-a", "--clusterrole", "view",
                    "--serviceaccount", "team-a:default"))
    program = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "operator", "namespace": "team-a"},
               "data": {"operator.py": PROGRAM}}
    _ok(cluster.run("apply", "-f", "-", input=yaml.safe_dump(program).encode()))
    site_packages = str(Path(kubernetes.__file__).resolve().parent.parent)
    _ok(cluster.run("apply", "-f", "-", input=yaml.safe_dump(_pod(site_packages)).encode()))

    # The admission gave the pod its account and the projected volume.
    spec = yaml.safe_load(_ok(cluster.run("get", "pod", "operator", "-n", "team-a", "-o", "yaml")))["spec"]
    assert spec["serviceAccountName"] == "default"
    (volume,) = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert [next(iter(source)) for source in volume["projected"]["sources"]] == [
        "serviceAccountToken", "configMap", "downwardAPI"]
    assert {"name": volume["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"} \
        in spec["containers"][0]["volumeMounts"]

    def log() -> list[str]:
        return cluster.run("logs", "operator", "-n", "team-a").stdout.splitlines()

    # Loading the official client in a fresh interpreter takes seconds on a busy machine: a generous wait.
    _wait("the operator's first answers", lambda: "own: operator" in log() and "other refused: 403 Forbidden" in log(),
          timeout=150.0, explain=log)
    assert not [line for line in log() if "unreachable" in line or line == "other: allowed"]
    account = _ok(cluster.run("exec", "operator", "-n", "team-a", "--", "cat",
                              "/var/run/secrets/kubernetes.io/serviceaccount/namespace"))
    assert account == "team-a"

    token = _ok(cluster.run("exec", "operator", "-n", "team-a", "--", "cat",
                            "/var/run/secrets/kubernetes.io/serviceaccount/token"))
    assert token.count(".") == 2
    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert token not in listing and token.split(".")[2] not in listing

    _ok(cluster.run("apply", "-f", "-", input=DENY_EGRESS.encode()))
    seen = len(log())
    _wait("the policy to cut the operator off", lambda: any(line.startswith("own unreachable: MaxRetryError") for line in log()[seen:]))
    _ok(cluster.run("delete", "networkpolicy", "deny-egress", "-n", "team-a"))
    seen = len(log())
    _wait("the operator's access to come back", lambda: "own: operator" in log()[seen:])

    api = _ok(cluster.run("get", "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes", "-o",
                          "jsonpath={.items[0].endpoints[0].addresses[0]}"))
    dns_slice = yaml.safe_load(_ok(cluster.run("get", "endpointslices", "-n", "kube-system", "-l",
                                               "kubernetes.io/service-name=kube-dns", "-o", "yaml")))["items"][0]
    dns_port = next(p["port"] for p in dns_slice["ports"] if p["protocol"] == "UDP")
    _ok(cluster.run("apply", "-f", "-", input=yaml.safe_dump(
        _deny_api_egress(api, dns_slice["endpoints"][0]["addresses"][0], dns_port)).encode()))
    seen = len(log())
    _wait("the API's own policy to cut the operator off", lambda: any(
        line.startswith("own unreachable: MaxRetryError") for line in log()[seen:]), explain=log)
    cut = next(i for i, line in enumerate(log()) if i >= seen and line.startswith("own unreachable"))
    _wait("a DNS answer while the API is cut off", lambda: "dns: 10.96.0.1" in log()[cut:], explain=log)
    _ok(cluster.run("delete", "networkpolicy", "deny-api-egress", "-n", "team-a"))
    seen = len(log())
    _wait("the operator's access to come back", lambda: "own: operator" in log()[seen:])
