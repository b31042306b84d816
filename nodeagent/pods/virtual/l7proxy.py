"""A virtual pod's server behind the L7 proxy: the agent already terminates the pod's TCP, so the proxy
sits between the connection and the pod's application (agnhost), the way Envoy sits between a Cilium
endpoint's peer and its socket. Each request of the connection goes through `L7Session`; the allowed ones
reach the application, whose answers come back in order; denied and malformed ones are answered by the
proxy and counted in the pod's counters (`l7_allowed`, `l7_denied`, `l7_malformed`, `l7_not_http`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from podnet.nodeagent.l7.proxy import Answer, Forward, Judged, L7Session
from podnet.nodeagent.l7.verdict import ConnectionVerdict

from . import client

L7_COUNTERS = ("l7_allowed", "l7_denied", "l7_malformed", "l7_not_http")

# What the stack asks for a new connection (remote ip, remote port, local ip, local port): the verdict
# whose HTTP rules filter it, or None when no L7 rule covers it (the fast path).
L7Lookup = Callable[[str, int, str, int], ConnectionVerdict | None]


# Where each request's outcome goes (the node's flow log): (remote "ip:port", local "ip:port", the
# request's verdict, the status it was answered with, None when the application did not answer).
L7Report = Callable[[str, str, Judged, int | None], None]


def _status_of(response: bytes) -> int | None:
    if response.startswith(b"HTTP/1.") and response[12:13] == b" " and response[9:12].isdigit():
        return int(response[9:12])
    return None


class L7ProxiedServer:
    def __init__(
        self,
        connection: ConnectionVerdict,
        inner,
        counters: defaultdict[str, int],
        report: L7Report | None = None,
    ):
        self.session = L7Session(connection)
        self.inner = inner
        self.counters = counters
        self.report = report
        self.judged: list[Judged] = []
        self._local = self._remote = ""
        self._awaiting: Judged | None = None  # an allowed request whose answer has not come yet

    def connected(self, local: str, remote: str) -> client.Action:
        self._local, self._remote = local, remote
        return self.inner.connected(local, remote)

    def _reported(self, judged: Judged, status: int | None) -> None:
        if self.report is not None:
            self.report(self._remote, self._local, judged, status)

    def received(self, data: bytes) -> client.Action:
        send, served, close = bytearray(), [], False
        for step in self.session.feed(data):
            if isinstance(step, Judged):
                self.counters["l7_allowed" if step.verdict.allowed else "l7_denied"] += 1
                self.judged.append(step)
                if step.verdict.allowed:
                    self._awaiting = step
                else:
                    self._reported(step, 403)
            elif isinstance(step, Forward):
                action = self.inner.received(step.data)
                if action.send and self._awaiting is not None:
                    self._reported(self._awaiting, _status_of(action.send))
                    self._awaiting = None
                send += action.send
                served += action.served
                close = close or action.close
            elif isinstance(step, Answer):
                if step.reason != "denied":
                    self.counters[
                        "l7_not_http" if step.reason.startswith("not-http") else "l7_malformed"
                    ] += 1
                send += step.data
                close = close or step.close
        return client.Action(send=bytes(send), close=close, served=tuple(served))

    def peer_closed(self) -> client.Action:
        return self.inner.peer_closed()

    def closed(self, reason) -> client.Action:
        return self.inner.closed(reason)
