"""The pure parts of relayed pods: the relay annotation, the readiness probe read from a pod, and Kubernetes'
probe thresholds."""

from __future__ import annotations

import pytest
from podnet.nodeagent.relaypods import HttpProbe, Readiness, http_probe

from podnet.api.clusterdns import format_relay, kube_dns_service, parse_relay, relay_of


def test_a_relay_reads_back_as_written():
    relay = {9153: ("127.0.0.10", 6445), 53: ("127.0.0.10", 1053)}
    text = format_relay(relay)
    assert text == "53=127.0.0.10:1053,9153=127.0.0.10:6445"
    assert parse_relay(text) == relay
    assert parse_relay(" 53=10.0.0.4:53 , 80=10.0.0.4:8080") == {53: ("10.0.0.4", 53), 80: ("10.0.0.4", 8080)}


@pytest.mark.parametrize(("text", "error"), [
    ("", "is not PORT=ADDRESS:PORT"),
    ("53", "is not PORT=ADDRESS:PORT"),
    ("53=127.0.0.10", "is not PORT=ADDRESS:PORT"),
    ("53=dns.example:53", "is not an IPv4 address"),
    ("53=0.0.0.0:53", "no address to connect to"),
    ("dns=127.0.0.10:1053", "container port 'dns' is not a port number"),
    ("53=127.0.0.10:70000", "target port '70000' is not a port number"),
    ("0=127.0.0.10:53", "container port '0' is not a port number"),
    ("53=127.0.0.10:¹", "is not a port number"),
])
def test_a_malformed_relay_says_what_is_wrong(text, error):
    with pytest.raises(ValueError, match=error):
        parse_relay(text)


def _pod(namespace: str, annotation: str | None, containers: list[dict] | None = None) -> dict:
    annotations = {} if annotation is None else {"podnet.io/relay": annotation}
    return {"metadata": {"name": "p", "namespace": namespace, "annotations": annotations},
            "spec": {"containers": containers or [{"name": "c"}]}}


def test_only_kube_system_pods_are_relayed():
    assert relay_of(_pod("kube-system", "53=127.0.0.10:1053")) == {53: ("127.0.0.10", 1053)}
    # Elsewhere anyone who may create a pod could make a pod address stand for a host port.
    assert relay_of(_pod("default", "53=127.0.0.10:1053")) is None
    assert relay_of(_pod("kube-system", None)) is None


def test_the_kube_dns_service_selects_the_dns_pods_on_53():
    service = kube_dns_service("10.96.0.10")
    assert service["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert [(p["name"], p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("dns", "UDP", 53, 53), ("dns-tcp", "TCP", 53, 53)]


def test_the_readiness_probe_is_read_with_kubernetes_defaults():
    named = {"name": "c", "ports": [{"name": "metrics", "containerPort": 9153}],
             "readinessProbe": {"httpGet": {"path": "/ready", "port": "metrics"}, "periodSeconds": 2}}
    assert http_probe(_pod("kube-system", None, [{"name": "first"}, named])) == HttpProbe(9153, "/ready", period=2.0)
    bare = {"name": "c", "readinessProbe": {"httpGet": {"port": 8181}}}
    assert http_probe(_pod("kube-system", None, [bare])) == HttpProbe(8181, "/", 10.0, 1.0, 1, 3)
    for probe in ({"tcpSocket": {"port": 53}}, {"httpGet": {"port": "nameless"}}, None):
        assert http_probe(_pod("kube-system", None, [{"name": "c", "readinessProbe": probe}])) is None


def test_readiness_follows_the_thresholds():
    readiness = Readiness(success_threshold=2, failure_threshold=3)
    assert not readiness.ready
    assert [readiness.record(passed) for passed in (True, False, True, True)] == [False, False, False, True]
    assert readiness.ready
    # Failures must come in a row: a pass in between starts the count again.
    assert [readiness.record(passed) for passed in (False, False, True, False, False)] == [False] * 5
    assert readiness.ready
    assert readiness.record(False) is True and not readiness.ready


def test_a_first_pass_makes_a_pod_ready_at_once():
    readiness = Readiness()
    assert readiness.record(True) and readiness.ready
    assert not readiness.record(True)
