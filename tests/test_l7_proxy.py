"""The L7 proxy's session, without sockets: a client's bytes through `L7Session` to a real agnhost
server core (what every virtual pod port runs), and the server's answers and the proxy's own back."""

from __future__ import annotations

import yaml
from podnet.nodeagent.l7.cilium import CiliumPolicyIndex
from podnet.nodeagent.l7.proxy import Answer, Forward, Judged, L7Session
from podnet.nodeagent.l7.verdict import combine
from podnet.nodeagent.pods.virtual.agnhost import AgnhostTcp
from podnet.nodeagent.policy import INGRESS, Flow, compile_objects
from podnet.nodeagent.policy.compile import pod_info
from support.l7pods import running_pod

from podnet.api.ciliumpolicy import parse_cilium_policy

POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-l7, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http:
        - method: GET|HEAD
          path: /(hostname|echo\\?.*)
"""


PODS = [
    running_pod(name, ip, name, namespace="shop")
    for name, ip in (("backend", "10.244.1.10"), ("frontend", "10.244.1.20"))
]


def frontend_connection():
    flow = Flow("TCP", "10.244.1.20", 40000, "10.244.1.10", 8080)
    index = CiliumPolicyIndex([parse_cilium_policy(yaml.safe_load(POLICY))], [pod_info(p) for p in PODS])
    verdict = combine(compile_objects(PODS).verdict(INGRESS, flow), index.decide(INGRESS, flow))
    assert verdict.allowed and verdict.l7 is not None
    return verdict


class ThroughProxy:
    """A client connection: the proxy session in front of one agnhost connection, run in order."""

    def __init__(self):
        self.session = L7Session(frontend_connection())
        self.server = AgnhostTcp("backend", "10.244.1.20:40000")
        self.judged: list[Judged] = []
        self.closed = False

    def send(self, data: bytes) -> bytes:
        out = b""
        for step in self.session.feed(data):
            if isinstance(step, Judged):
                self.judged.append(step)
            elif isinstance(step, Forward):
                out += self.server.feed(step.data).data
            elif isinstance(step, Answer):
                out += step.data
                self.closed = self.closed or step.close
        return out


def get(target: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: backend.shop:8080\r\n{extra}\r\n".encode()


def test_keep_alive_connection_carries_allowed_and_denied_requests_in_turn():
    proxy = ThroughProxy()
    assert proxy.send(get("/hostname")).endswith(b"\r\n\r\nbackend")
    denied = proxy.send(get("/hostname", "DELETE"))
    assert denied == (
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n\r\nAccess denied\r\n"
    )
    assert proxy.send(get("/echo?msg=again")).endswith(b"\r\n\r\nagain")
    assert b"403 Forbidden" in proxy.send(get("/admin"))
    assert not proxy.closed
    assert [(j.method, j.target, j.verdict.allowed) for j in proxy.judged] == [
        ("GET", "/hostname", True),
        ("DELETE", "/hostname", False),
        ("GET", "/echo?msg=again", True),
        ("GET", "/admin", False),
    ]
    assert proxy.judged[1].verdict.reason == "denied by shop/backend-l7 ingress rule 0: no HTTP rule matched"
    assert proxy.judged[0].host == "backend.shop:8080"


def test_pipelined_requests_are_answered_in_order():
    proxy = ThroughProxy()
    body = b"x" * 20
    answers = proxy.send(
        get("/echo?msg=one")
        + get("/hostname", "POST", f"Content-Length: {len(body)}\r\n")
        + body
        + get("/echo?msg=three")
    )
    first, denied, third = answers.split(b"HTTP/1.1 ")[1:]
    assert first.endswith(b"one") and denied.startswith(b"403 Forbidden") and third.endswith(b"three")


def test_denied_body_is_dropped_not_forwarded_and_close_is_honoured():
    proxy = ThroughProxy()
    out = proxy.send(get("/upload", "PUT", "Content-Length: 5\r\nConnection: close\r\n") + b"hello")
    assert out.startswith(b"HTTP/1.1 403 Forbidden") and b"connection: close" in out
    assert proxy.closed
    assert proxy.send(get("/hostname")) == b""  # nothing is read after a closing request


def test_malformed_request_gets_400_with_the_reason_and_closes():
    proxy = ThroughProxy()
    proxy.send(get("/hostname"))
    out = proxy.send(b"GET /hostname HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert out.endswith(b"\r\n\r\nContent-Length is not one decimal number\r\n")
    assert proxy.closed


def test_non_http_payload_is_dropped_without_an_answer():
    proxy = ThroughProxy()
    steps = proxy.session.feed(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 \r\n\r\n")
    assert steps == [Answer(b"", True, "not-http: the method is not a token")]
    assert ThroughProxy().session.feed(b"\x00" * 100) == [
        Answer(b"", True, "not-http: the method is not a token")
    ]


def test_chunked_request_is_reframed_for_the_server():
    session = L7Session(frontend_connection())
    steps = session.feed(
        b"GET /hostname HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
    )
    forwarded = b"".join(s.data for s in steps if isinstance(s, Forward))
    assert forwarded == (
        b"GET /hostname HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
    )
