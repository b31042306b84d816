"""Segments per second through two virtual-pod stacks joined in memory (no loss, no sockets).

Pod a streams bytes to pod b's agnhost port, which echoes them; every packet goes through the real
codecs (IPv4 and TCP encode/decode with checksums) and both TCP state machines. Prints one JSON object.
"""

from __future__ import annotations

import json
import random
import sys
import time

from podnet.nodeagent.pods.virtual.client import Completed, Opened, Received
from podnet.nodeagent.pods.virtual.stack import PodStack

GATEWAY_MAC = "02:00:0a:f4:00:01"


def run(total_bytes: int) -> dict:
    a = PodStack(
        "default/a",
        "default",
        "10.244.1.10",
        "02:00:0a:f4:01:0a",
        GATEWAY_MAC,
        [80],
        "a",
        rng=random.Random(1),
    )
    b = PodStack(
        "default/b",
        "default",
        "10.244.2.20",
        "02:00:0a:f4:02:14",
        GATEWAY_MAC,
        [80],
        "b",
        rng=random.Random(2),
    )
    now, packets, echoed = 0.0, 0, 0
    op = a.open_tcp(b.ip, 80, now)
    to_b, to_a = a.poll(now), []
    started = time.perf_counter()
    done = False
    while not done:
        now += 0.0001
        next_to_a = [out for packet in to_b for out in b.receive(packet, now)]
        next_to_b = [out for packet in to_a for out in a.receive(packet, now)]
        packets += len(to_b) + len(to_a)
        next_to_a += b.poll(now)
        next_to_b += a.poll(now)
        for event in a.take_events():
            if isinstance(event, Opened):
                a.send(op, b"~" * total_bytes, now)
                a.close(op, now)
                next_to_b += a.poll(now)
            elif isinstance(event, Received):
                echoed += len(event.data)
            elif isinstance(event, Completed):
                done = True
        to_b, to_a = next_to_b, next_to_a
        if not (to_a or to_b or done):
            raise SystemExit("the stacks went quiet before the echo completed")
    elapsed = time.perf_counter() - started
    assert echoed == total_bytes
    return {
        "packets": packets,
        "seconds": round(elapsed, 3),
        "segments_per_second": round(packets / elapsed),
        "goodput_mbit_per_second": round(2 * total_bytes * 8 / elapsed / 1e6, 1),
    }


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000_000
    print(json.dumps({"virtual_stack_echo_bytes": size, **run(size)}))
