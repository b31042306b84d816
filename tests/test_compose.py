"""The docker-compose cluster: the committed file is what the topology renders, the in-container launcher
starts, watches and stops a host's processes, and (root, with a Docker engine) the real multi-host cluster
carries cross-host pod traffic, a Service, DNS and a policy, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from podnet import kubeconfig
from podnet.cluster import compose, topology

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
SCRIPTS = REPO / "deploy" / "compose"
PODNET = [sys.executable, "-m", "podnet"]


def test_committed_compose_file_is_a_fresh_render():
    fresh = compose.to_yaml(compose.render(compose.build_topology()))
    assert COMPOSE_FILE.read_text() == fresh, "deploy/docker-compose.yml is stale: run `podnet compose render -o deploy/docker-compose.yml`"


@pytest.mark.parametrize("store, backend", [("etcd", "vxlan"), ("sqlite", "bgp")])
def test_each_container_runs_its_hosts_processes_with_the_topologys_argv(store, backend):
    topo = compose.build_topology(3, store=store, backend=backend)
    document = yaml.safe_load(compose.to_yaml(compose.render(topo)))
    services = document["services"]
    started: list[tuple[str, tuple[str, ...]]] = []
    for name, service in services.items():
        command = service["command"]
        assert command[:3] == ["podnet", "compose", "launch"]
        processes = [json.loads(arg) for arg in command if arg.startswith("{")]
        assert all(p["name"].split("/")[0] == name for p in processes)
        started += [(p["name"], tuple(p["argv"])) for p in processes]
        assert service["networks"]["podnet"]["ipv4_address"] == compose.container_address(topo, name)
    assert started == [(c.name, c.argv) for c in topology.components(topo)]
    assert ("etcd" in services) == (store == "etcd")
    node_processes = [json.loads(a)["name"] for a in services["node-2"]["command"] if a.startswith("{")]
    expected = ["node-2/agent", "node-2/kube-proxy"] + (["node-2/bgp"] if backend == "bgp" else [])
    assert node_processes == expected
    assert services["node-2"]["volumes"] == ["${PODNET_COMPOSE_HOME:-./.home}/pki:/var/lib/podnet/pki:ro",
                                             "${PODNET_COMPOSE_HOME:-./.home}/nodes/node-2:/var/lib/podnet/nodes/node-2"]
    # Every container reads the credentials that `podnet compose credentials` made on the host.
    assert all("${PODNET_COMPOSE_HOME:-./.home}/pki:/var/lib/podnet/pki:ro" in s["volumes"] for s in services.values())
    addresses = [s["networks"]["podnet"]["ipv4_address"] for s in services.values()]
    assert len(set(addresses)) == len(addresses)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _web_server(name: str, port: int) -> str:
    return json.dumps({"name": name, "external": True, "health": {"http": f"http://127.0.0.1:{port}/"},
                       "argv": [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]})


def _pids_listening(port: int) -> list[int]:
    out = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return [int(pid) for pid in re.findall(r"pid=(\d+)", out)]


def _launch(*processes: str, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([*PODNET, "compose", "launch", "--timeout", "20", *processes],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)


def _wait_healthy(launcher: subprocess.Popen, name: str) -> list[str]:
    """Reads the launcher's log until it reports `name` healthy; the lines read so far."""
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if f"{name} is healthy" in line:
            return lines
    raise AssertionError(f"the launcher ended before {name} was healthy:\n{''.join(lines)}")


def test_launcher_stops_the_host_when_one_process_dies_and_restarts_none(tmp_path):
    first, second = _free_port(), _free_port()
    launcher = _launch(_web_server("h/first", first), _web_server("h/second", second), tmp_path=tmp_path)
    try:
        _wait_healthy(launcher, "h/second")
        os.kill(_pids_listening(second)[0], signal.SIGKILL)
        output, _ = launcher.communicate(timeout=20)
        assert launcher.returncode == 128 + signal.SIGKILL
        assert "h/second was killed by signal 9" in output
        assert not _pids_listening(first) and not _pids_listening(second)
    finally:
        launcher.kill()
        launcher.wait()


def test_launcher_stops_every_process_on_sigterm(tmp_path):
    first, second = _free_port(), _free_port()
    launcher = _launch(_web_server("h/first", first), _web_server("h/second", second), tmp_path=tmp_path)
    try:
        _wait_healthy(launcher, "h/second")
        launcher.send_signal(signal.SIGTERM)
        launcher.communicate(timeout=20)
        assert launcher.returncode == 0
        assert not _pids_listening(first) and not _pids_listening(second)
    finally:
        launcher.kill()
        launcher.wait()


