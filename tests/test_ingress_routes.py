"""Ingress routing without sockets: Ingresses in, (host, path) → Service backend out, as ingress-nginx
routes; which Ingresses a controller serves; a backend's ready endpoints; the request sent upstream."""

from __future__ import annotations

import pytest
from podnet.apiserver import ingressproxy, ingressroutes
from podnet.apiserver.ingressroutes import Backend, Endpoint


def _path(path: str, path_type: str, service: str, port: int | str = 80) -> dict:
    key = "number" if isinstance(port, int) else "name"
    return {"path": path, "pathType": path_type, "backend": {"service": {"name": service, "port": {key: port}}}}


def _ingress(name: str, rules: list[dict], *, created: str = "2026-01-01T00:00:00Z", default: str | None = None,
             class_name: str | None = "podnet") -> dict:
    spec: dict = {"rules": rules}
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    if class_name:
        spec["ingressClassName"] = class_name
    return {"metadata": {"name": name, "namespace": "shop", "creationTimestamp": created}, "spec": spec}


def _rule(paths: list[dict], host: str | None = None) -> dict:
    rule: dict = {"http": {"paths": paths}}
    if host:
        rule["host"] = host
    return rule


def _service(name: str) -> Backend:
    return Backend("shop", name, 80)


SHOP = ingressroutes.build([
    _ingress("web", [_rule([_path("/api", "Prefix", "api"), _path("/", "Prefix", "frontend")])]),
    _ingress("hosts", [
        _rule([_path("/", "Prefix", "admin"), _path("/login", "Exact", "login")], host="admin.example.com"),
        _rule([_path("/static", "ImplementationSpecific", "static")], host="*.cdn.example.com"),
    ], created="2026-01-02T00:00:00Z", default="admin-fallback"),
])


@pytest.mark.parametrize("host, path, service", [
    ("shop.example.com", "/", "frontend"),
    ("shop.example.com", "/index.html", "frontend"),
    ("shop.example.com", "/api", "api"),
    ("shop.example.com", "/api/", "api"),
    ("shop.example.com", "/api/v1/items", "api"),
    ("shop.example.com", "/apis", "frontend"),  # Prefix matches whole path elements
    ("10.0.0.1:8080", "/api/x", "api"),
    ("admin.example.com", "/", "admin"),
    ("ADMIN.example.com:80", "/login", "login"),
    ("admin.example.com", "/login/", "admin"),  # Exact is exact
    ("a.cdn.example.com", "/static/app.js", "static"),
    ("a.cdn.example.com", "/staticfiles", "static"),  # ImplementationSpecific: a character prefix
    ("a.cdn.example.com", "/other", "admin-fallback"),  # the Ingress's own defaultBackend
    ("a.b.cdn.example.com", "/static", "frontend"),  # a wildcard covers one label: this is the catch-all's
    ("cdn.example.com", "/static", "frontend"),
])
def test_a_request_goes_to_the_backend_of_its_host_and_path(host, path, service):
    assert ingressroutes.route(SHOP, host, path) == _service(service)


def test_the_longest_prefix_wins_and_exact_beats_it():
    table = ingressroutes.build([_ingress("i", [_rule([
        _path("/a", "Prefix", "short"), _path("/a/b", "Prefix", "long"), _path("/a/b/c", "Exact", "exact"),
        _path("/a/b", "ImplementationSpecific", "character")])])])
    assert ingressroutes.route(table, "h", "/a/x") == _service("short")
    assert ingressroutes.route(table, "h", "/a/b/x") == _service("long")
    assert ingressroutes.route(table, "h", "/a/bc") == _service("character")
    assert ingressroutes.route(table, "h", "/a/b/c") == _service("exact")


def test_the_older_ingress_keeps_a_path_both_claim():
    older = _ingress("older", [_rule([_path("/", "Prefix", "first")])], created="2026-01-01T00:00:00Z")
    newer = _ingress("newer", [_rule([_path("/", "Prefix", "second")])], created="2026-02-01T00:00:00Z")
    assert ingressroutes.route(ingressroutes.build([newer, older]), "h", "/") == _service("first")


