"""The flows `podnet trace` follows through this node's dataplane.

A traced flow's packets carry a list of `Stage`s through the pipeline, which appends what each stage did.
The source node records the probe's first packet and its reply (`trace`); the destination node waits for the
first packet of a flow it is told to expect and records that packet and its reply (`trace.watch`). Each
journey records a bounded number of packets, so a trace never grows while traffic continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from podnet.overlay.pipeline.conntrack import Conntrack, FlowKey
from podnet.overlay.pipeline.model import Stage, describe_key
from podnet.overlay.pipeline.packets import flow_key
from podnet.overlay.wire.addresses import ip_to_int

PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17}


@dataclass(slots=True)
class Journey:
    """Where a traced flow's packets record their stages, and how many more packets may."""

    stages: list[Stage]
    packets_left: int
    done: asyncio.Event = field(default_factory=asyncio.Event)


def reverse(key: FlowKey) -> FlowKey:
    """The key of the other direction of a connection, as it leaves the peer un-NATted."""
    return (key[0], key[3], key[4], key[1], key[2])


class Traces:
    def __init__(self) -> None:
        # flow key -> the journey its next packets are recorded in. The dataplane tests this dict's
        # truth per packet, so it is one object for the agent's life.
        self.by_key: dict[FlowKey, Journey] = {}
        # each trace.watch's journey, and the (protocol, src, dst, port) of the flows it waits for
        self.watches: list[tuple[frozenset[tuple[int, int, int, int]], Journey]] = []

    def stages_for(self, packet: bytes) -> list[Stage] | None:
        """The stages list to record this packet's journey in, when its flow is being traced."""
        try:
            key, _ = flow_key(packet)
        except (IndexError, ValueError, struct.error):
            return None
        journey = self.by_key.get(key)
        if journey is None or journey.packets_left <= 0:
            return None
        journey.packets_left -= 1
        return journey.stages

    def watched(self, packet: bytes) -> list[Stage] | None:
        """A packet arriving for a flow that `trace.watch` waits for: its first packet and first reply.
        A watch records one flow only, the first to arrive of those it matches."""
        try:
            key, _ = flow_key(packet)
        except (IndexError, ValueError, struct.error):
            return None
        if key is None:
            return None
        match = (key[0], key[1], key[3], key[4])
        for matches, journey in self.watches:
            if match in matches and key not in self.by_key and not journey.done.is_set():
                self.by_key[key] = Journey(journey.stages, 0)
                self.by_key[reverse(key)] = Journey(journey.stages, 1)
                journey.done.set()
                return journey.stages
        return None

    def start_probe(self, packets: list[bytes], trace: list[Stage]) -> list[FlowKey]:
        """A probe's first packets are about to leave: each is named in `trace`, and its reply will be
        recorded there. Returns their keys."""
        keys = [key for key, _ in map(flow_key, packets) if key is not None]
        for key in keys:
            trace.append(Stage("probe", describe_key(key)))
            self.by_key[reverse(key)] = Journey(trace, 1)
        return keys

    def follow_reply(self, key: FlowKey, trace: list[Stage], conntrack: Conntrack, now: float) -> None:
        """Records the answer to a traced packet too, once the pipeline has tracked its connection: a
        Service's endpoint answers from its own address, so the reply carries the key conntrack keeps
        after the DNAT, not the reverse of what the pod sent."""
        hit = conntrack.lookup(key, now)
        if hit is not None and hit[0].reply not in self.by_key:
            self.by_key[hit[0].reply] = Journey(trace, 1)

    def tracer(self, pod_ip: str, dst: str, port: int, protocol: str,
               trace: list[Stage] | None) -> Callable[[int], None] | None:
        """For a netns pod's probe: once its source port is known, its first packet and the first answer
        are recorded in `trace` (None: nothing is traced)."""
        if trace is None:
            return None

        def register(source_port: int) -> None:
            key = (PROTOCOL_NUMBERS[protocol], ip_to_int(pod_ip), source_port, ip_to_int(dst), port)
            trace.append(Stage("probe", describe_key(key)))
            self.by_key[key] = Journey(trace, 1)
            self.by_key[reverse(key)] = Journey(trace, 1)

        return register

    def forget(self, stages: list[Stage]) -> None:
        for key in [k for k, v in self.by_key.items() if v.stages is stages]:
            del self.by_key[key]

    async def watch(self, matches: frozenset[tuple[int, int, int, int]], timeout: float) -> list[Stage]:
        """Waits up to `timeout` for the first packet of a flow among `matches` and returns its journey."""
        journey = Journey([], 0)
        entry = (matches, journey)
        self.watches.append(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(journey.done.wait(), timeout)
            # the reply leaves right after the first packet arrives; give it a moment to be recorded
            await asyncio.sleep(0.05)
        finally:
            self.watches.remove(entry)
            self.forget(journey.stages)
        return journey.stages
