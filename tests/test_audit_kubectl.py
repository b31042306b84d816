"""The audit log of a real API server (--audit-policy-file, --audit-log-path) as the real kubectl drives it:
who did what to which object, at the policy's level, with the authorization decision, in the stages the
policy keeps, each response naming its events by its Audit-Id header."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.kubectl import KubectlServer

HOST = "127.0.150.11"
POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    nonResourceURLs: ["/readyz", "/healthz"]
  - level: Metadata
    resources: [{group: "", resources: [secrets]}]
  - level: RequestResponse
    resources: [{group: "", resources: [configmaps]}]
    omitStages: []
  - level: Request
    verbs: [create, update, patch, delete]
  - level: Metadata
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlServer]:
    directory = tmp_path_factory.mktemp("audit")
    (directory / "policy.yaml").write_text(POLICY)
    server = KubectlServer(directory, host=HOST, extra_args=(
        "--audit-policy-file", str(directory / "policy.yaml"), "--audit-log-path", str(directory / "audit.log")))
    try:
        yield server
    finally:
        server.stop()


def _events(server: KubectlServer) -> list[dict]:
    path: Path = server.directory / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _audit_ids(kubectl_verbose_stderr: str) -> list[str]:
    """The Audit-Id headers of the responses `kubectl -v=8` shows."""
    return [line.split("Audit-Id:", 1)[1].strip() for line in kubectl_verbose_stderr.splitlines() if "Audit-Id:" in line]


def _by_id(server: KubectlServer, audit_id: str) -> list[dict]:
    return [e for e in _events(server) if e["auditID"] == audit_id]


def test_the_log_file_is_the_owners_alone(server: KubectlServer) -> None:
    assert server.kubectl("get", "namespaces").returncode == 0
    assert (server.directory / "audit.log").stat().st_mode & 0o777 == 0o600


def test_a_change_is_recorded_with_its_request_and_decision(server: KubectlServer) -> None:
    done = server.kubectl("create", "namespace", "team-a", "-v=8")
    assert done.returncode == 0, done.stderr
    (audit_id,) = _audit_ids(done.stderr)
    (event,) = _by_id(server, audit_id)
    assert event["kind"] == "Event" and event["apiVersion"] == "audit.k8s.io/v1"
    assert event["level"] == "Request" and event["stage"] == "ResponseComplete" and event["verb"] == "create"
    assert event["requestURI"].startswith("/api/v1/namespaces?")
    assert event["user"] == {"username": "admin", "groups": ["system:masters", "system:authenticated"]}
    assert event["objectRef"] == {"resource": "namespaces", "apiVersion": "v1"}
    assert event["responseStatus"] == {"metadata": {}, "code": 201}
    assert event["requestObject"]["metadata"]["name"] == "team-a" and "responseObject" not in event
    assert event["annotations"] == {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
    assert event["userAgent"].startswith("kubectl/") and event["sourceIPs"] == ["127.0.0.1"]
    assert event["requestReceivedTimestamp"] <= event["stageTimestamp"]


def test_a_secret_is_recorded_without_its_contents(server: KubectlServer) -> None:
    done = server.kubectl("create", "secret", "generic", "db", "-n", "team-a", "--from-literal=password=hunter2", "-v=8")
    assert done.returncode == 0, done.stderr
    (event,) = _by_id(server, _audit_ids(done.stderr)[-1])
    assert event["level"] == "Metadata" and event["objectRef"]["resource"] == "secrets"
    assert "hunter2" not in (server.directory / "audit.log").read_text()
    assert "aHVudGVyMg" not in (server.directory / "audit.log").read_text()  # nor base64


def test_request_response_level_keeps_both_bodies_and_every_stage_but_the_omitted(server: KubectlServer) -> None:
    done = server.kubectl("create", "configmap", "settings", "-n", "team-a", "--from-literal=mode=fast", "-v=8")
    assert done.returncode == 0, done.stderr
    recorded = _by_id(server, _audit_ids(done.stderr)[-1])
    # The rule omits no stage itself, but the policy's omitStages still apply.
    assert [e["stage"] for e in recorded] == ["ResponseComplete"]
    assert recorded[0]["requestObject"]["data"] == {"mode": "fast"}
    assert recorded[0]["responseObject"]["metadata"]["name"] == "settings"


def test_a_token_request_names_the_credential_it_issued(server: KubectlServer) -> None:
    assert server.kubectl("create", "serviceaccount", "robot", "-n", "team-a").returncode == 0
    done = server.kubectl("create", "token", "robot", "-n", "team-a", "-v=8")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    payload = token.split(".")[1]
    token_id = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    (event,) = _by_id(server, _audit_ids(done.stderr)[-1])
    assert event["objectRef"] == {"resource": "serviceaccounts", "namespace": "team-a", "name": "robot",
                                  "apiVersion": "v1", "subresource": "token"}
    assert event["annotations"]["authentication.kubernetes.io/issued-credential-id"] == f"JTI={token_id}"
    assert event["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert token not in (server.directory / "audit.log").read_text()  # the policy keeps the response out


def test_a_forbidden_impersonated_request_names_both_users_and_the_refusal(server: KubectlServer) -> None:
    done = server.kubectl("get", "pods", "-n", "team-a", "--as", "bob", "-v=8")
    assert done.returncode == 1
    (event,) = _by_id(server, _audit_ids(done.stderr)[-1])
    assert event["user"]["username"] == "admin" and event["impersonatedUser"]["username"] == "bob"
    assert event["verb"] == "list" and event["objectRef"] == {"resource": "pods", "namespace": "team-a", "apiVersion": "v1"}
    assert event["responseStatus"]["code"] == 403 and event["responseStatus"]["reason"] == "Forbidden"
    assert event["annotations"]["authorization.k8s.io/decision"] == "forbid"


def test_a_failed_authentication_is_recorded_with_its_401(server: KubectlServer) -> None:
    env = dict(os.environ, KUBECONFIG=os.devnull, HOME=str(server.directory))
    done = subprocess.run(["kubectl", "--server", server.url, "--certificate-authority", str(server.ca_file),
                           "--token", "not-a-token", "get", "pods", "-v=8"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 1
    (event,) = _by_id(server, _audit_ids(done.stderr)[-1])
    assert event["stage"] == "ResponseStarted" and event["user"] == {} and event["responseStatus"]["code"] == 401
    assert "annotations" not in event


def test_a_watch_is_recorded_when_it_starts_and_when_it_ends(server: KubectlServer) -> None:
    done = server.kubectl("get", "namespaces", "--watch-only", "--request-timeout=2s", "-v=8")
    watch_ids = [i for i in _audit_ids(done.stderr)
                 if any(e["verb"] == "watch" for e in _by_id(server, i))]
    assert watch_ids, done.stderr
    deadline = time.monotonic() + 10
    while len(_by_id(server, watch_ids[0])) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    started, completed = _by_id(server, watch_ids[0])
    assert (started["stage"], completed["stage"]) == ("ResponseStarted", "ResponseComplete")
    assert started["responseStatus"]["code"] == 200 and started["stageTimestamp"] <= completed["stageTimestamp"]


def test_public_health_probes_follow_the_policy(server: KubectlServer) -> None:
    assert server.kubectl("get", "--raw", "/readyz").returncode == 0
    assert not [e for e in _events(server) if e["requestURI"] == "/readyz"]
    assert server.kubectl("get", "--raw", "/livez").returncode == 0
    (event,) = [e for e in _events(server) if e["requestURI"] == "/livez"]
    assert event["level"] == "Metadata" and "objectRef" not in event and event["verb"] == "get"


@pytest.mark.parametrize(("flags", "message"), [
    (("--audit-policy-file", "{dir}/bad.yaml", "--audit-log-path", "{dir}/a.log"),
     "error: --audit-policy-file {dir}/bad.yaml: loaded illegal policy with 0 rules"),
    (("--audit-policy-file", "{dir}/missing.yaml"), "error: --audit-policy-file {dir}/missing.yaml: No such file or directory"),
    (("--service-account-signing-key-file", "{dir}/bad.yaml"),
     "error: --service-account-signing-key-file {dir}/bad.yaml: data does not contain a valid RSA or ECDSA private key"),
])
def test_a_bad_policy_or_key_file_stops_the_server_in_one_line(tmp_path: Path, flags: tuple[str, ...], message: str) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n")
    argv = [part.format(dir=tmp_path) for part in flags]
    done = subprocess.run([sys.executable, "-m", "podnet", "apiserver", "--port", "0", *argv], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == message.format(dir=tmp_path)
