"""The Services' variables in a pod's environment, as the kubelet sets them (nodeagent/serviceenv.py)."""

from __future__ import annotations

from podnet.nodeagent.serviceenv import with_services


def _service(namespace: str, name: str, ip: str, *ports: tuple[str, int, str]) -> dict:
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}}


KUBERNETES = _service("default", "kubernetes", "10.96.0.1", ("https", 443, "TCP"))
WEB = _service("team-a", "web-api", "10.96.7.7", ("", 80, "TCP"), ("metrics", 9090, "UDP"))
HEADLESS = _service("team-a", "db", "None", ("", 5432, "TCP"))
OTHER = _service("team-b", "secret-svc", "10.96.9.9", ("", 80, "TCP"))


def _pod(namespace: str = "team-a", **spec: object) -> dict:
    return {"metadata": {"namespace": namespace, "name": "p"}, "spec": spec}


def test_every_pod_finds_the_api_server_as_the_kubelet_tells_it() -> None:
    env = dict(with_services([], _pod(enableServiceLinks=False), [KUBERNETES, WEB, OTHER]))
    assert env == {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
    }


def test_service_links_of_the_pods_namespace_only_and_never_headless() -> None:
    env = dict(with_services([], _pod(), [KUBERNETES, WEB, HEADLESS, OTHER]))
    assert env["WEB_API_SERVICE_HOST"] == "10.96.7.7" and env["WEB_API_SERVICE_PORT"] == "80"
    assert env["WEB_API_SERVICE_PORT_METRICS"] == "9090"
    assert env["WEB_API_PORT"] == "tcp://10.96.7.7:80"
    assert env["WEB_API_PORT_9090_UDP"] == "udp://10.96.7.7:9090" and env["WEB_API_PORT_9090_UDP_PROTO"] == "udp"
    assert not any(k.startswith(("DB_", "SECRET_SVC_")) for k in env)


def test_the_containers_own_variables_win_and_come_first() -> None:
    own = [("KUBERNETES_SERVICE_HOST", "my-proxy"), ("MODE", "x")]
    env = with_services(own, _pod(), [KUBERNETES])
    assert env[:2] == own and dict(env)["KUBERNETES_SERVICE_HOST"] == "my-proxy"
    assert dict(env)["KUBERNETES_SERVICE_PORT"] == "443"


def test_a_kubernetes_service_of_the_pods_namespace_wins_over_the_api_servers() -> None:
    own_kubernetes = _service("team-a", "kubernetes", "10.96.3.3", ("", 8080, "TCP"))
    env = dict(with_services([], _pod(), [KUBERNETES, own_kubernetes]))
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.3.3"
    env = dict(with_services([], _pod(), [own_kubernetes, KUBERNETES]))
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.3.3"
