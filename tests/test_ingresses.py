"""networking.k8s.io/v1 Ingresses and IngressClasses through the real kubectl, as against kube-apiserver 1.31:
`kubectl create ingress`, the columns of `get ingress` and `get ingressclass`, the default class given to
an Ingress created without one, and the validation rules. The routing itself is tested without sockets in
test_ingress_routes.py, and end to end in test_three_tier.py."""

from __future__ import annotations

import json
import re

import pytest
from support.kubectl import kubectl_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _ok(done) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _class(name: str, controller: str, default: bool = False) -> dict:
    meta: dict = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": meta,
            "spec": {"controller": controller}}


def test_ingress_classes_and_the_default_one(kubectl_server):  # noqa: F811
    k = kubectl_server
    _ok(k.kubectl("apply", "-f", "-", input=json.dumps(_class("other", "example.com/other"))))
    _ok(k.kubectl("create", "ingress", "before", "--rule=shop.example.com/=web:80"))
    assert "ingressClassName" not in json.loads(_ok(k.kubectl("get", "ing", "before", "-o", "json")))["spec"]
    _ok(k.kubectl("apply", "-f", "-", input=json.dumps(_class("podnet", "podnet.io/ingress", default=True))))
    lines = _ok(k.kubectl("get", "ingressclass")).splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]
    assert re.match(r"^other\s+example.com/other\s+<none>\s+\d+s$", lines[1]), lines
    assert re.match(r"^podnet\s+podnet.io/ingress\s+<none>\s+\d+s$", lines[2]), lines

    assert _ok(k.kubectl("create", "ingress", "shop", "--rule=shop.example.com/api*=api:http",
                         "--rule=shop.example.com/=web:80", "--rule=admin.example.com/=admin:80")) \
        == "ingress.networking.k8s.io/shop created\n"
    ingress = json.loads(_ok(k.kubectl("get", "ingress", "shop", "-o", "json")))
    assert ingress["spec"]["ingressClassName"] == "podnet"  # the default class, given on create
    assert ingress["metadata"]["generation"] == 1
    assert ingress["spec"]["rules"][0]["http"]["paths"] == [
        {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"name": "http"}}}},
        {"path": "/", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]
    lines = _ok(k.kubectl("get", "ingress")).splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert re.match(r"^before\s+<none>\s+shop.example.com\s+80\s+\d+s$", lines[1]), lines
    assert re.match(r"^shop\s+podnet\s+shop.example.com,admin.example.com\s+80\s+\d+s$", lines[2]), lines


def test_a_bad_ingress_is_refused_field_by_field(kubectl_server):  # noqa: F811
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "bad"},
               "spec": {"ingressClassName": "other", "rules": [
                   {"host": "10.0.0.1", "http": {"paths": [
                       {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 80}}}},
                       {"path": "/a//b", "pathType": "Exact", "backend": {"service": {"name": "api"}}},
                       {"path": "/x", "pathType": "Regex", "backend": {"service": {"name": "api", "port": {"number": 80}}}},
                   ]}}]}}
    done = kubectl_server.kubectl("create", "-f", "-", input=json.dumps(ingress))
    assert done.returncode == 1
    assert done.stderr.splitlines()[1:] == [
        '* spec.rules[0].host: Invalid value: "10.0.0.1": must be a DNS name, not an IP address',
        '* spec.rules[0].http.paths[0].path: Invalid value: "api": must be an absolute path',
        "* spec.rules[0].http.paths[1].path: Invalid value: \"/a//b\": must not contain '//'",
        "* spec.rules[0].http.paths[1].backend: Required value: port name or number is required",
        '* spec.rules[0].http.paths[2].pathType: Unsupported value: "Regex": supported values: "Exact", '
        '"ImplementationSpecific", "Prefix"',
    ]
    empty = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "empty"}, "spec": {}}
    done = kubectl_server.kubectl("create", "-f", "-", input=json.dumps(empty))
    assert done.stderr == ('The Ingress "empty" is invalid: spec: Invalid value: []: either `defaultBackend` or '
                           '`rules` must be specified\n')


def test_an_ingress_class_keeps_its_controller(kubectl_server):  # noqa: F811
    k = kubectl_server
    _ok(k.kubectl("apply", "-f", "-", input=json.dumps(_class("fixed", "example.com/one"))))
    done = k.kubectl("patch", "ingressclass", "fixed", "-p", '{"spec":{"controller":"example.com/two"}}')
    assert done.returncode == 1
    assert done.stderr == ('The IngressClass "fixed" is invalid: spec.controller: Invalid value: "example.com/two": '
                           "field is immutable\n")
    done = k.kubectl("create", "-f", "-", input=json.dumps(_class("loose", "no-domain")))
    assert done.stderr == ('The IngressClass "loose" is invalid: spec.controller: Invalid value: "no-domain": must be '
                           'a domain-prefixed path (such as "acme.io/foo")\n')
