"""A demo tenant's own kubeconfig, as `podnet up` writes it, in the real kubectl's hands.

A cluster started by `podnet up`, the demo's tenants applied (deploy/demo/02-multi-tenancy.yaml binds the users
team-a and team-b to ClusterRole edit in their namespaces). With `<home>/team-a.kubeconfig` (mode 0600, a
client certificate of the cluster CA): `kubectl auth can-i delete pods -n team-b` says no; `kubectl exec` into a
team-b pod is refused with kube-apiserver's 403 while exec into team-a's own pod runs; `kubectl create token
default -n team-a` gives a token the API server accepts as system:serviceaccount:team-a:default, and refuses
(401) once its expiry has passed, once the pod it was bound to is gone, and once the account is deleted —
even after the control plane makes a new `default` account.

The expiry is shown without waiting out the ten-minute minimum a TokenRequest may ask: the token's own claims,
signed again with the cluster's service-account key (`pki/sa.key`) with its times moved back, are refused,
while the same claims signed again unmoved are accepted.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from podnet.apiserver.tokens import jwt
from support.kubectl import Kubectl, podnet_environment, podnet_up

from podnet import kubeconfig
from podnet.cluster import credentials

PREFIX = "127.0.225"
DEMO = Path(__file__).resolve().parent.parent / "deploy" / "demo" / "02-multi-tenancy.yaml"
UNAUTHORIZED = "error: You must be logged in to the server (Unauthorized)\n"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with podnet_up(tmp_path_factory.mktemp("tenant"), PREFIX, nodes=1) as started:
        applied = Kubectl(started).run("apply", "-f", str(DEMO))
        assert applied.returncode == 0, applied.stderr
        yield started


def _team_a(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = podnet_environment() | {"HOME": str(home)}
    return subprocess.run(["kubectl", "--kubeconfig", str(credentials.tenant_kubeconfig(home, "team-a")), *args],
                          input=input, capture_output=True, text=True, env=env, timeout=60)


def _with_token(home: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with the bearer token alone, at the server and CA of the tenant's kubeconfig."""
    config = kubeconfig.load(credentials.tenant_kubeconfig(home, "team-a"))
    ca = home / "token-test-ca.crt"
    if not ca.exists():
        ca.write_bytes(config.tls.ca_pem)
    env = podnet_environment() | {"HOME": str(home), "KUBECONFIG": os.devnull}
    return subprocess.run(["kubectl", "--server", config.server, "--certificate-authority", str(ca), "--token", token,
                           *args], capture_output=True, text=True, env=env, timeout=60)


def _wait(what: str, check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return result


def _running_pod(home: Path, namespace: str) -> str:
    def name() -> str:
        done = Kubectl(home).run("get", "pods", "-n", namespace, "--field-selector=status.phase=Running", "-o",
                                 "jsonpath={.items[0].metadata.name}")
        return done.stdout if done.returncode == 0 else ""
    return _wait(f"a running pod in {namespace}", name, timeout=90)


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_tenant_kubeconfig_is_its_owners_alone_and_a_certificate(home: Path):
    path = credentials.tenant_kubeconfig(home, "team-a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    whoami = _team_a(home, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"] == {"username": "team-a", "groups": ["system:authenticated"]}


def test_team_a_may_not_touch_team_b(home: Path):
    _wait("the demo's RoleBinding in force", lambda: _team_a(home, "auth", "can-i", "delete", "pods", "-n", "team-a")
          .stdout == "yes\n")
    refused = _team_a(home, "auth", "can-i", "delete", "pods", "-n", "team-b")
    assert (refused.returncode, refused.stdout) == (1, "no\n")

    victim = _running_pod(home, "team-b")
    exec_ = _team_a(home, "exec", "-n", "team-b", victim, "--", "hostname")
    assert (exec_.returncode, exec_.stdout, exec_.stderr) == (1, "", (
        f'Error from server (Forbidden): pods "{victim}" is forbidden: User "team-a" cannot get resource "pods" in '
        'API group "" in the namespace "team-b"\n'))
    own = _running_pod(home, "team-a")
    mine = _team_a(home, "exec", "-n", "team-a", own, "--", "hostname")
    assert (mine.returncode, mine.stdout.strip()) == (0, own), mine.stderr


def _token(home: Path, *flags: str) -> str:
    done = _wait("team-a's default ServiceAccount", lambda: (d := _team_a(home, "create", "token", "default", "-n",
                                                                         "team-a", *flags)).returncode == 0 and d)
    return done.stdout.strip()


def _accepted(home: Path, token: str) -> bool:
    """The API server knows the token's account (a 403 for lack of rights is still an accepted token)."""
    whoami = _with_token(home, token, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    if whoami.returncode == 0:
        assert whoami.stdout == "system:serviceaccount:team-a:default", whoami.stdout
        return True
    assert whoami.stderr == UNAUTHORIZED, whoami.stderr
    return False


def test_a_token_team_a_creates_is_accepted_until_its_expiry(home: Path):
    token = _token(home)
    assert _accepted(home, token)
    listing = _with_token(home, token, "get", "pods", "-n", "team-a")
    assert (listing.returncode, listing.stderr) == (1, (
        'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:team-a:default" cannot list '
        'resource "pods" in API group "" in the namespace "team-a"\n'))

    key = jwt.load_signing_key(credentials.service_account_key_file(home).read_bytes())
    claims = _claims(token)
    assert _accepted(home, jwt.sign(claims, key))  # the same claims, signed again: the same token to the server
    lifetime = claims["exp"] - claims["iat"]
    moved = {field: claims[field] - lifetime - 120 for field in ("iat", "nbf", "exp")}  # expired two minutes ago
    assert not _accepted(home, jwt.sign(claims | moved, key))
    assert _accepted(home, token)


def test_a_token_bound_to_a_pod_dies_with_the_pod(home: Path):
    made = _team_a(home, "run", "holder", "-n", "team-a", "--image=registry.k8s.io/e2e-test-images/agnhost:2.47")
    assert made.returncode == 0, made.stderr
    token = _token(home, "--bound-object-kind", "Pod", "--bound-object-name", "holder")
    assert _accepted(home, token)
    gone = _team_a(home, "delete", "pod", "holder", "-n", "team-a", "--grace-period=0", "--force")
    assert gone.returncode == 0, gone.stderr
    _wait("the pod's token to be refused", lambda: not _accepted(home, token), timeout=90)


def test_a_token_dies_with_its_account_and_stays_dead(home: Path):
    token = _token(home)
    uid = Kubectl(home).run("get", "serviceaccount", "default", "-n", "team-a", "-o", "jsonpath={.metadata.uid}").stdout
    assert _accepted(home, token)
    deleted = _team_a(home, "delete", "serviceaccount", "default", "-n", "team-a")
    assert deleted.stdout == 'serviceaccount "default" deleted\n', deleted.stderr
    assert not _accepted(home, token)
    # The control plane gives the namespace its `default` account again: a new one, which the old token is not.
    _wait("a new default ServiceAccount", lambda: Kubectl(home).run(
        "get", "serviceaccount", "default", "-n", "team-a", "-o", "jsonpath={.metadata.uid}").stdout not in ("", uid))
    assert not _accepted(home, token)
    assert _accepted(home, _token(home))
