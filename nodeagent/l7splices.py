"""The L7 proxy where the agent cannot wrap a pod's server: in front of netns pods, and behind any pod
whose egress HTTP rules must be enforced. The splices (nodeagent/l7/splice.py) the dataplane holds,
keyed by the packets' flow as the pod sees it, with their timers.

A netns pod's TCP is its kernel's, so the agent cannot wrap the pod's application as it does a virtual
pod's server; it cuts the connection in two instead, between the pod and the pipeline:
- ingress: a client's SYN that the pipeline delivers to a netns pod, on a connection an L7 rule of the
  pod covers (the enforcer's verdict, `lookup`), starts a splice; the pod is its server;
- egress: a SYN a pod (netns or virtual) sends, on a connection its egress HTTP rules cover, starts one
  with the pod as its client; the pipeline has already taken the SYN (DNAT, policy), and the splice's
  own SYN follows it on the same conntrack entry.
From then on the connection's packets in both directions go to the splice, never to the pipeline or
the pod directly: what the splice sends to the pod, the dataplane hands to the pod (`deliver`); what it
sends to the other end leaves through the pipeline as the pod's packets. A connection no L7 rule covers
never meets this: the dataplane asks only while a splice exists or a verdict waits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from podnet.nodeagent.endpoints import KernelPod, StackEndpoint
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
# What a splice sends because of a packet: (IPv4 packets for the local pod, for the pipeline as the pod's).
Moved = tuple[list[bytes], list[bytes]]
# Where each request goes once answered: (client "ip:port", server "ip:port", request, status, direction,
# seconds until the answer's end).
Report = Callable[[str, str, Judged, int | None, str, float | None], None]
LocalEnd = KernelPod | StackEndpoint
# Packets for a local pod, and packets from it for the pipeline, when a splice's timer fires.
Emit = Callable[[LocalEnd, list[bytes], list[bytes], float], None]


@dataclass(slots=True)
class _Held:
    splice: L7Splice
    pod: LocalEnd
    pod_is_server: bool
    keys: tuple[FlowKey, FlowKey]  # (in to_pods, in from_pods)
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0


class L7Splices:
    def __init__(self, lookup: Lookup, report: Report, emit: Emit):
        self.lookup = lookup
        self.report = report
        self.emit = emit
        # The splices by the flow of the packets they take, and whether such a packet is the client's:
        # those delivered to the splice's pod, and those its pod sends. Two maps, not one: a connection
        # between two pods of this node may have a splice at each end, each taking its own pod's side.
        self.to_pods: dict[FlowKey, tuple[_Held, bool]] = {}
        self.from_pods: dict[FlowKey, tuple[_Held, bool]] = {}
        self.counters: dict[str, int] = {}
        self._rng = random.Random()

    def to_pod(self, pod: LocalEnd, packet: bytes, now: float, *, accept: bool) -> Moved | None:
        """A packet the pipeline delivers to a pod: None when it is not the proxy's, else what it makes
        the splice send (to the pod, to the pipeline). With `accept` (a netns pod), a SYN on a
        connection an L7 rule covers starts a splice."""
        key, flags = flow_key(packet)
        if key is None or key[0] != _TCP:
            return None
        held = self.to_pods.get(key)
        if held is not None:
            return self._feed(held, packet, now)
        if not accept or flags & _BARE_SYN_MASK != _SYN:
            return None
        _, src, src_port, dst, dst_port = key
        verdict = self.lookup(int_to_ip(src), src_port, int_to_ip(dst), dst_port)
        if verdict is None:
            return None
        return self._start(pod, packet, verdict, now, pod_is_server=True)

    def from_pod(self, packet: bytes, now: float) -> Moved | None:
        """A packet a pod sent: None when it is not the proxy's, else what it makes the splice send."""
        key, _ = flow_key(packet)
        held = self.from_pods.get(key) if key is not None else None
        return None if held is None else self._feed(held, packet, now)

    def start_egress(self, pod: LocalEnd, syn: bytes, verdict: ConnectionVerdict, now: float) -> Moved:
        """The pod's SYN, whose connection its egress HTTP rules cover, the pipeline having let it pass."""
        return self._start(pod, syn, verdict, now, pod_is_server=False)

    # ---- the splices -------------------------------------------------------------------------------

    def _start(
        self, pod: LocalEnd, syn: bytes, verdict: ConnectionVerdict, now: float, *, pod_is_server: bool
    ) -> Moved:
        if len(self.to_pods) >= 2 * MAX_SPLICES:
            self._count("l7_splice_full")
            return [], []
        splice = L7Splice(syn, verdict, now, iss=(self._rng.getrandbits(32), self._rng.getrandbits(32)))
        key, _ = flow_key(syn)
        proto, src, src_port, dst, dst_port = key
        reply = (proto, dst, dst_port, src, src_port)
        # The pod's side: a server's pod receives the client's packets and sends the replies; a client's
        # pod the other way round.
        to_pod, from_pod = (key, reply) if pod_is_server else (reply, key)
        held = _Held(splice, pod, pod_is_server, (to_pod, from_pod))
        self.to_pods[to_pod] = (held, pod_is_server)
        self.from_pods[from_pod] = (held, not pod_is_server)
        return self._settle(held, now)

    def _feed(self, entry: tuple[_Held, bool], packet: bytes, now: float) -> Moved:
        held, from_client = entry
        if from_client:
            held.splice.from_client(packet, now)
        else:
            held.splice.from_server(packet, now)
        return self._settle(held, now)

    def _settle(self, held: _Held, now: float) -> Moved:
        """What the splice sends (to the pod, to the pipeline); reports the requests answered, re-arms
        the timer, and forgets a finished splice."""
        splice = held.splice
        to_client, to_server = splice.take_packets()
        moved = (to_server, to_client) if held.pod_is_server else (to_client, to_server)
        direction = "ingress" if held.pod_is_server else "egress"
        client = f"{splice.client_ip}:{splice.client_port}"
        server = f"{splice.server_ip}:{splice.server_port}"
        for judged, status, latency in splice.take_records():
            self.report(client, server, judged, status, direction, latency)
        for name, value in splice.counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        splice.counters.clear()
        if splice.finished:
            self.to_pods.pop(held.keys[0], None)
            self.from_pods.pop(held.keys[1], None)
            if held.timer is not None:
                held.timer.cancel()
            return moved
        deadline = splice.next_deadline()
        if deadline is not None and (held.timer is None or deadline < held.timer_at):
            if held.timer is not None:
                held.timer.cancel()
            held.timer_at = deadline
            held.timer = asyncio.get_running_loop().call_at(max(deadline, now), self._fire, held)
        return moved

    def _fire(self, held: _Held) -> None:
        held.timer = None
        if self.to_pods.get(held.keys[0], (None,))[0] is not held:
            return
        now = time.monotonic()
        held.splice.handle_timer(now)
        to_pod, onward = self._settle(held, now)
        if to_pod or onward:
            self.emit(held.pod, to_pod, onward, now)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def close(self) -> None:
        for held, _ in self.to_pods.values():
            if held.timer is not None:
                held.timer.cancel()
        self.to_pods.clear()
        self.from_pods.clear()
