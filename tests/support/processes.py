"""Starting, waiting for and ending the real processes the fixtures run.

`spawn_module(module, args, log_path, home)` runs `python -m module args` from this checkout with
PODNET_HOME=home (when given), appending its output to `log_path`, in a session of its own;
`spawn(argv, log_path)` the same for any program. `wait_ready(process, ready, what, log)` polls `ready()`
until it holds, raising with the log's tail if the process exits or START_TIMEOUT passes (and then
killing it). `end(process, sig)` sends `sig` and waits, falling back to SIGKILL. `free_tcp_port` and
`free_udp_port` find a port free on every one of some addresses (peers of one test share their port).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


def free_tcp_port(*addresses: str) -> int:
    return _free_port(socket.SOCK_STREAM, addresses or ("127.0.0.1",))


def free_udp_port(*addresses: str) -> int:
    return _free_port(socket.SOCK_DGRAM, addresses or ("127.0.0.1",))


def _free_port(kind: socket.SocketKind, addresses: Sequence[str]) -> int:
    for _ in range(50):
        sockets = []
        try:
            first = socket.socket(socket.AF_INET, kind)
            sockets.append(first)
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            for address in addresses[1:]:
                sock = socket.socket(socket.AF_INET, kind)
                sockets.append(sock)
                sock.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {kind.name} port free on all of " + ", ".join(addresses))


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def spawn_module(module: str, args: Sequence[str], log_path: Path, home: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if home is not None:
        env["PODNET_HOME"] = str(home)
    return spawn([sys.executable, "-m", module, *args], log_path, env)


def wait_ready(
    process: subprocess.Popen,
    ready: Callable[[], bool],
    what: str,
    log: Callable[[], str],
    interval: float = 0.05,
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log()[-3000:]}")
        if ready():
            return
        time.sleep(interval)
    end(process)
    raise RuntimeError(f"{what} not ready within {START_TIMEOUT}s: {log()[-3000:]}")


def end(process: subprocess.Popen | None, sig: signal.Signals = signal.SIGKILL) -> None:
    """Sends `sig` (and SIGCONT, so a process a test stopped acts on it) and waits for the exit."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
            os.kill(process.pid, signal.SIGCONT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
