"""Name lookups of virtual pods, sent from the pod itself.

Each query leaves the pod's own stack as a real datagram (or TCP connection) from the pod IP to its
nameserver, 10.96.0.10:53 by default, so it takes the path any pod traffic takes: kube-proxy's DNAT to
the kube-dns endpoint, the pod's egress NetworkPolicy (DNS needs allowing like any other egress), and
the host bridge to a DNS server on the host network. The resolver logic is pure
(`pods/virtual/resolver.py`); this module only carries its queries and answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dnslib import QTYPE, RCODE, DNSError, DNSRecord
from podnet.nodeagent.pods.virtual import client as ops
from podnet.nodeagent.pods.virtual.resolver import (
    Lookup,
    Query,
    ResolvConf,
    UnresolvableError,
    build_query,
    candidates,
    frame_tcp,
    is_address,
    tcp_message,
)
from podnet.nodeagent.pods.virtual.stack import LOOPBACK_ADDRESS, PodStack
from podnet.nodeagent.pods.virtual.tcp import LocalProtocolError

from podnet.rpc.session import RpcError

if TYPE_CHECKING:
    from podnet.nodeagent.endpoints import VirtualPod

Start = Callable[[PodStack, float], int]
Operate = Callable[["VirtualPod", Start, float], Awaitable[ops.OperationEvent]]
Emit = Callable[["VirtualPod", list[bytes], float], None]


class ExchangeFailed(Exception):
    """A query that got no answer; the message says why ("timed out", "connection refused", ...)."""


class PodDns:
    """Resolves names for the agent's virtual pods and answers `pod.dig`.

    `operate` runs one operation on a pod's stack to its end (the dataplane's `operate`); `emit` sends what
    the stack wrote and delivers its events (the dataplane's `emit`)."""

    def __init__(self, operate: Operate, emit: Emit, *, zone: str = "cluster.local", nameserver: str = "10.96.0.10"):
        self._operate = operate
        self._emit = emit
        self.zone = zone
        self.nameserver = nameserver
        self._rng = random.Random()

    def conf_for(self, pod: VirtualPod, budget: float | None = None) -> ResolvConf:
        """The pod's resolv.conf; `budget` (seconds) bounds the wait for each answer so that a lookup whose
        every try times out still ends within it."""
        conf = ResolvConf.for_pod(pod.port.namespace, zone=self.zone, nameserver=self.nameserver)
        if budget is None:
            return conf
        timeout = max(0.1, min(conf.timeout, budget / conf.attempts))
        return dataclasses.replace(conf, timeout=timeout)

    def probe_payload(self, port: int) -> bytes:
        """What a UDP probe sends: to port 53 a question for the zone's SOA, which a DNS server answers (and
        an agnhost-like port answers as any datagram); elsewhere agnhost's `hostname`."""
        if port == 53:
            return build_query(f"{self.zone}.", "SOA", self._rng.getrandbits(16))
        return b"hostname"

    async def address(self, pod: VirtualPod, host: str, budget: float | None = None) -> str:
        """`host` itself when it is an IPv4 address, else the first address its name resolves to from
        the pod; UnresolvableError with the reason otherwise. `localhost` is the loopback address, as the
        pod's /etc/hosts says before any DNS is asked."""
        if is_address(host):
            return host
        if host.rstrip(".").lower() == "localhost":
            return LOOPBACK_ADDRESS
        lookup = Lookup(host, self.conf_for(pod, budget), self._rng)
        while isinstance(step := lookup.next_step(), Query):
            try:
                lookup.receive(await self.exchange(pod, lookup.conf, step))
            except ExchangeFailed as exc:
                lookup.failed(str(exc))
        if isinstance(step, UnresolvableError):
            raise step
        return step.address

    async def url_address(self, pod: VirtualPod, url: str, budget: float | None = None) -> str | None:
        """The address to connect to for an http URL whose host is a name; None for an IP literal or a
        URL `http_get` will refuse with its own message."""
        try:
            host = urlsplit(url if "://" in url else f"http://{url}").hostname
        except ValueError:
            return None
        if not host or is_address(host):
            return None
        return await self.address(pod, host, budget)

    async def exchange(self, pod: VirtualPod, conf: ResolvConf, query: Query) -> bytes:
        """Sends one query from the pod to `conf`'s nameserver; the answer's bytes, or ExchangeFailed."""
        if query.tcp:
            return await self._exchange_tcp(pod, conf.nameserver, conf.port, query.payload, query.timeout)

        def start(stack: PodStack, now: float) -> int:
            return stack.udp_exchange(conf.nameserver, conf.port, query.payload, now, timeout=query.timeout)

        event = await self._operate(pod, start, query.timeout)
        if isinstance(event, ops.Failed):
            raise ExchangeFailed(event.reason)
        return event.result.payload

    async def _exchange_tcp(self, pod: VirtualPod, server: str, port: int, message: bytes, timeout: float) -> bytes:
        """One query over a TCP connection the pod opens: length-prefixed both ways (RFC 1035 4.2.2)."""
        loop = asyncio.get_running_loop()
        opened, answered = loop.create_future(), loop.create_future()
        buffer = bytearray()

        def on_event(event: Any) -> None:
            if isinstance(event, ops.Opened) and not opened.done():
                opened.set_result(None)
            elif isinstance(event, ops.Received):
                buffer.extend(event.data)
                reply = tcp_message(buffer)
                if reply is not None and not answered.done():
                    answered.set_result(reply)
            elif isinstance(event, ops.PeerClosed | ops.Failed | ops.Completed):
                reason = event.reason if isinstance(event, ops.Failed) else "connection closed before an answer"
                for future in (opened, answered):
                    if not future.done():
                        future.set_exception(ExchangeFailed(reason))

        deadline = time.monotonic() + timeout
        now = time.monotonic()
        op = pod.stack.open_tcp(server, port, now, timeout=timeout)
        pod.listeners[op] = on_event
        try:
            self._emit(pod, pod.stack.poll(now), now)
            await asyncio.wait_for(opened, timeout)
            now = time.monotonic()
            pod.stack.send(op, frame_tcp(message), now)
            self._emit(pod, pod.stack.poll(now), now)
            reply = await asyncio.wait_for(answered, max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            pod.stack.close(op, now)
            self._emit(pod, pod.stack.poll(now), now)
            return reply
        except TimeoutError:
            raise ExchangeFailed("timed out") from None
        finally:
            with contextlib.suppress(LocalProtocolError):  # the stream has already ended
                if not answered.done() or answered.exception() is not None:
                    now = time.monotonic()
                    pod.stack.abort(op, now)
                    self._emit(pod, pod.stack.poll(now), now)
            pod.listeners.pop(op, None)

    async def dig(self, pod: VirtualPod, params: dict) -> dict:
        """`pod.dig`: one question from the pod, as dig asks it. Params: `name`, `type` (A), `tcp`,
        `server` ("IP[:PORT]", default the pod's nameserver), `search` (try the pod's search list, as
        dig +search does, until an answer that is not NXDOMAIN), `timeout` (per try), `tries`.
        Result: `{"ok", "reply" (bytes), "text" (the message as dig prints it), "name" (asked),
        "server", "transport", "seconds"}`, or `{"ok": False, "reason"}` without an answer."""
        name = str(params.get("name") or "")
        qtype = str(params.get("type") or "A").upper()
        if QTYPE.get(qtype, None) is None:
            raise RpcError("BadRequest", f"unknown record type {qtype!r}")
        conf = self.conf_for(pod)
        if params.get("server"):
            host, _, port = str(params["server"]).partition(":")
            if not is_address(host) or (port and not (port.isascii() and port.isdigit())):
                raise RpcError("BadRequest", f"server {params['server']!r} is not IP[:PORT]")
            conf = dataclasses.replace(conf, nameserver=host, port=int(port or 53))
        timeout = float(params.get("timeout") or conf.timeout)
        tries = int(params.get("tries") or conf.attempts)
        try:
            names = candidates(name, conf) if params.get("search") else (name if name.endswith(".") else f"{name}.",)
        except UnresolvableError as exc:
            raise RpcError("BadRequest", str(exc)) from None
        started = time.monotonic()
        tcp = bool(params.get("tcp"))
        for asked in names:
            reply, transport, reason = await self._ask(pod, conf, asked, qtype, tcp, timeout, tries)
            if reply is None:
                return {"ok": False, "reason": f"no answer from {conf.server} for {asked} ({reason})"}
            try:
                message = DNSRecord.parse(reply)
            except (DNSError, ValueError, IndexError) as exc:
                return {"ok": False, "reason": f"malformed answer from {conf.server}: {exc}"}
            if message.header.rcode != RCODE.NXDOMAIN or asked == names[-1]:
                break
        return {
            "ok": True, "reply": reply, "text": str(message), "name": asked, "server": conf.server,
            "transport": transport, "seconds": time.monotonic() - started,
        }

    async def _ask(
        self, pod: VirtualPod, conf: ResolvConf, name: str, qtype: str, tcp: bool, timeout: float, tries: int
    ) -> tuple[bytes | None, str, str]:
        """(answer, transport, reason when none): UDP with retries, TCP when asked or when truncated."""
        query_id = self._rng.getrandbits(16)
        payload = build_query(name, qtype, query_id, edns=True)
        reason = "no answer"
        for _ in range(max(1, tries)):
            try:
                reply = await self.exchange(pod, conf, Query(name, query_id, payload, tcp, timeout))
            except ExchangeFailed as exc:
                reason = str(exc)
                continue
            if reply[:2] != payload[:2]:
                reason = "an answer with another ID"
                continue
            if not tcp and len(reply) > 2 and reply[2] & 0x02:  # TC: ask again over TCP, as dig does
                tcp = True
                try:
                    reply = await self.exchange(pod, conf, Query(name, query_id, payload, True, timeout))
                except ExchangeFailed as exc:
                    reason = str(exc)
                    continue
            return reply, "TCP" if tcp else "UDP", ""
        return None, "TCP" if tcp else "UDP", reason
