"""Captures BGP messages from a real BIRD 2 for tests/test_bgp_messages.py.

Run as root or not: `python tests/data/bgp/capture_bird.py`. BIRD runs on 127.0.0.42 with static blackhole
routes 10.244.7.0/24 and 10.244.8.0/24 (the latter with community (64513,7), and a MED that BIRD does not
pass over eBGP) and an eBGP session (AS 64513 -> AS 64512)
towards 127.0.0.41, where a plain socket listens and answers with a hand-written OPEN and KEEPALIVE.
It prints BIRD's OPEN, KEEPALIVE, UPDATEs (routes, then End-of-RIB) as hex. A second connection answers
BIRD's OPEN with an OPEN whose hold time is 2 s, and prints the NOTIFICATION BIRD sends back.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LISTEN, BIRD_ADDR, PORT = "127.0.0.41", "127.0.0.42", 17901
CONFIG = f"""
router id {BIRD_ADDR};
protocol device {{ }}
protocol static s4 {{
  ipv4;
  route 10.244.7.0/24 blackhole;
  route 10.244.8.0/24 blackhole {{ bgp_med = 50; bgp_community.add((64513, 7)); }};
}}
protocol bgp peer {{
  local {BIRD_ADDR} as 64513;
  neighbor {LISTEN} port {PORT} as 64512;
  multihop;
  hold time 9;
  connect delay time 1;
  connect retry time 1;
  graceful restart on;
  ipv4 {{ import all; export all; next hop self; }};
}}
"""


def our_open(hold: int) -> bytes:
    caps = bytes.fromhex("0206010400010001") + bytes.fromhex("02064104 0000fc00".replace(" ", ""))
    body = bytes([4]) + (64512).to_bytes(2, "big") + hold.to_bytes(2, "big") + socket.inet_aton(LISTEN)
    body += bytes([len(caps)]) + caps
    return b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + bytes([1]) + body


KEEPALIVE = b"\xff" * 16 + b"\x00\x13\x04"


def read_message(conn: socket.socket) -> bytes:
    data = b""
    while len(data) < 19:
        chunk = conn.recv(19 - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    length = int.from_bytes(data[16:18], "big")
    while len(data) < length:
        chunk = conn.recv(length - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "bird.conf"
        conf.write_text(CONFIG)
        listener = socket.create_server((LISTEN, PORT))
        bird = subprocess.Popen(["bird", "-c", str(conf), "-s", str(Path(tmp) / "sock"), "-f"])
        try:
            listener.settimeout(20)
            conn, _ = listener.accept()
            conn.settimeout(20)
            print("# OPEN", read_message(conn).hex())
            conn.sendall(our_open(9) + KEEPALIVE)
            for _ in range(4):
                message = read_message(conn)
                print(f"# type {message[18]}", message.hex())
                if message[18] == 2 and len(message) == 23:
                    break
            conn.close()
            time.sleep(0.5)
            conn, _ = listener.accept()
            conn.settimeout(20)
            read_message(conn)
            conn.sendall(our_open(2))
            print("# NOTIFICATION", read_message(conn).hex())
            conn.close()
        finally:
            bird.terminate()
            bird.wait(5)
            listener.close()


if __name__ == "__main__":
    sys.exit(main())
