"""A pod's packet socket takes in its own device's frames only, from its first instant: the host's other
traffic (here, a flood on loopback) never reaches it, not even while it is being set up."""

from __future__ import annotations

import secrets
import socket
import subprocess
import threading

import pytest
from podnet.nodeagent.pods.wire import _packet_socket
from support.netns_pods import require_root

pytestmark = pytest.mark.root


def test_a_packet_socket_being_opened_takes_in_no_frame_of_another_device():
    require_root()
    device, peer = (f"pnq{secrets.token_hex(4)}" for _ in range(2))
    subprocess.run(["ip", "link", "add", device, "type", "veth", "peer", "name", peer], check=True)
    stop = threading.Event()

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            while not stop.is_set():
                for _ in range(200):
                    sender.sendto(b"loopback traffic", ("127.0.0.1", 9))

    flooder = threading.Thread(target=flood)
    try:
        for end in (device, peer):  # up, and quiet: no IPv6 (whose neighbour discovery would send)
            subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{end}.disable_ipv6=1"], check=True)
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        flooder.start()
        strays = 0
        for _ in range(100):
            fd = _packet_socket(device, "02:00:00:00:00:01", ignore_outgoing=False, offloads=False)
            with socket.socket(fileno=fd) as sock:
                try:
                    while sock.recv(65536):
                        strays += 1
                except BlockingIOError:
                    pass
        assert strays == 0, f"{strays} frames of other devices read by sockets bound to {device}"
    finally:
        stop.set()
        if flooder.is_alive():
            flooder.join()
        subprocess.run(["ip", "link", "del", device], check=False)
