"""The service table kube-proxy last installed, kept in the agent's state directory so that it outlives the
agent as iptables rules outlive kube-proxy and the kubelet.

A SIGKILLed agent comes back with an empty pipeline, and its adopted pods send again as soon as their
sockets are reopened; kube-proxy only notices the new agent when its reconnect backoff (up to half a
second) next fires. Without the table in that window, a pod's connection to a ClusterIP is routed as if
the address were nobody's and refused. So every table the agent installs is written here, and a starting
agent installs the one it finds before any pod is attached; kube-proxy's full sync then replaces it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger(__name__)

SERVICES_FILE = "services.msgpack"


class SavedServiceTable:
    def __init__(self, state_path: Path):
        self.path = state_path / SERVICES_FILE
        self._writing = asyncio.Lock()  # FIFO: the last table installed is the last one written

    async def save(self, data: Any) -> None:
        """Keeps `data` (a table as services.apply received it), replacing what was kept atomically; the
        file is written off the event loop (a table of 10,000 Services is about 1.6 MB)."""
        packed = msgpack.packb(data)
        async with self._writing:
            await asyncio.to_thread(self._write, packed)

    def _write(self, packed: bytes) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(packed)
        tmp.replace(self.path)

    def load(self) -> Any:
        """The table kept by a previous run, None when there is none (or it cannot be read)."""
        try:
            return msgpack.unpackb(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return None
