"""Service-account tokens through the real kubectl against a real API server (HTTPS, client certificates):
`kubectl create token` with its flags, the tokens' user, RBAC on them, their revocation when the account or the
bound pod is deleted, their audience, and the OIDC discovery documents."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from support.kubectl import KubectlServer

HOST = "127.0.150.10"
ISSUER = "https://kubernetes.default.svc.cluster.local"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlServer]:
    server = KubectlServer(tmp_path_factory.mktemp("satokens"), host=HOST)
    try:
        for namespace in ("team-a", "team-b"):
            assert server.kubectl("create", "namespace", namespace).returncode == 0
        yield server
    finally:
        server.stop()


def _as_token(server: KubectlServer, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with the token alone (no client certificate, which would win)."""
    env = dict(os.environ, KUBECONFIG=os.devnull, HOME=str(server.directory))
    return subprocess.run(["kubectl", "--server", server.url, "--certificate-authority", str(server.ca_file),
                           "--token", token, *args], capture_output=True, text=True, env=env, timeout=60)


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _create_token(server: KubectlServer, account: str, *flags: str) -> str:
    done = server.kubectl("create", "token", account, "-n", "team-a", *flags)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_token_names_its_service_account_and_rbac_decides_what_it_may_do(server: KubectlServer) -> None:
    assert server.kubectl("create", "serviceaccount", "robot", "-n", "team-a").returncode == 0
    uid = server.kubectl("get", "sa", "robot", "-n", "team-a", "-o", "jsonpath={.metadata.uid}").stdout
    token = _create_token(server, "robot")
    claims = _claims(token)
    assert claims["iss"] == ISSUER and claims["aud"] == [ISSUER] and claims["sub"] == "system:serviceaccount:team-a:robot"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["kubernetes.io"] == {"namespace": "team-a", "serviceaccount": {"name": "robot", "uid": uid}}

    whoami = _as_token(server, token, "auth", "whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert "system:serviceaccount:team-a:robot" in whoami.stdout
    assert "[system:serviceaccounts system:serviceaccounts:team-a system:authenticated]" in whoami.stdout
    (extra,) = [line for line in whoami.stdout.splitlines() if line.startswith("Extra:")]
    assert extra.split() == ["Extra:", "authentication.kubernetes.io/credential-id", f"[JTI={claims['jti']}]"]

    refused = _as_token(server, token, "get", "pods", "-n", "team-a")
    assert refused.returncode == 1
    assert refused.stderr.strip() == ('Error from server (Forbidden): pods is forbidden: User '
                                      '"system:serviceaccount:team-a:robot" cannot list resource "pods" in API group "" '
                                      'in the namespace "team-a"')
    bound = server.kubectl("create", "rolebinding", "robot-edit", "--clusterrole", "edit",
                           "--serviceaccount", "team-a:robot", "-n", "team-a")
    assert bound.returncode == 0, bound.stderr
    listed = _as_token(server, token, "get", "pods", "-n", "team-a")
    assert listed.returncode == 0 and listed.stderr.strip() == "No resources found in team-a namespace."
    assert _as_token(server, token, "get", "pods", "-n", "team-b").returncode == 1
    assert _as_token(server, token, "auth", "can-i", "delete", "pods", "-n", "team-b").stdout.strip() == "no"

    # The account deleted (and made again, with another uid): every token it had is refused.
    assert server.kubectl("delete", "sa", "robot", "-n", "team-a").returncode == 0
    gone = _as_token(server, token, "get", "pods", "-n", "team-a")
    assert gone.returncode == 1 and gone.stderr.strip() == "error: You must be logged in to the server (Unauthorized)"
    assert server.kubectl("create", "serviceaccount", "robot", "-n", "team-a").returncode == 0
    assert _as_token(server, token, "get", "pods", "-n", "team-a").returncode == 1
    assert _as_token(server, _create_token(server, "robot"), "get", "pods", "-n", "team-a").returncode == 0


def test_duration_audience_and_their_limits(server: KubectlServer) -> None:
    assert server.kubectl("create", "serviceaccount", "timed", "-n", "team-a").returncode == 0
    claims = _claims(_create_token(server, "timed", "--duration", "15m", "--audience", "vault", "--audience", ISSUER))
    assert claims["exp"] - claims["iat"] == 900 and claims["aud"] == ["vault", ISSUER]

    short = server.kubectl("create", "token", "timed", "-n", "team-a", "--duration", "1m")
    assert short.returncode == 1
    assert short.stderr.strip() == ('error: failed to create token: TokenRequest.authentication.k8s.io "" is invalid: '
                                    "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes")
    # A token for another audience is no credential for this API.
    elsewhere = _create_token(server, "timed", "--audience", "vault")
    assert _as_token(server, elsewhere, "auth", "whoami").returncode == 1
    missing = server.kubectl("create", "token", "nobody", "-n", "team-a")
    assert missing.stderr.strip() == 'error: failed to create token: serviceaccounts "nobody" not found'


def test_a_pod_bound_token_dies_with_its_pod(server: KubectlServer) -> None:
    assert server.kubectl("create", "serviceaccount", "worker", "-n", "team-a").returncode == 0
    created = server.kubectl("run", "job-pod", "-n", "team-a", "--image", "agnhost", "--overrides",
                             '{"spec": {"serviceAccountName": "worker"}}')
    assert created.returncode == 0, created.stderr
    pod_uid = server.kubectl("get", "pod", "job-pod", "-n", "team-a", "-o", "jsonpath={.metadata.uid}").stdout
    token = _create_token(server, "worker", "--bound-object-kind", "Pod", "--bound-object-name", "job-pod")
    assert _claims(token)["kubernetes.io"]["pod"] == {"name": "job-pod", "uid": pod_uid}
    whoami = _as_token(server, token, "auth", "whoami")
    assert whoami.returncode == 0
    assert "Extra: authentication.kubernetes.io/pod-name        [job-pod]" in whoami.stdout
    assert f"Extra: authentication.kubernetes.io/pod-uid         [{pod_uid}]" in whoami.stdout

    # This server runs no controllers, so no `default` account exists until made.
    assert server.kubectl("create", "serviceaccount", "default", "-n", "team-a").returncode == 0
    other_account = server.kubectl("create", "token", "default", "-n", "team-a", "--bound-object-kind", "Pod",
                                   "--bound-object-name", "job-pod")
    assert other_account.returncode == 1
    assert other_account.stderr.strip() == ('error: failed to create token: cannot bind token for serviceaccount '
                                            '"default" to pod running with different serviceaccount name.')
    assert server.kubectl("delete", "pod", "job-pod", "-n", "team-a", "--grace-period", "0", "--force").returncode == 0
    revoked = _as_token(server, token, "auth", "whoami")
    assert revoked.returncode == 1 and "Unauthorized" in revoked.stderr


def test_a_secret_bound_token_dies_with_its_secret(server: KubectlServer) -> None:
    assert server.kubectl("create", "serviceaccount", "ci", "-n", "team-a").returncode == 0
    assert server.kubectl("create", "secret", "generic", "ci-binding", "-n", "team-a").returncode == 0
    token = _create_token(server, "ci", "--bound-object-kind", "Secret", "--bound-object-name", "ci-binding")
    assert _as_token(server, token, "auth", "whoami").returncode == 0
    assert server.kubectl("delete", "secret", "ci-binding", "-n", "team-a").returncode == 0
    assert _as_token(server, token, "auth", "whoami").returncode == 1


def test_the_issuer_documents_verify_the_tokens(server: KubectlServer) -> None:
    assert server.kubectl("create", "serviceaccount", "reader", "-n", "team-a").returncode == 0
    token = _create_token(server, "reader")
    discovery = _as_token(server, token, "get", "--raw", "/.well-known/openid-configuration")
    assert discovery.returncode == 0, discovery.stderr
    document = json.loads(discovery.stdout)
    assert document == {"issuer": ISSUER, "jwks_uri": f"{server.url}/openid/v1/jwks",
                        "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["ES256"]}
    keys = json.loads(_as_token(server, token, "get", "--raw", "/openid/v1/jwks").stdout)["keys"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert [k["kid"] for k in keys] == [header["kid"]] and keys[0]["kty"] == "EC"
    # Discovery lists the subresource, so kubectl and clients know tokens are served.
    resources = json.loads(server.kubectl("get", "--raw", "/api/v1").stdout)["resources"]
    token_resource = next(r for r in resources if r["name"] == "serviceaccounts/token")
    assert token_resource["kind"] == "TokenRequest" and token_resource["group"] == "authentication.k8s.io"


def test_a_node_bound_token_dies_with_its_node_and_a_stale_uid_is_a_conflict(server: KubectlServer) -> None:
    assert server.kubectl("create", "serviceaccount", "agent", "-n", "team-a").returncode == 0
    node = '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-9"}}'
    assert server.kubectl("apply", "-f", "-", input=node).returncode == 0
    token = _create_token(server, "agent", "--bound-object-kind", "Node", "--bound-object-name", "worker-9")
    whoami = _as_token(server, token, "auth", "whoami")
    assert whoami.returncode == 0 and "Extra: authentication.kubernetes.io/node-name" in whoami.stdout
    assert server.kubectl("delete", "node", "worker-9").returncode == 0
    assert _as_token(server, token, "auth", "whoami").returncode == 1

    assert server.kubectl("create", "secret", "generic", "pinned", "-n", "team-a").returncode == 0
    stale = server.kubectl("create", "token", "agent", "-n", "team-a", "--bound-object-kind", "Secret",
                           "--bound-object-name", "pinned", "--bound-object-uid", "0d4691ed-659b-4935-a832-355f77ee47cc")
    assert stale.returncode == 1
    assert stale.stderr.strip() == (
        'error: failed to create token: Operation cannot be fulfilled on Secret "pinned": the UID in the bound object '
        "reference (0d4691ed-659b-4935-a832-355f77ee47cc) does not match the UID in record. The object might have been "
        "deleted and then recreated")
