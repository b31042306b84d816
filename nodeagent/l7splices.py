"""The L7 proxy in front of netns pods, and behind them for their egress HTTP rules: the splices
(nodeagent/l7/splice.py) the dataplane holds, keyed by the packets' flow as the pod sees it, with their
timers.

A netns pod's TCP is its kernel's, so the agent cannot wrap the pod's application as it does a virtual
pod's; it cuts the connection in two instead, at the pod's TAP device:
- ingress: a client's SYN that the pipeline delivers to the pod, on a connection an L7 rule of the pod
  covers (the enforcer's verdict, `lookup`), starts a splice; the pod is its server;
- egress: a SYN the pod sends, on a connection its egress HTTP rules cover, starts one with the pod as
  its client; the pipeline has already taken the SYN (DNAT, policy), and the splice's own SYN follows
  it on the same conntrack entry.
From then on the connection's packets in both directions go to the splice, never to the pipeline or
the pod directly. What the splice sends to the pod is written to the TAP; what it sends to the other
end leaves through the pipeline as the pod's packets. A connection no L7 rule covers never meets this:
the dataplane asks only while a splice exists or a verdict waits (`active`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from podnet.nodeagent.endpoints import KernelPod
from podnet.nodeagent.l7.proxy import Judged
from podnet.nodeagent.l7.splice import L7Splice
from podnet.nodeagent.l7.verdict import ConnectionVerdict
from podnet.overlay.pipeline.conntrack import FlowKey
from podnet.overlay.pipeline.packets import flow_key
from podnet.overlay.wire.addresses import int_to_ip

_TCP = 6
_BARE_SYN_MASK, _SYN = 0x16, 0x02  # SYN, RST and ACK; of those, SYN alone
# Splices held at once; a SYN past it is dropped (counted), as a full accept queue drops it.
MAX_SPLICES = 4096

# The verdict for a new connection (client ip, client port, server ip, server port), or None.
Lookup = Callable[[str, int, str, int], ConnectionVerdict | None]
# Where each request goes once answered: (client "ip:port", server "ip:port", request, status, direction,
# seconds until the answer's end).
Report = Callable[[str, str, Judged, int | None, str, float | None], None]
# Sends packets from a local pod into the pipeline, and what it decides on.
ToPipeline = Callable[[KernelPod, list[bytes], float], None]


@dataclass(slots=True)
class _Held:
    splice: L7Splice
    pod: KernelPod  # the local end
    pod_is_server: bool
    keys: tuple[FlowKey, FlowKey]
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0


class L7Splices:
    def __init__(self, lookup: Lookup, report: Report, to_pipeline: ToPipeline, waiting: Callable[[], bool]):
        self.lookup = lookup
        self.report = report
        self.to_pipeline = to_pipeline
        self.waiting = waiting  # whether a verdict for a new connection waits to be taken
        self.by_key: dict[FlowKey, tuple[_Held, bool]] = {}  # packet's flow -> splice, from its client?
        self.counters: dict[str, int] = {}
        self._rng = random.Random()

    def active(self) -> bool:
        return bool(self.by_key) or self.waiting()

    def to_pod(self, pod: KernelPod, packet: bytes, now: float) -> list[bytes] | None:
        """A packet the pipeline delivers to a netns pod: None when it is not the proxy's, else what
        must leave through the pipeline as the pod's packets because of it."""
        key, flags = flow_key(packet)
        if key is None or key[0] != _TCP:
            return None
        held = self.by_key.get(key)
        if held is not None:
            return self._feed(held, packet, now)
        if flags & _BARE_SYN_MASK != _SYN:
            return None
        _, src, src_port, dst, dst_port = key
        verdict = self.lookup(int_to_ip(src), src_port, int_to_ip(dst), dst_port)
        if verdict is None:
            return None
        return self._start(pod, packet, verdict, now, pod_is_server=True)

    def from_pod(self, pod: KernelPod, packet: bytes, now: float) -> list[bytes] | None:
        """A packet a netns pod sent: None when it is not the proxy's, else what must leave through the
        pipeline because of it."""
        key, _ = flow_key(packet)
        held = self.by_key.get(key) if key is not None else None
        return None if held is None else self._feed(held, packet, now)

    def start_egress(self, pod: KernelPod, syn: bytes, verdict: ConnectionVerdict, now: float) -> list[bytes]:
        """The pod's SYN, whose connection its egress HTTP rules cover, the pipeline having let it pass."""
        return self._start(pod, syn, verdict, now, pod_is_server=False) or []

    # ---- the splices -------------------------------------------------------------------------------

    def _start(
        self, pod: KernelPod, syn: bytes, verdict: ConnectionVerdict, now: float, *, pod_is_server: bool
    ) -> list[bytes]:
        if len(self.by_key) >= 2 * MAX_SPLICES:
            self._count("l7_splice_full")
            return []
        splice = L7Splice(syn, verdict, now, iss=(self._rng.getrandbits(32), self._rng.getrandbits(32)))
        key, _ = flow_key(syn)
        proto, src, src_port, dst, dst_port = key
        reply = (proto, dst, dst_port, src, src_port)
        held = _Held(splice, pod, pod_is_server, (key, reply))
        self.by_key[key] = (held, True)
        self.by_key[reply] = (held, False)
        return self._settle(held, now)

    def _feed(self, entry: tuple[_Held, bool], packet: bytes, now: float) -> list[bytes]:
        held, from_client = entry
        if from_client:
            held.splice.from_client(packet, now)
        else:
            held.splice.from_server(packet, now)
        return self._settle(held, now)

    def _settle(self, held: _Held, now: float) -> list[bytes]:
        """Writes what is for the pod to its TAP and returns what is for the pipeline; reports the
        requests answered, re-arms the timer, and forgets a finished splice."""
        splice = held.splice
        to_client, to_server = splice.take_packets()
        to_pod, onward = (to_server, to_client) if held.pod_is_server else (to_client, to_server)
        for packet in to_pod:
            held.pod.netns.deliver(packet)
        direction = "ingress" if held.pod_is_server else "egress"
        client = f"{splice.client_ip}:{splice.client_port}"
        server = f"{splice.server_ip}:{splice.server_port}"
        for judged, status, latency in splice.take_records():
            self.report(client, server, judged, status, direction, latency)
        for name, value in splice.counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        splice.counters.clear()
        if splice.finished:
            for key in held.keys:
                self.by_key.pop(key, None)
            if held.timer is not None:
                held.timer.cancel()
            return onward
        deadline = splice.next_deadline()
        if deadline is not None and (held.timer is None or deadline < held.timer_at):
            if held.timer is not None:
                held.timer.cancel()
            held.timer_at = deadline
            held.timer = asyncio.get_running_loop().call_at(max(deadline, now), self._fire, held)
        return onward

    def _fire(self, held: _Held) -> None:
        held.timer = None
        if self.by_key.get(held.keys[0], (None,))[0] is not held:
            return
        now = time.monotonic()
        held.splice.handle_timer(now)
        onward = self._settle(held, now)
        if onward:
            self.to_pipeline(held.pod, onward, now)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def close(self) -> None:
        for held, _ in self.by_key.values():
            if held.timer is not None:
                held.timer.cancel()
        self.by_key.clear()