def test_launcher_refuses_a_process_that_is_not_json(tmp_path):
    result = subprocess.run([*PODNET, "compose", "launch", "nodeagent --name x"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=30)
    assert result.returncode == 1 and "not a process description" in result.stderr


# --- The real cluster (root, a Docker engine) --------------------------------------------------------

CHECK_NAMESPACE = "compose-check"
MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {CHECK_NAMESPACE}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {CHECK_NAMESPACE}, labels: {{app: client}}}}
spec:
  nodeName: node-1
  containers: [{{name: agnhost, image: agnhost, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {CHECK_NAMESPACE}, labels: {{app: web}}}}
spec:
  nodeName: node-2
  containers: [{{name: agnhost, image: agnhost, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {CHECK_NAMESPACE}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""
DENY_WEB = f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-deny-ingress, namespace: {CHECK_NAMESPACE}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Ingress]
"""
PROJECT_LABEL = "label=com.docker.compose.project=podnet"


def _leftovers() -> str:
    containers = subprocess.run(["docker", "ps", "-aq", "--filter", PROJECT_LABEL], capture_output=True, text=True)
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", PROJECT_LABEL], capture_output=True, text=True)
    return (containers.stdout + networks.stdout).strip()


class ComposeCluster:
    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env

    def podnet(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*PODNET, *args], input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=timeout)

    def script(self, name: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPTS / name)], capture_output=True, text=True, env=self.env, timeout=timeout)

    def until(self, command, *, succeeds: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Runs `command()` until its exit status says it succeeded (or failed, with succeeds=False)."""
        deadline = time.monotonic() + timeout
        while True:
            result = command()
            if (result.returncode == 0) == succeeds or time.monotonic() > deadline:
                return result
            time.sleep(1.0)


@pytest.fixture(scope="module")
def compose_cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the docker-compose cluster needs root to start a Docker engine")
    engine = subprocess.run([str(SCRIPTS / "engine.sh")], capture_output=True, text=True, timeout=600)
    if engine.returncode != 0:
        pytest.skip(f"no Docker engine could be started here: {engine.stderr.strip()[-500:]}")
    dockerd = int(engine.stdout.split()[1]) if engine.stdout.startswith("started") else None
    home = tmp_path_factory.mktemp("compose-home")
    env = {k: v for k, v in os.environ.items() if k not in ("PODNET_SERVER", "PODNET_TOKEN", "KUBECONFIG")}
    env |= {"PODNET_COMPOSE_HOME": str(home), "PODNET_HOME": str(home), "PODNET": f"{sys.executable} -m podnet",
            "PYTHON": sys.executable}
    cluster = ComposeCluster(home, env)
    try:
        cluster.script("down.sh", timeout=120)  # whatever an earlier run left
        started = time.monotonic()
        up = cluster.script("up.sh", timeout=900)
        assert up.returncode == 0, f"compose up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        print(f"compose cluster up in {time.monotonic() - started:.1f}s")
        applied = cluster.podnet("apply", "-f", "-", stdin=MANIFESTS)
        assert applied.returncode == 0, applied.stderr
        yield cluster
    finally:
        cluster.script("down.sh", timeout=120)
        if dockerd:
            os.kill(dockerd, signal.SIGTERM)


def _pod_ip(cluster: ComposeCluster, name: str) -> str:
    def running() -> subprocess.CompletedProcess:
        return cluster.podnet("get", "pod", name, "-n", CHECK_NAMESPACE, "-o", "json")

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = running()
        if result.returncode == 0:
            pod = json.loads(result.stdout)
            if pod.get("status", {}).get("phase") == "Running" and pod["status"].get("podIP"):
                return pod["status"]["podIP"]
        time.sleep(1.0)
    raise AssertionError(f"pod {name} not Running with an IP: {result.stdout} {result.stderr}")


def _http(cluster: ComposeCluster, url: str) -> subprocess.CompletedProcess:
    return cluster.podnet("exec", "-n", CHECK_NAMESPACE, "client", "--", "http", url)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_pod_traffic_crosses_hosts(compose_cluster):
    web = _pod_ip(compose_cluster, "web")
    client = _pod_ip(compose_cluster, "client")
    result = compose_cluster.until(lambda: _http(compose_cluster, f"http://{web}:8080/hostname"))
    assert result.returncode == 0 and result.stdout.strip() == "web", result.stderr
    # The source pod IP is preserved across the VXLAN hop: no NAT between pods.
    result = _http(compose_cluster, f"http://{web}:8080/clientip")
    assert result.stdout.strip().rsplit(":", 1)[0] == client


@pytest.mark.root
@pytest.mark.slow
def test_service_reaches_its_pod_on_another_host(compose_cluster):
    _pod_ip(compose_cluster, "web")
    service = json.loads(compose_cluster.podnet("get", "svc", "web", "-n", CHECK_NAMESPACE, "-o", "json").stdout)
    cluster_ip = service["spec"]["clusterIP"]
    result = compose_cluster.until(lambda: _http(compose_cluster, f"http://{cluster_ip}/hostname"))
    assert result.returncode == 0 and result.stdout.strip() == "web", result.stderr


@pytest.mark.root
@pytest.mark.slow
def test_cluster_dns_in_its_container_answers_the_host(compose_cluster):
    service = json.loads(compose_cluster.podnet("get", "svc", "web", "-n", CHECK_NAMESPACE, "-o", "json").stdout)
    dig = compose_cluster.until(lambda: compose_cluster.podnet(
        "dig", f"web.{CHECK_NAMESPACE}.svc.cluster.local", "--server", f"{compose.PUBLISH_ADDRESS}:1053"))
    assert dig.returncode == 0 and service["spec"]["clusterIP"] in dig.stdout, dig.stdout + dig.stderr


@pytest.mark.root
@pytest.mark.slow
def test_a_pod_reaches_a_service_on_another_host_by_name(compose_cluster):
    _pod_ip(compose_cluster, "web")
    # A pod resolves the Service's short name through the cluster DNS and its namespace's search path.
    result = compose_cluster.until(lambda: _http(compose_cluster, "http://web/hostname"))
    assert result.returncode == 0 and result.stdout.strip() == "web", result.stderr


@pytest.mark.root
@pytest.mark.slow
def test_a_denying_policy_stops_cross_host_traffic(compose_cluster):
    web = _pod_ip(compose_cluster, "web")
    assert compose_cluster.until(lambda: _http(compose_cluster, f"http://{web}:8080/hostname")).returncode == 0
    applied = compose_cluster.podnet("apply", "-f", "-", stdin=DENY_WEB)
    assert applied.returncode == 0, applied.stderr
    try:
        connect = compose_cluster.until(lambda: compose_cluster.podnet(
            "exec", "-n", CHECK_NAMESPACE, "client", "--", "connect", f"{web}:8080", "--timeout", "2"), succeeds=False)
        assert connect.returncode == 1 and "timed out" in connect.stderr, connect.stdout + connect.stderr
    finally:
        compose_cluster.podnet("delete", "networkpolicy", "web-deny-ingress", "-n", CHECK_NAMESPACE)
    assert compose_cluster.until(lambda: _http(compose_cluster, f"http://{web}:8080/hostname")).returncode == 0


@pytest.mark.root
@pytest.mark.slow
def test_compose_down_leaves_nothing_even_after_a_crash(compose_cluster):
    # A host crashes (its container is killed), then the cluster is taken down: nothing may be left.
    killed = subprocess.run(["docker", "kill", f"{compose.CONTAINER_PREFIX}node-3"], capture_output=True, text=True)
    assert killed.returncode == 0, killed.stderr
    down = compose_cluster.script("down.sh", timeout=120)
    assert down.returncode == 0, down.stderr
    assert _leftovers() == ""
    assert not compose_cluster.home.exists()


def test_compose_credentials_cover_every_container_and_the_published_port(tmp_path):
    made = subprocess.run([*PODNET, "compose", "credentials", "--home", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    argvs = [json.loads(a)["argv"] for s in services.values() for a in s["command"] if a.startswith("{")]
    # Every file a container's process is given under /var/lib/podnet/pki was made on the host.
    named = {arg for argv in argvs for arg in argv if arg.startswith(str(compose.CONTAINER_HOME / "pki"))}
    assert named and all((tmp_path / Path(p).relative_to(compose.CONTAINER_HOME)).is_file() for p in named)
    serving = x509.load_pem_x509_certificate((tmp_path / "pki" / "apiserver.crt").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"198.51.100.3", "127.0.0.1", "10.96.0.1"} <= {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    host = kubeconfig.load(tmp_path / "kubeconfig")
    assert host.server == "https://127.0.0.1:6443" and host.tls.cert_pem and host.tls.ca_pem
    agent = kubeconfig.load(tmp_path / "pki" / "node-1_agent.kubeconfig")
    assert agent.server == "https://198.51.100.3:6443" and agent.token and agent.tls.ca_pem == host.tls.ca_pem
