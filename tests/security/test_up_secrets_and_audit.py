"""A cluster started by `podnet up` (issue 20, items 4 and 5): while it runs, no command line on the host holds
one of its secrets — `ps -ww -eo args` (unlimited width) shows paths to the token file, keys and kubeconfigs,
never a token, a key or a password, and no process of the cluster carries a secret-valued flag; and its API
server keeps the audit log of the default policy, which `podnet logs apiserver --audit` prints."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.kubectl import Kubectl, podnet_environment, podnet_up

from podnet.cluster import credentials

PREFIX = "127.0.151"
_SECRET_WORDS = re.compile(r"token|password|secret|key", re.IGNORECASE)


def _secret_flags_with_values(argv: list[str]) -> list[str]:
    """Flags named for a secret whose value is not a path to a file (--token abc, --password=abc)."""
    bad = []
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if not name.startswith("--") or not _SECRET_WORDS.search(name):
            continue
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        if value and not value.startswith("/"):
            bad.append(arg)
    return bad


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with podnet_up(tmp_path_factory.mktemp("ps-secrets"), PREFIX, nodes=1) as home:
        yield home


def _secrets(home: Path) -> set[str]:
    """Every secret value the cluster's files hold: tokens, the private keys' bodies, kubeconfigs' keys."""
    pki = credentials.pki_dir(home)
    found = {line.split(",", 1)[0] for line in credentials.token_file(home).read_text().splitlines() if line}
    for key_file in pki.glob("*.key"):
        body = "".join(line for line in key_file.read_text().splitlines() if not line.startswith("-----"))
        found.add(body[:40])
    for config_file in [*home.glob("*.kubeconfig"), home / "kubeconfig", *pki.glob("*.kubeconfig")]:
        config = yaml.safe_load(config_file.read_text())
        for entry in config.get("users") or []:
            user = entry.get("user") or {}
            if user.get("token"):
                found.add(user["token"])
            if user.get("client-key-data"):
                found.add(user["client-key-data"][:40])
                key_pem = base64.b64decode(user["client-key-data"]).decode()
                found.add("".join(line for line in key_pem.splitlines() if not line.startswith("-----"))[:40])
    return {secret for secret in found if len(secret) >= 16}


def _cluster_pids(home: Path) -> set[int]:
    status = subprocess.run([sys.executable, "-m", "podnet", "status", "-o", "json", "--home", str(home)],
                            capture_output=True, text=True, timeout=60, env=podnet_environment())
    assert status.returncode == 0, status.stderr
    return {entry["pid"] for entry in json.loads(status.stdout) if entry["pid"]}


def test_no_command_line_holds_a_secret_of_the_cluster(cluster: Path) -> None:
    secrets = _secrets(cluster)
    assert len(secrets) >= 5  # the admin's and each component's token, the keys
    listing = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.strip().split(None, 1) for line in listing.splitlines() if line.strip()]
    pids = _cluster_pids(cluster)
    assert len(pids) >= 5  # the API server, DNS, an agent, its kube-proxy, the cloud LB
    ours = [args for pid, *rest in rows for args in rest if int(pid) in pids]
    assert len(ours) == len(pids)
    assert any("apiserver" in args and "--service-account-signing-key-file" in args for args in ours), ours
    for args in (args for _, *rest in rows for args in rest):
        leaked = [secret for secret in secrets if secret in args]
        assert not leaked, f"a secret of the cluster is on a command line: {args[:200]}"
    for args in ours:
        assert not _secret_flags_with_values(args.split()), f"a flag carries a secret: {args}"


def _podnet(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podnet", *args, "--home", str(home)], capture_output=True, text=True,
                          timeout=60, env=podnet_environment())


def test_the_audit_log_records_who_did_what_and_podnet_logs_prints_it(cluster: Path) -> None:
    kubectl = Kubectl(cluster)
    assert kubectl.run("create", "namespace", "audited").returncode == 0
    assert kubectl.run("create", "secret", "generic", "vault", "-n", "audited", "--from-literal=k=topsecret").returncode == 0
    assert kubectl.run("get", "pods", "-n", "audited", user=("mallory", ())).returncode == 1
    done = _podnet(cluster, "logs", "apiserver", "--audit", "--tail", "500")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(e["kind"] == "Event" and e["stage"] != "RequestReceived" for e in events)  # the policy omits it
    created = [e for e in events if e["verb"] == "create" and e.get("objectRef", {}).get("resource") == "namespaces"]
    assert created[-1]["level"] == "Request" and created[-1]["requestObject"]["metadata"]["name"] == "audited"
    assert created[-1]["user"]["username"] == "admin"
    (secret,) = [e for e in events if e.get("objectRef", {}).get("resource") == "secrets" and e["verb"] == "create"]
    assert secret["level"] == "Metadata" and "requestObject" not in secret
    assert "topsecret" not in done.stdout and base64.b64encode(b"topsecret").decode() not in done.stdout
    (refused,) = [e for e in events if e["user"].get("username") == "mallory" and e["verb"] == "list"]
    assert refused["responseStatus"]["code"] == 403
    assert refused["annotations"] == {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}
    # The components' own reads and the node's heartbeats are left out by the default policy.
    components = set(credentials.COMPONENT_GROUPS.values())
    assert not [e for e in events if e["verb"] in ("get", "list", "watch") and components & set(e["user"].get("groups", []))]
    assert not [e for e in events if e.get("objectRef", {}).get("resource") == "leases" and e["verb"] in ("update", "patch")
                and "system:nodes" in e["user"].get("groups", [])]
    wrong = _podnet(cluster, "logs", "dns", "--audit")
    assert wrong.returncode != 0 and "--audit is an API server's log" in wrong.stderr
