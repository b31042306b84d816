"""kubectl, unchanged, against a cluster that `podnet up` started: TLS with the cluster CA, the admin client
certificate of the kubeconfig it wrote, tokens from the token file; and what kubectl prints when the
credential is wrong (401) or not allowed (403). No process shows a secret on its command line, and every key
file is its owner's alone."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.kubectl import KUBECTL_MISSING

from podnet import kubeconfig, pki
from podnet.cluster import credentials
from podnet.cluster.supervisor import ClusterState

PREFIX = "127.0.60"
PODNET = [sys.executable, "-m", "podnet"]
UNAUTHORIZED = "error: You must be logged in to the server (Unauthorized)\n"

pytestmark = pytest.mark.skipif(KUBECTL_MISSING, reason="kubectl is not on PATH")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("kubectl-tls")
    env = {k: v for k, v in os.environ.items() if k not in ("PODNET_SERVER", "PODNET_TOKEN", "KUBECONFIG")}
    up = subprocess.run([*PODNET, "up", "--nodes", "2", "--prefix", PREFIX, "--lb-pool", f"{PREFIX}.128/26",
                         "--home", str(home)], capture_output=True, text=True, timeout=180, env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # As for a user who has used kubectl with this cluster before: it knows the API groups.
        warm = kubectl(home / "kubeconfig", "api-resources", cache=home / "kube-cache")
        assert warm.returncode == 0, warm.stderr
        yield home
    finally:
        subprocess.run([*PODNET, "down", "--home", str(home)], capture_output=True, timeout=120, env=env)


def kubectl(kubeconfig_path: Path, *args: str, cache: Path) -> subprocess.CompletedProcess:
    """kubectl with its discovery cache in `cache`: what it prints for a refused credential depends on whether
    it knows the server's API groups already (as against kube-apiserver), and another cluster on the same
    address earlier (another test run) must not answer for this one."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"KUBECACHEDIR": str(cache)}
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig_path), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def _kubeconfig_like_admin(home: Path, path: Path, user: str, **credential: object) -> Path:
    """A kubeconfig for the same server and CA as the admin's, with another credential."""
    admin = kubeconfig.load(home / "kubeconfig")
    path.write_text(kubeconfig.render(admin.server, admin.tls.ca_pem, user, **credential))
    return path


def _client_certificate(home: Path, user: str, groups: list[str]) -> pki.KeyPair:
    ca_dir = credentials.pki_dir(home)
    ca = pki.KeyPair((ca_dir / "ca.crt").read_bytes(), (ca_dir / "ca.key").read_bytes())
    return pki.make_client(ca, user, groups, datetime.datetime.now(datetime.UTC))


def test_kubectl_works_unchanged_with_the_kubeconfig_podnet_up_wrote(home):
    nodes = kubectl(home / "kubeconfig", "get", "nodes", "-o", "wide", cache=home / "kube-cache")
    assert nodes.returncode == 0, nodes.stderr
    assert nodes.stdout.startswith("NAME") and {"node-1", "node-2"} <= set(nodes.stdout.split())
    pods = kubectl(home / "kubeconfig", "get", "pods", "-A", cache=home / "kube-cache")
    assert pods.returncode == 0, pods.stderr
    assert "Unable to connect" not in pods.stderr and "x509" not in pods.stderr


def test_kubectl_as_a_token_user_from_the_token_file(home, tmp_path):
    admin_token = (credentials.token_file(home).read_text().splitlines()[0]).split(",")[0]
    config = _kubeconfig_like_admin(home, tmp_path / "token.kubeconfig", "admin", token=admin_token)
    result = kubectl(config, "get", "namespaces", "-o", "name", cache=home / "kube-cache")
    assert result.returncode == 0, result.stderr
    assert "namespace/default" in result.stdout.split()


def test_a_client_certificate_from_another_ca_is_unauthorized(home, tmp_path):
    stranger = pki.make_client(pki.make_ca(datetime.datetime.now(datetime.UTC)), "admin", ["system:masters"],
                               datetime.datetime.now(datetime.UTC))
    config = _kubeconfig_like_admin(home, tmp_path / "stranger.kubeconfig", "admin",
                                    cert_pem=stranger.cert_pem, key_pem=stranger.key_pem)
    result = kubectl(config, "get", "nodes", cache=home / "kube-cache")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", UNAUTHORIZED)
    # Before kubectl knows the API groups, its discovery meets the 401 first and says it in client-go's words.
    cold = kubectl(config, "get", "nodes", cache=tmp_path / "cold-cache")
    assert cold.returncode == 1 and cold.stdout == ""
    assert cold.stderr.splitlines()[-1] == ("error: You must be logged in to the server "
                                            "(the server has asked for the client to provide credentials)")


