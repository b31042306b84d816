"""The `ip` commands podnet runs on network namespaces: list, run in one, delete (processes included)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from podnet.netns.names import NETNS_DIR

ETC_NETNS = Path("/etc/netns")


class NetnsError(RuntimeError):
    """An `ip` command that sets up or tears down a namespace failed."""


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def ip(*args: str, check: bool = True, namespace: str | None = None) -> subprocess.CompletedProcess:
    argv = ["ip", *(("-n", namespace) if namespace else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if check and done.returncode:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


def ip_batch(lines: list[str], namespace: str | None = None) -> None:
    """Several `ip` commands in one process (`ip -batch`), stopping at the first that fails."""
    argv = ["ip", *(("-n", namespace) if namespace else ()), "-batch", "-"]
    done = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=10)
    if done.returncode:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip()}")


def namespace_pids(name: str) -> list[int]:
    done = ip("netns", "pids", name, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def delete_namespace(name: str) -> None:
    """Kills every process in the namespace, then removes it (its links go with it) and its /etc files."""
    for _ in range(3):
        pids = namespace_pids(name)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    ip("netns", "delete", name, check=False)
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
