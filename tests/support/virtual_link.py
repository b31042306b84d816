"""Two virtual-pod stacks joined by an in-memory wire under a fake clock.

A discrete-event loop: packets take `delay` seconds on the wire; time jumps straight to the next arrival
or the next deadline a stack names. The wire can drop, duplicate and reorder packets from a seeded
random, or drop exactly the packets a predicate picks, so every loss pattern replays identically.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from podnet.nodeagent.pods.virtual.client import Completed, Failed, OperationEvent
from podnet.nodeagent.pods.virtual.stack import PodStack

POD_A_IP = "10.244.1.10"
POD_B_IP = "10.244.2.20"
GATEWAY_MAC = "02:00:0a:f4:00:01"
PORTS = [
    {"containerPort": 80},
    {"containerPort": 8080, "protocol": "TCP"},
    {"containerPort": 81, "protocol": "UDP"},
]


def make_pod(name: str, ip: str, seed: int = 0) -> PodStack:
    mac = "02:00:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))
    return PodStack(f"default/{name}", "default", ip, mac, GATEWAY_MAC, PORTS, name, rng=random.Random(seed))


@dataclass
class Link:
    a: PodStack
    b: PodStack
    delay: float = 0.001
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    """Chance that a packet is held back by up to ten times the delay, so later ones overtake it."""
    seed: int = 0
    drop: Callable[[PodStack, bytes], bool] | None = None
    """Drops the packets `drop(sender, packet)` is true for, on top of the random loss."""
    now: float = 0.0
    carried: int = 0
    dropped: int = 0
    events: dict[str, list[OperationEvent]] = field(default_factory=dict)
    """What each stack's operations reported, by stack name, in order."""
    _wire: list = field(default_factory=list)
    _order: int = 0

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self.events = {self.a.name: [], self.b.name: []}

    def _collect(self, stack: PodStack) -> None:
        self.events[stack.name].extend(stack.take_events())

    def peer(self, stack: PodStack) -> PodStack:
        return self.b if stack is self.a else self.a

    def send(self, sender: PodStack, packets: list[bytes]) -> None:
        for packet in packets:
            if (self.drop and self.drop(sender, packet)) or self._rng.random() < self.loss:
                self.dropped += 1
                continue
            copies = 2 if self._rng.random() < self.duplicate else 1
            for _ in range(copies):
                delay = self.delay
                if self._rng.random() < self.reorder:
                    delay += self._rng.random() * 10 * self.delay
                self._order += 1
                heapq.heappush(self._wire, (self.now + delay, self._order, self.peer(sender), packet))

    def step(self) -> bool:
        """Advances to the next arrival or deadline and handles it; False when nothing is left to happen."""
        for stack in (self.a, self.b):
            self.send(stack, stack.poll(self.now))
            self._collect(stack)
        deadlines = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
        if self._wire:
            deadlines.append(self._wire[0][0])
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        while self._wire and self._wire[0][0] <= self.now:
            _, _, receiver, packet = heapq.heappop(self._wire)
            self.carried += 1
            self.send(receiver, receiver.receive(packet, self.now))
            self._collect(receiver)
        return True

    def run(self, until: Callable[[], bool] | None = None, *, max_steps: int = 200_000) -> None:
        """Runs until `until()` holds, or until nothing is left to happen; never more than `max_steps`."""
        for _ in range(max_steps):
            if until is not None and until():
                return
            if not self.step():
                return
        raise AssertionError(f"still busy after {max_steps} steps at t={self.now:.3f}s")

    def outcome(self, stack: PodStack, op: int) -> Completed | Failed | None:
        for event in self.events[stack.name]:
            if isinstance(event, Completed | Failed) and event.op == op:
                return event
        return None

    def finish(self, stack: PodStack, op: int, *, max_steps: int = 200_000) -> Completed | Failed:
        """Runs until operation `op` of `stack` has its outcome, and returns it."""
        self.run(lambda: self.outcome(stack, op) is not None, max_steps=max_steps)
        outcome = self.outcome(stack, op)
        assert outcome is not None, f"operation {op} never ended (t={self.now:.3f}s)"
        return outcome

    def op_events(self, stack: PodStack, op: int) -> list[OperationEvent]:
        return [event for event in self.events[stack.name] if event.op == op]
