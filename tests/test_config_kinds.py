"""ConfigMaps, Secrets and ServiceAccounts through the real kubectl, as against kube-apiserver 1.31:
`create configmap --from-literal`, `create secret generic --from-literal`, the columns of `get`, `describe`,
stringData merged into data, bad base64 refused in Go's words, key and type rules, `immutable`, and the
`default` ServiceAccount the controllers keep in every namespace."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import pytest
from podnet.apiserver.configkinds import key_errors
from podnet.apiserver.validation import Limits, validate
from support.kubectl import kubectl_server  # noqa: F401  (fixture)

from podnet.api import base64data

pytestmark = pytest.mark.slow


def _ok(done) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _columns(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


@pytest.mark.parametrize("text, offset", [("abc", 0), ("a!cd", 1), ("ab=", 3), ("YQ=x", 2), ("YQ==x", 4),
                                          ("YQ=", 3), ("a===", 1)])
def test_bad_base64_is_reported_at_go_offsets(text, offset):
    assert base64data.error(text) == f"illegal base64 data at input byte {offset}"


@pytest.mark.parametrize("text", ["", "aGVsbG8=", "YQ==", "aGVs\nbG8=\n"])
def test_good_base64_decodes(text):
    assert base64data.error(text) is None
    assert base64data.decode(text) == base64.b64decode(text.replace("\n", ""))


def test_config_keys_follow_kubernetes_rules():
    assert key_errors("app.properties") == []
    assert key_errors("..data") == ["must not start with '..'"]
    assert key_errors("a/b")[0].startswith("a valid config key must consist of alphanumeric characters")


def test_secret_types_require_their_keys():
    tls = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t", "namespace": "d"},
           "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}}
    causes = validate("Secret", tls, Limits(), namespaced=True)
    assert [(c.field, c.message) for c in causes] == [("data[tls.key]", "Required value")]


def test_configmap_create_get_describe(kubectl_server):  # noqa: F811
    k = kubectl_server
    assert _ok(k.kubectl("create", "configmap", "app-config", "--from-literal=mode=fast",
                         "--from-literal=level=3")) == "configmap/app-config created\n"
    rows = _columns(_ok(k.kubectl("get", "configmap", "app-config")))
    assert rows[0] == ["NAME", "DATA", "AGE"]
    assert rows[1][:2] == ["app-config", "2"]
    assert _ok(k.kubectl("get", "cm", "app-config", "-o", "jsonpath={.data.mode}")) == "fast"
    described = _ok(k.kubectl("describe", "configmap", "app-config"))
    assert re.search(r"^Name:\s+app-config$", described, re.M)
    assert re.search(r"^mode:\n----\nfast$", described, re.M), described


def test_configmap_key_rules_and_immutable(kubectl_server):  # noqa: F811
    k = kubectl_server
    bad_key = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad-key"}, "data": {"a b": "1"}}
    bad = k.kubectl("create", "-f", "-", input=json.dumps(bad_key))
    assert bad.returncode == 1
    assert 'The ConfigMap "bad-key" is invalid: data[a b]: Invalid value: "a b": a valid config key must consist' \
        in bad.stderr
    frozen = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"}, "data": {"a": "1"},
              "immutable": True}
    _ok(k.kubectl("create", "-f", "-", input=json.dumps(frozen)))
    changed = k.kubectl("patch", "configmap", "frozen", "-p", '{"data":{"a":"2"}}')
    assert changed.returncode == 1
    assert ('The ConfigMap "frozen" is invalid: data: Forbidden: field is immutable when `immutable` is set'
            in changed.stderr)


def test_secret_generic_create_get_describe(kubectl_server):  # noqa: F811
    k = kubectl_server
    assert _ok(k.kubectl("create", "secret", "generic", "db", "--from-literal=user=admin",
                         "--from-literal=password=s3cret")) == "secret/db created\n"
    rows = _columns(_ok(k.kubectl("get", "secrets", "db")))
    assert rows[0] == ["NAME", "TYPE", "DATA", "AGE"]
    assert rows[1][:3] == ["db", "Opaque", "2"]
    encoded = _ok(k.kubectl("get", "secret", "db", "-o", "jsonpath={.data.password}"))
    assert base64.b64decode(encoded) == b"s3cret"
    described = _ok(k.kubectl("describe", "secret", "db"))
    assert re.search(r"^Type:\s+Opaque$", described, re.M)
    assert re.search(r"^password:\s+6 bytes$", described, re.M), described
    # podnet's own describe shows no secret either, and its get the same columns.
    ours = _ok(k.podnet("describe", "secret", "db"))
    assert "  password: 6 bytes" in ours and encoded not in ours
    assert _columns(_ok(k.podnet("get", "secrets")))[0] == ["NAME", "TYPE", "DATA", "AGE"]


def test_secret_string_data_is_merged_into_data(kubectl_server):  # noqa: F811
    k = kubectl_server
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "merged"},
              "data": {"a": base64.b64encode(b"old").decode(), "b": base64.b64encode(b"kept").decode()},
              "stringData": {"a": "new", "c": "plain"}}
    _ok(k.kubectl("create", "-f", "-", input=json.dumps(secret)))
    stored = json.loads(_ok(k.kubectl("get", "secret", "merged", "-o", "json")))
    assert "stringData" not in stored
    assert {key: base64.b64decode(v).decode() for key, v in stored["data"].items()} == \
        {"a": "new", "b": "kept", "c": "plain"}
    assert stored["type"] == "Opaque"


def test_secret_bad_base64_is_refused_as_kube_apiserver_does(kubectl_server):  # noqa: F811
    k = kubectl_server
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, "data": {"a": "not base64!"}}
    done = k.kubectl("create", "-f", "-", input=json.dumps(secret))
    assert done.returncode == 1
    assert done.stderr.strip() == ('Error from server (BadRequest): error when creating "STDIN": Secret in version "v1" '
                                   'cannot be handled as a Secret: illegal base64 data at input byte 3')


def test_secret_type_is_immutable_and_tls_needs_its_keys(kubectl_server):  # noqa: F811
    k = kubectl_server
    _ok(k.kubectl("create", "secret", "generic", "typed", "--from-literal=x=1"))
    changed = k.kubectl("patch", "secret", "typed", "-p", '{"type":"example.com/custom"}')
    assert changed.returncode == 1
    assert 'The Secret "typed" is invalid: type: Invalid value: "example.com/custom": field is immutable' \
        in changed.stderr
    tls = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cert"}, "type": "kubernetes.io/tls",
           "stringData": {"tls.crt": "x"}}
    done = k.kubectl("create", "-f", "-", input=json.dumps(tls))
    assert done.returncode == 1
    assert 'The Secret "cert" is invalid: data[tls.key]: Required value' in done.stderr


def test_serviceaccount_create_get_describe(kubectl_server):  # noqa: F811
    k = kubectl_server
    assert _ok(k.kubectl("create", "serviceaccount", "builder")) == "serviceaccount/builder created\n"
    rows = _columns(_ok(k.kubectl("get", "sa", "builder")))
    assert rows[0] == ["NAME", "SECRETS", "AGE"]
    assert rows[1][:2] == ["builder", "0"]
    described = _ok(k.kubectl("describe", "serviceaccount", "builder"))
    assert re.search(r"^Name:\s+builder$", described, re.M)
    assert re.search(r"^Mountable secrets:\s+<none>$", described, re.M), described


def test_every_namespace_gets_a_default_serviceaccount(api_server):
    async def main() -> None:
        async with api_server.client() as client:
            await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
            for _ in range(100):
                names = {(sa["metadata"]["namespace"], sa["metadata"]["name"])
                         for sa in (await client.list("serviceaccounts"))["items"]}
                if {("team-a", "default"), ("default", "default"), ("kube-system", "default")} <= names:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"no default ServiceAccounts: {names}")
            await client.delete("serviceaccounts", "default", "team-a")
            for _ in range(100):
                try:
                    await client.get("serviceaccounts", "default", "team-a")
                    return
                except Exception:
                    await asyncio.sleep(0.1)
            pytest.fail("the default ServiceAccount was not created again")

    asyncio.run(main())
