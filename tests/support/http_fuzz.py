"""Malformed HTTP requests from inside a pod (run by the pod's python3, this file on its stdin): each on
its own connection to HOST:PORT, a request from a list of what a proxy must refuse with a few bytes past
the method changed at random (seeded by its number), the answer's status line read back.
`python3 - HOST PORT COUNT` prints {"status": count, ...} as JSON; "none" counts connections closed
without an answer. A connection that fails is counted on its own, by what went wrong ("reset", "timeout"
or the error's name), its local port and its request's number (to find it in a capture and make its
request again), and the answer's status or length when some of it had come."""

import json
import random
import socket
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

REFUSED = [
    b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
    b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"GET /api/x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    b"GET /api/\x01x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
    b"GET /api/x HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 20000 + b"\r\n\r\n",
]


def one(host: str, port: int, number: int) -> str:
    rng = random.Random(number)
    data = bytearray(rng.choice(REFUSED))
    for _ in range(rng.randrange(3)):
        data[rng.randrange(4, len(data))] = rng.randrange(256)
    answer, local_port = b"", 0
    try:
        with socket.create_connection((host, port), timeout=10) as conn:
            local_port = conn.getsockname()[1]
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                answer += chunk
    except OSError as e:
        kind = "timeout" if isinstance(e, TimeoutError) else "reset" if isinstance(e, ConnectionResetError) else (
            type(e).__name__)
        failed = f"{kind}@{local_port}#{number}"
        return f"{failed} after {status(answer) or f'{len(answer)} bytes'}" if answer else failed
    return status(answer) or "none"


def status(answer: bytes) -> str | None:
    return answer[9:12].decode("latin-1") if answer.startswith(b"HTTP/1.") else None


def main() -> None:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with ThreadPoolExecutor(16) as pool:
        statuses = Counter(pool.map(lambda n: one(host, port, n), range(count)))
    print(json.dumps(statuses))


if __name__ == "__main__":
    main()