def test_an_unknown_token_is_unauthorized_for_kubectl_and_the_podnet_cli(home, tmp_path):
    config = _kubeconfig_like_admin(home, tmp_path / "guess.kubeconfig", "guess", token="not-a-token")
    result = kubectl(config, "get", "pods", "-A", cache=home / "kube-cache")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", UNAUTHORIZED)
    podnet = subprocess.run([*PODNET, "get", "pods", "-A", "--kubeconfig", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert (podnet.returncode, podnet.stderr) == (1, UNAUTHORIZED)


def test_a_viewer_certificate_may_read_but_not_write(home, tmp_path):
    viewer = _client_certificate(home, "victor", ["view"])
    config = _kubeconfig_like_admin(home, tmp_path / "viewer.kubeconfig", "victor",
                                    cert_pem=viewer.cert_pem, key_pem=viewer.key_pem)
    read = kubectl(config, "get", "nodes", cache=home / "kube-cache")
    assert read.returncode == 0, read.stderr
    write = kubectl(config, "create", "namespace", "victors-own", cache=home / "kube-cache")
    assert write.returncode == 1
    assert write.stderr.startswith("Error from server (Forbidden): ")
    assert 'User "victor" cannot create' in write.stderr


def test_no_process_of_the_cluster_has_a_secret_on_its_command_line(home):
    state = ClusterState.load(home)
    tokens = [row.split(",")[0] for row in credentials.token_file(home).read_text().splitlines()]
    assert len(tokens) == 2 + len([p for p in state.processes if "--kubeconfig" in p.argv])  # admin, viewer
    running = [p for p in state.processes if p.alive]
    assert len(running) == len(state.processes)
    for proc in running:
        command_line = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert "--token" not in command_line.split("\0"), proc.name
        assert not [t for t in tokens if t in command_line], f"{proc.name} shows a token"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [t for t in tokens if t in ps]


def test_every_key_and_credential_file_is_the_owners_alone(home):
    secrets = [*credentials.pki_dir(home).iterdir(), home / "kubeconfig"]
    assert {p.name for p in secrets} >= {"ca.key", "apiserver.key", "tokens.csv", "node-1_agent.kubeconfig"}
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(credentials.pki_dir(home).stat().st_mode) == 0o700
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # the store, logs and state with it


def test_every_podnet_command_finds_the_cluster_by_its_home(home):
    env = {k: v for k, v in os.environ.items() if k not in ("PODNET_SERVER", "PODNET_TOKEN", "KUBECONFIG", "PODNET_HOME")}

    def podnet(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([*PODNET, *args], capture_output=True, text=True, timeout=60, env=env | extra_env)

    by_flag = podnet("get", "nodes", "--home", str(home))
    assert by_flag.returncode == 0 and "node-1" in by_flag.stdout, by_flag.stderr
    by_env = podnet("get", "nodes", PODNET_HOME=str(home))
    assert by_env.returncode == 0 and by_env.stdout.split()[:2] == by_flag.stdout.split()[:2], by_env.stderr
    assert [line.split()[0] for line in by_env.stdout.splitlines()] == ["NAME", "node-1", "node-2"]
    routes = podnet("routes", "--node", "node-1", "--home", str(home))
    assert routes.returncode == 0 and "Forwarding table of node-1:" in routes.stdout, routes.stderr
    assert "cannot reach the node agent" not in routes.stdout
    counters = podnet("dataplane", "node-1", "counters", "--home", str(home))
    assert counters.returncode == 0 and counters.stdout, counters.stderr
    status = podnet("status", "--home", str(home))
    assert status.returncode == 0 and "unhealthy" not in status.stdout and "apiserver" in status.stdout


def test_plain_http_only_behind_the_debugging_flag(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PODNET_SERVER", "PODNET_TOKEN", "KUBECONFIG", "PODNET_HOME")}
    home = tmp_path / "insecure"
    up = subprocess.run([*PODNET, "up", "--nodes", "1", "--prefix", "127.0.62", "--lb-pool", "127.0.62.128/26",
                         "--insecure-http", "--home", str(home)], capture_output=True, text=True, timeout=180, env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        admin = kubeconfig.load(home / "kubeconfig")
        assert admin.server == "http://127.0.62.10:6443" and admin.token and admin.tls.ca_pem is None
        assert not (credentials.pki_dir(home) / "ca.key").exists()
        nodes = subprocess.run([*PODNET, "get", "nodes", "--home", str(home)], capture_output=True, text=True,
                               timeout=60, env=env)
        assert nodes.returncode == 0 and "node-1" in nodes.stdout, nodes.stderr
        # client-go sends no bearer token over plain HTTP: kubectl is not let in, which is why TLS is the default.
        refused = kubectl(home / "kubeconfig", "get", "nodes", cache=home / "kube-cache")
        assert refused.returncode == 1 and refused.stderr.endswith(
            "error: You must be logged in to the server (the server has asked for the client to provide credentials)\n")
    finally:
        subprocess.run([*PODNET, "down", "--home", str(home)], capture_output=True, timeout=120, env=env)


def test_a_kubeconfig_with_another_ca_does_not_trust_the_server(home, tmp_path):
    admin = kubeconfig.load(home / "kubeconfig")
    other_ca = pki.make_ca(datetime.datetime.now(datetime.UTC))
    config = tmp_path / "other-ca.kubeconfig"
    config.write_text(kubeconfig.render(admin.server, other_ca.cert_pem, "admin", cert_pem=admin.tls.cert_pem,
                                        key_pem=admin.tls.key_pem))
    result = kubectl(config, "get", "nodes", cache=home / "kube-cache")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        "Unable to connect to the server: tls: failed to verify certificate: x509: certificate signed by unknown authority")
    podnet = subprocess.run([*PODNET, "get", "nodes", "--kubeconfig", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert podnet.returncode == 1 and len(podnet.stderr.splitlines()) == 1
    assert podnet.stderr.startswith(f"Unable to connect to the server: cannot reach the API server at {admin.server}: "
                                    "tls: failed to verify its certificate")
