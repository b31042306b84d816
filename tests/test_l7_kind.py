"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy as the API server serves them: from Cilium's
CRDs (deploy/crds/cilium.yaml), with what Cilium's agent refuses (a bad regular expression, a method
matching no HTTP method) refused up front as a 422 naming the field. First the write path's rules without
a server, then the real kubectl against a real API server process (127.0.180.10)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from podnet.apiserver.customresources import definitions
from podnet.apiserver.customresources.rules import default_object, prune_object, validate_object
from podnet.apiserver.validation import Limits
from support.kubectl import KubectlServer, running_kubectl_server

ROOT = Path(__file__).parent.parent
CRDS = ROOT / "deploy" / "crds" / "cilium.yaml"
DOCUMENTED = ROOT / "tests" / "data" / "crds" / "cilium-l7-policy.yaml"

SEED_POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: backend-l7
spec:
  description: frontend may GET /api/*, never DELETE; nobody else reaches the backend
  endpointSelector:
    matchLabels: {app: backend}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: frontend}
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
      rules:
        http:
        - method: "GET|HEAD"
          path: "/api/.*"
          headers: ["X-Request-Id"]
  ingressDeny:
  - fromEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: untrusted
"""


def served_kinds() -> dict[str, object]:
    kinds = {}
    for crd in yaml.safe_load_all(CRDS.read_text()):
        if crd is None:
            continue
        definitions.default(crd)
        crd["status"] = definitions.accepted_status(crd, [], "2026-01-01T00:00:00Z")
        for kind in definitions.served_kinds(crd):
            kinds[kind.kind] = kind
    return kinds


KINDS = served_kinds()


def write_path(obj: dict) -> tuple[dict, list]:
    kind = KINDS[obj["kind"]]
    pruned, _ = prune_object(kind, obj)
    default_object(kind, pruned)
    return pruned, validate_object(kind, pruned, Limits())


def seed(**http: object) -> dict:
    policy = yaml.safe_load(SEED_POLICY)
    policy["metadata"]["namespace"] = "default"
    policy["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"][0].update(http)
    return policy


def test_both_kinds_are_served_from_the_crds():
    assert {k: (v.plural, v.namespaced, v.group, v.version) for k, v in KINDS.items()} == {
        "CiliumNetworkPolicy": ("ciliumnetworkpolicies", True, "cilium.io", "v2"),
        "CiliumClusterwideNetworkPolicy": ("ciliumclusterwidenetworkpolicies", False, "cilium.io", "v2"),
    }


def test_documented_and_seed_policies_pass_unchanged():
    documented = yaml.safe_load(DOCUMENTED.read_text()) | {
        "metadata": {"name": "rule1", "namespace": "default"}
    }
    assert write_path(documented) == (documented, [])
    policy = seed()
    kept, causes = write_path(policy)
    assert causes == []
    assert kept["spec"]["ingressDeny"] == policy["spec"]["ingressDeny"]  # the deny rules survive pruning
    # host is a regular expression although the CRD says idn-hostname, a format kube-apiserver does not check
    assert write_path(seed(host=r"backend\.shop(:8080)?"))[1] == []


@pytest.mark.parametrize(
    "http, field, message",
    [
        (
            {"path": "/api/(items"},
            "spec.ingress[0].toPorts[0].rules.http[0].path",
            'Invalid value: "/api/(items": invalid regular expression: missing ), unterminated subpattern at position 5',
        ),
        (
            {"method": "YANK"},
            "spec.ingress[0].toPorts[0].rules.http[0].method",
            'Invalid value: "YANK": matches no HTTP method (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)',
        ),
        (
            {"host": "(?<=x)api"},
            "spec.ingress[0].toPorts[0].rules.http[0].host",
            'Invalid value: "(?<=x)api": look-around and back-references are not RE2 regular expressions',
        ),
    ],
)
def test_what_cilium_refuses_is_a_field_error(http, field, message):
    _, causes = write_path(seed(**http))
    assert [(c.field, c.reason, c.message) for c in causes] == [(field, "FieldValueInvalid", message)]


def test_clusterwide_policy_with_a_node_selector_is_accepted():
    ccnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "nodes"},
        "spec": {"nodeSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]},
    }
    assert write_path(ccnp)[1] == []


# -- the real kubectl ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlServer]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH")
    with running_kubectl_server(tmp_path_factory.mktemp("l7kind"), host="127.0.180.10") as running:
        ok(running.kubectl("apply", "-f", str(CRDS)))
        for name in ("ciliumnetworkpolicies.cilium.io", "ciliumclusterwidenetworkpolicies.cilium.io"):
            ok(running.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=10s"))
        yield running


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_kubectl_applies_the_crds_and_the_policies(server: KubectlServer, tmp_path: Path) -> None:
    assert (
        ok(server.kubectl("apply", "-f", str(DOCUMENTED))) == "ciliumnetworkpolicy.cilium.io/rule1 created\n"
    )
    manifest = tmp_path / "seed.yaml"
    manifest.write_text(SEED_POLICY)
    assert (
        ok(server.kubectl("apply", "-f", str(manifest)))
        == "ciliumnetworkpolicy.cilium.io/backend-l7 created\n"
    )
    got = json.loads(ok(server.kubectl("get", "cnp", "backend-l7", "-o", "json")))
    assert got["spec"] == yaml.safe_load(SEED_POLICY)["spec"]
    assert (
        ok(server.kubectl("apply", "-f", str(manifest)))
        == "ciliumnetworkpolicy.cilium.io/backend-l7 unchanged\n"
    )
    explained = ok(server.kubectl("explain", "cnp.spec.ingressDeny"))
    assert "fromEndpoints\t<[]Object>" in explained


def test_kubectl_gets_the_422_naming_the_field(server: KubectlServer, tmp_path: Path) -> None:
    bad = yaml.safe_load(SEED_POLICY)
    bad["metadata"]["name"] = "bad-method"
    bad["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"][0]["method"] = "YANK"
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(bad))
    refused = server.kubectl("apply", "-f", str(manifest))
    assert refused.returncode == 1
    assert refused.stderr == (
        'The CiliumNetworkPolicy "bad-method" is invalid: spec.ingress[0].toPorts[0].rules.http[0].method: '
        'Invalid value: "YANK": matches no HTTP method '
        "(GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)\n"
    )
    assert server.kubectl("get", "cnp", "bad-method").returncode == 1
