"""Names are validated whole, and the readiness probes tell strangers nothing (issue 23, item 9).

`$` in a Python pattern also matches before a trailing newline, so `"web\\n"` passed as a DNS label, a
label key or value, a port name: names that print as another object's, and a newline carried into
logs, keys and `podnet` output. Against a real API server each is refused as kube-apiserver refuses it.
`/readyz` and `/healthz` answer anyone; the store's error (its addresses, its state) is for callers
who authenticate, and an anonymous one reads "reason withheld".
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
from podnet.apiserver.validation import Limits, validate

from podnet.api import selectors


@pytest.mark.parametrize("kind, obj", [
    ("Namespace", {"metadata": {"name": "web\n"}}),
    ("Service", {"metadata": {"name": "web\n", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}),
    ("Service", {"metadata": {"name": "web", "namespace": "default"},
                 "spec": {"ports": [{"port": 80, "name": "http\n"}]}}),
    ("Service", {"metadata": {"name": "web", "namespace": "default", "labels": {"app\n": "web"}},
                 "spec": {"ports": [{"port": 80}]}}),
    ("Service", {"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web\n"}},
                 "spec": {"ports": [{"port": 80}]}}),
])
def test_a_trailing_newline_is_no_part_of_a_valid_name(kind, obj):
    assert validate(kind, {"apiVersion": "v1", "kind": kind, **obj}, Limits(), namespaced=kind != "Namespace")


def test_a_label_key_or_value_with_a_trailing_newline_is_refused():
    """In a selector's text a newline is whitespace, as kube's lexer reads it; in a key or value it is not."""
    for check, text in ((selectors.validate_key, "app\n"), (selectors.validate_key, "example.com/app\n"),
                        (selectors.validate_value, "web\n")):
        with pytest.raises(ValueError):
            check(text)
    assert selectors.parse("app=web\n") == selectors.parse("app=web")
    with pytest.raises(ValueError):
        selectors.from_match_labels({"app": "web\n"})


def _get(url: str, context: ssl.SSLContext | None, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _post(url: str, context: ssl.SSLContext | None, token: str, obj: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.mark.etcd
def test_names_are_refused_and_probe_reasons_withheld_by_a_real_server(make_api_server, etcd_server):
    server = make_api_server(etcd_server.url)
    context = server.ssl_context()
    code, answer = _post(f"{server.url}/api/v1/namespaces", context, server.token,
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web\n"}})
    assert (code, answer["reason"]) == (422, "Invalid"), answer
    assert answer["message"].startswith('Namespace "web\\n" is invalid: '), answer["message"]
    assert 'metadata.name: Invalid value: "web\\n": a lowercase RFC 1123 label must consist of' in answer["message"]

    etcd_server.kill()
    for path in ("/readyz", "/healthz"):
        code, anonymous = _get(server.url + path, context)
        assert (code, anonymous) == (503, "[-]etcd failed: reason withheld\nhealthz check failed\n")
        code, admin = _get(server.url + path, context, server.token)
        assert code == 503 and admin.startswith("[-]etcd failed: ") and "reason withheld" not in admin
    assert "the store failed" in server.log()
