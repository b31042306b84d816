"""A virtual pod wired to the Linux kernel: a TUN device in a network namespace the fixture creates.

The kernel side has 10.244.9.1/24 on the TUN device (MTU 1450, as a pod link); the pod is 10.244.9.2,
its stack driven by `pump_until` from the test's own thread: packets the kernel routes to the pod are
read from the TUN file descriptor and fed to `PodStack.receive`, and what the pod sends is written back.
Programs run inside the namespace with `spawn`. Needs root; skipped without it unless CI is "true".
"""

from __future__ import annotations

import fcntl
import os
import random
import select
import struct
import subprocess
import time
from collections.abc import Callable

import pytest
from podnet.nodeagent.pods.virtual.stack import PodStack

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
KERNEL_IP = "10.244.9.1"
POD_IP = "10.244.9.2"


class KernelPeer:
    def __init__(self, namespace: str, fd: int, device: str, pod: PodStack):
        self.namespace = namespace
        self.device = device
        self.pod = pod
        self.fd = fd
        self.drop_rate = 0.0
        """Share of packets thrown away in each direction between kernel and pod (seeded)."""
        self.dropped = 0
        self._rng = random.Random(7)
        self._processes: list[subprocess.Popen] = []
        self.events: list = []

    def spawn(self, *args: str) -> subprocess.Popen:
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._processes.append(process)
        return process

    def pump_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Moves packets both ways and fires the pod's timers until `done()`; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(f"not done after {timeout}s")
            wake = self.pod.next_deadline()
            wait = 0.05 if wake is None else min(max(wake - now, 0.0), 0.05)
            readable, _, _ = select.select([self.fd], [], [], wait)
            now = time.monotonic()
            out = []
            if readable:
                for _ in range(1000):
                    try:
                        packet = os.read(self.fd, 65536)
                    except BlockingIOError:
                        break
                    if self._lose():
                        continue
                    out += self.pod.receive(packet, now)
            out += self.pod.poll(now)
            self.events += self.pod.take_events()
            for packet in out:
                if not self._lose():
                    os.write(self.fd, packet)

    def _lose(self) -> bool:
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.dropped += 1
            return True
        return False

    def now(self) -> float:
        """The pod's clock: the one `pump_until` passes to the stack."""
        return time.monotonic()

    def pump_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.pump_until(lambda: time.monotonic() >= end, seconds + 1.0)

    def finish(self, op: int, timeout: float = 20.0):
        """Pumps until operation `op` of the pod ends, and returns its Completed or Failed."""
        self.pump_until(lambda: self.outcome(op) is not None, timeout)
        return self.outcome(op)

    def outcome(self, op: int):
        return next(
            (e for e in self.events if e.op == op and type(e).__name__ in ("Completed", "Failed")), None
        )

    def wait(self, process: subprocess.Popen, timeout: float = 20.0) -> tuple[int, bytes, bytes]:
        """Pumps while `process` runs in the namespace; its exit code and output."""
        self.pump_until(lambda: process.poll() is not None, timeout)
        stdout, stderr = process.communicate()
        return process.returncode, stdout, stderr

    def close(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def kernel_peer():
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the kernel peer needs root, and CI runs as root")
        pytest.skip("the kernel peer needs root (a network namespace and a TUN device)")
    namespace = f"podnet-vs-{os.getpid()}"
    device = f"pvs{os.getpid()}"[:15]
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    peer = None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", device.encode(), IFF_TUN | IFF_NO_PI))
        subprocess.run(["ip", "netns", "add", namespace], check=True)
        # The open descriptor stays attached to the device when it moves into the namespace.
        subprocess.run(["ip", "link", "set", device, "netns", namespace], check=True)
        for command in (
            ["ip", "addr", "add", f"{KERNEL_IP}/24", "dev", device],
            ["ip", "link", "set", device, "up", "mtu", "1450"],
            ["ip", "link", "set", "lo", "up"],
        ):
            subprocess.run(["ip", "-n", namespace, *command[1:]], check=True)
        pod = PodStack(
            "default/virtual",
            "default",
            POD_IP,
            "02:00:0a:f4:09:02",
            "02:00:0a:f4:09:01",
            [{"containerPort": 80}, {"containerPort": 81, "protocol": "UDP"}],
            "virtual",
            rng=random.Random(3),
        )
        peer = KernelPeer(namespace, fd, device, pod)
        yield peer
    finally:
        if peer is not None:
            peer.close()
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        os.close(fd)
