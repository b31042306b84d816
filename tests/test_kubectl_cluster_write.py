"""kubectl's writing verbs against a cluster `podnet up` started, with the kubeconfig it wrote, unchanged
(TLS, the admin's client certificate): apply twice, diff, server-side apply, run, expose, label,
annotate, and auth can-i for the admin and for a view-only user."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.kubectl import KUBECTL_MISSING, podnet_environment, podnet_up

from podnet import kubeconfig, pki
from podnet.cluster import credentials

PREFIX = "127.0.80"
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.47"

pytestmark = pytest.mark.skipif(KUBECTL_MISSING, reason="kubectl is not on PATH")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with podnet_up(tmp_path_factory.mktemp("kubectl-write"), PREFIX, nodes=1) as home:
        yield home


def kubectl(config: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(["kubectl", "--kubeconfig", str(config), *args], capture_output=True, text=True, timeout=60,
                          env=podnet_environment() | {"HOME": str(config.parent)})  # kubectl's caches stay with this cluster
    return done.returncode, done.stdout, done.stderr


def test_apply_diff_server_side_apply_run_expose_label_annotate(home: Path, tmp_path: Path):
    config = home / "kubeconfig"
    manifest = tmp_path / "web.yaml"

    def write(replicas: int) -> None:
        manifest.write_text(yaml.safe_dump({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": IMAGE}]}}},
        }))

    write(1)
    assert kubectl(config, "apply", "-f", str(manifest)) == (0, "deployment.apps/web created\n", "")
    assert kubectl(config, "apply", "-f", str(manifest)) == (0, "deployment.apps/web unchanged\n", "")
    assert kubectl(config, "diff", "-f", str(manifest)) == (0, "", "")
    write(2)
    code, out, _ = kubectl(config, "diff", "-f", str(manifest))
    assert code == 1 and "-  replicas: 1\n+  replicas: 2\n" in out
    code, _, err = kubectl(config, "apply", "--server-side", "-f", str(manifest))
    assert code == 1
    assert err.splitlines()[0] == (
        'error: Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'
    )
    for _ in range(2):
        assert kubectl(config, "apply", "--server-side", "--force-conflicts", "-f", str(manifest)) == (
            0, "deployment.apps/web serverside-applied\n", "")

    assert kubectl(config, "run", "probe", f"--image={IMAGE}", "--port", "8080") == (0, "pod/probe created\n", "")
    assert kubectl(config, "expose", "pod/probe", "--port", "80", "--target-port", "8080") == (0, "service/probe exposed\n", "")
    assert kubectl(config, "expose", "deployment", "web", "--port", "80") == (0, "service/web exposed\n", "")
    assert kubectl(config, "label", "pod", "probe", "tier=front") == (0, "pod/probe labeled\n", "")
    assert kubectl(config, "annotate", "pod", "probe", "note=hi") == (0, "pod/probe annotated\n", "")
    assert kubectl(config, "label", "pod", "probe", "run=other") == (
        1, "", "error: 'run' already has a value (probe), and --overwrite is false\n")
    # Each writer is named as on Kubernetes: kubectl's verbs, and the node agent as the kubelet.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, out, _ = kubectl(config, "get", "pod", "probe", "-o", "json", "--show-managed-fields")
        written = {(e["manager"], e.get("subresource", "")) for e in json.loads(out)["metadata"]["managedFields"]}
        if ("kubelet", "status") in written:
            break
        time.sleep(0.5)
    assert written >= {("kubectl-run", ""), ("kubectl-label", ""), ("kubectl-annotate", ""), ("kubelet", "status")}


def test_auth_can_i_for_the_admin_and_a_view_only_user(home: Path, tmp_path: Path):
    admin = kubeconfig.load(home / "kubeconfig")
    ca_dir = credentials.pki_dir(home)
    ca = pki.KeyPair((ca_dir / "ca.crt").read_bytes(), (ca_dir / "ca.key").read_bytes())
    viewer = pki.make_client(ca, "victor", ["view"], datetime.datetime.now(datetime.UTC))
    viewer_config = tmp_path / "viewer.kubeconfig"
    viewer_config.write_text(kubeconfig.render(admin.server, admin.tls.ca_pem, "victor", cert_pem=viewer.cert_pem, key_pem=viewer.key_pem))

    assert kubectl(home / "kubeconfig", "auth", "can-i", "create", "deployments") == (0, "yes\n", "")
    assert kubectl(viewer_config, "auth", "can-i", "create", "deployments") == (1, "no\n", "")
    assert kubectl(viewer_config, "auth", "can-i", "get", "pods") == (0, "yes\n", "")
    assert kubectl(viewer_config, "auth", "can-i", "get", "pods", "--as=bob") == (1, "", (
        'Error from server (Forbidden): users "bob" is forbidden: User "victor" cannot impersonate resource "users" '
        'in API group "" at the cluster scope\n'))