def test_without_a_match_the_default_backend_or_nothing():
    only_default = {"metadata": {"name": "d", "namespace": "shop"},
                    "spec": {"defaultBackend": {"service": {"name": "fallback", "port": {"name": "http"}}}}}
    table = ingressroutes.build([only_default, _ingress("h", [_rule([_path("/x", "Prefix", "x")], host="named.io")])])
    assert ingressroutes.route(table, "anything", "/") == Backend("shop", "fallback", "http")
    assert ingressroutes.route(table, "named.io", "/y") is None  # a named host has its own default: none
    assert ingressroutes.route(ingressroutes.build([]), "h", "/") is None


def test_a_controller_serves_its_classes_and_unclassed_ingresses_when_its_class_is_default():
    ours = {"metadata": {"name": "podnet"}, "spec": {"controller": ingressproxy.CONTROLLER}}
    theirs = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
    ingresses = [_ingress("a", []), _ingress("b", [], class_name="nginx"), _ingress("c", [], class_name=None)]
    names = lambda chosen: [i["metadata"]["name"] for i in chosen]  # noqa: E731
    assert names(ingressroutes.served(ingresses, [ours, theirs], ingressproxy.CONTROLLER)) == ["a"]
    default = {**ours, "metadata": {"name": "podnet", "annotations": {ingressroutes.DEFAULT_CLASS_ANNOTATION: "true"}}}
    assert names(ingressroutes.served(ingresses, [default, theirs], ingressproxy.CONTROLLER)) == ["a", "c"]


def _slice(service: str, port_name: str, port: int, endpoints: list[tuple[str, str, bool]]) -> dict:
    return {"metadata": {"namespace": "shop", "labels": {ingressroutes.SERVICE_NAME_LABEL: service}},
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": ready}, "nodeName": "node-1",
                           "targetRef": {"kind": "Pod", "name": pod, "namespace": "shop"}}
                          for pod, address, ready in endpoints]}


def test_a_backend_resolves_to_the_ready_pods_on_the_services_target_port():
    services = {"shop/api": {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                                                {"name": "admin", "port": 81, "protocol": "TCP"}]}}}
    slices = [_slice("api", "http", 8080, [("api-1", "10.244.1.5", True), ("api-2", "10.244.2.5", False)]),
              _slice("api", "admin", 9090, [("api-1", "10.244.1.5", True)]),
              _slice("other", "http", 8080, [("other-1", "10.244.1.9", True)])]
    assert ingressroutes.endpoints(Backend("shop", "api", 80), services, slices) == [
        Endpoint("api-1", "shop", "node-1", "10.244.1.5", 8080)]
    assert ingressroutes.endpoints(Backend("shop", "api", "admin"), services, slices) == [
        Endpoint("api-1", "shop", "node-1", "10.244.1.5", 9090)]
    assert ingressroutes.endpoints(Backend("shop", "api", 443), services, slices) == []
    assert ingressroutes.endpoints(Backend("shop", "gone", 80), services, slices) == []


def test_the_upstream_request_carries_forwarding_headers_and_drops_hop_by_hop_ones():
    sent = ingressproxy.upstream_request("POST", "/api/items?x=1", "shop.example.com", [
        ("Host", "shop.example.com"), ("Connection", "keep-alive"), ("X-Forwarded-For", "1.2.3.4"),
        ("Accept", "*/*"), ("Content-Length", "2")], b"{}", "127.0.0.1")
    assert sent == (b"POST /api/items?x=1 HTTP/1.1\r\nHost: shop.example.com\r\nAccept: */*\r\n"
                    b"X-Real-IP: 127.0.0.1\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: shop.example.com\r\n"
                    b"X-Forwarded-Proto: http\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
