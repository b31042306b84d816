"""Relayed pods: the relay annotation, the readiness probe read from a pod, Kubernetes' probe thresholds,
and (real sockets on 127.0.0.1) what a refusal from the relayed process does to the pod's readiness."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from podnet.nodeagent.relaypods import HttpProbe, Readiness, RelayedPods, http_probe
from podnet.overlay.wire import ipv4, tcp, udp
from podnet.overlay.wire.ipv4 import IPProtocol

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


def test_a_container_that_is_gone_is_unready_at_once_and_probes_bring_it_back():
    readiness = Readiness(success_threshold=1, failure_threshold=3)
    readiness.record(True)
    assert readiness.stopped() is True and not readiness.ready
    assert readiness.stopped() is False
    assert readiness.record(True) is True and readiness.ready


def _closed_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("protocol", ["UDP", "TCP"])
async def test_a_refusal_makes_the_pod_unready_at_once(protocol):
    """The process behind port 53 is gone while its readiness endpoint still answers (a probe alone would
    take three failures): the first refused flow makes the pod not ready. A TCP client gets its RST; a UDP
    client is told nothing (no port unreachable), so that it retries on its timeout."""
    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    health_port = runner.addresses[0][1]
    delivered: list[bytes] = []
    changes: list[str] = []
    relays = RelayedPods("127.0.0.1", delivered.append, changes.append)
    kind = socket.SOCK_DGRAM if protocol == "UDP" else socket.SOCK_STREAM
    pod = {"metadata": {"name": "coredns-x", "namespace": "kube-system", "annotations": {
               "podnet.io/relay": format_relay({53: ("127.0.0.1", _closed_port(kind)),
                                                9153: ("127.0.0.1", health_port)})}},
           "spec": {"containers": [{"name": "coredns", "readinessProbe": {
               "httpGet": {"path": "/healthz", "port": 9153}, "periodSeconds": 30}}]}}
    try:
        assert relays.attach("kube-system/coredns-x", pod, "10.244.1.9")
        await _until(lambda: relays.ready("kube-system/coredns-x"))
        assert changes == ["kube-system/coredns-x"]
        if protocol == "UDP":
            body = udp.encode(udp.UdpDatagram(5353, 53, b"a query"), "10.244.2.7", "10.244.1.9")
        else:
            body = tcp.encode(tcp.TcpSegment(5353, 53, 1000, 0, tcp.TcpFlags.SYN, 65535), "10.244.2.7", "10.244.1.9")
        packet = ipv4.encode(ipv4.IPv4Packet("10.244.2.7", "10.244.1.9", IPProtocol[protocol], body))
        assert relays.take(packet, asyncio.get_running_loop().time())
        await _until(lambda: not relays.ready("kube-system/coredns-x"))
        assert changes == ["kube-system/coredns-x"] * 2
        if protocol == "UDP":
            assert delivered == [] and relays.bridge.counters["udp.refused-dropped"] == 1
        else:
            await _until(lambda: delivered)
            (reset,) = delivered
            assert tcp.decode(ipv4.decode(reset).payload, "10.244.1.9", "10.244.2.7").flags & tcp.TcpFlags.RST
    finally:
        await relays.close()
        await runner.cleanup()


async def _until(condition, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)
