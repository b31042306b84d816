"""CNI ADD/DEL with host-local IPAM: pod addresses from the node's podCIDR, kept on disk.

The layout follows the host-local plugin (`/var/lib/cni/networks/<net>/<ip>`): one file per allocated
address, named by the address and holding the owner, created with O_EXCL so two allocations can never
share an address, and written before the pod is told its IP. A SIGKILLed agent finds every allocation
again in the directory; one whose owner is gone is released by `release_all_but`, so nothing leaks.
.0 is the network, .1 the node's gateway, the last address the broadcast: none is handed out.

A freed address is remembered under its pod's namespace and name (the latest MEMORY of them, on disk with
the allocations), and a pod of that name given an address later gets it back while it is still free: a
StatefulSet's pod, made again on the node that held it, keeps its IP as it keeps its name and DNS record.
Any other pod takes addresses round robin, so a remembered one is reused late, when the range wraps.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from podnet.api.keys import namespaced_key

_LAST_RESERVED = "last_reserved_ip"
_LAST_HELD = "last_held_by_pod"  # {"namespace/name": address}, oldest first
MEMORY = 1024  # freed addresses remembered by pod name


class IpamExhausted(Exception):
    """Every address of the podCIDR is taken."""


@dataclass(frozen=True, slots=True)
class Allocation:
    ip: str
    uid: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return namespaced_key(self.namespace, self.name)


class HostLocalIpam:
    def __init__(self, state_dir: str | Path, pod_cidr: str):
        self.network = ipaddress.IPv4Network(pod_cidr)
        # One directory per podCIDR: should the node ever get another CIDR, old addresses stay apart.
        self.directory = Path(state_dir) / "ipam" / str(self.network).replace("/", "_")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._by_uid: dict[str, Allocation] = {}
        self._held: dict[str, str] = {}  # "namespace/name" -> the address that pod held last, oldest first
        self._load()

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    def _load(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            held = json.loads((self.directory / _LAST_HELD).read_text())
            self._held = {str(k): str(v) for k, v in held.items()} if isinstance(held, dict) else {}
        for path in self.directory.iterdir():
            if path.name in (_LAST_RESERVED, _LAST_HELD) or path.name.endswith(".tmp"):
                continue
            try:
                owner = json.loads(path.read_text())
                allocation = Allocation(path.name, owner["uid"], owner["namespace"], owner["name"])
                ipaddress.IPv4Address(path.name)
            except (ValueError, KeyError, TypeError, OSError):
                # Created but not yet written when the agent died: the pod never learnt this address.
                path.unlink(missing_ok=True)
                continue
            self._by_uid[allocation.uid] = allocation

    def allocations(self) -> list[Allocation]:
        return sorted(self._by_uid.values(), key=lambda a: ipaddress.IPv4Address(a.ip))

    def get(self, uid: str) -> Allocation | None:
        return self._by_uid.get(uid)

    def add(self, uid: str, namespace: str, name: str) -> Allocation:
        """CNI ADD: the pod's address; the same one again for a uid that already has one."""
        existing = self._by_uid.get(uid)
        if existing is not None:
            return existing
        held = self._held.get(f"{namespace}/{name}")
        if held is not None and held not in {a.ip for a in self._by_uid.values()} and self._usable(held):
            allocation = Allocation(held, uid, namespace, name)
            if self._reserve(allocation):  # the round robin's position stays where it was
                self._by_uid[uid] = allocation
                return allocation
        for address in self._candidates():
            allocation = Allocation(str(address), uid, namespace, name)
            if self._reserve(allocation):
                self._by_uid[uid] = allocation
                self._write(_LAST_RESERVED, allocation.ip)
                return allocation
        raise IpamExhausted(f"no free address in {self.network}")

    def _range(self) -> tuple[int, int]:
        """The first and last address handed out: not the network's, the gateway's or the broadcast."""
        return int(self.network.network_address) + 2, int(self.network.broadcast_address) - 1

    def _usable(self, address: str) -> bool:
        first, last = self._range()
        try:
            return first <= int(ipaddress.IPv4Address(address)) <= last
        except ValueError:
            return False

    def _candidates(self):
        first, last = self._range()
        try:
            start = int(ipaddress.IPv4Address((self.directory / _LAST_RESERVED).read_text().strip())) + 1
        except (OSError, ValueError):
            start = first
        if not first <= start <= last:
            start = first
        taken = {a.ip for a in self._by_uid.values()}
        # Round robin from the last reserved address, as host-local does, so a freed address is not
        # handed to the next pod at once while peers may still hold connections to it.
        for value in [*range(start, last + 1), *range(first, start)]:
            address = ipaddress.IPv4Address(value)
            if str(address) not in taken:
                yield address

    def _reserve(self, allocation: Allocation) -> bool:
        path = self.directory / allocation.ip
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as file:
            json.dump({"uid": allocation.uid, "namespace": allocation.namespace, "name": allocation.name}, file)
            file.flush()
            os.fsync(file.fileno())
        self._sync_directory()
        return True

    def _write(self, name: str, text: str) -> None:
        tmp = self.directory / f"{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.directory / name)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def release(self, uid: str) -> Allocation | None:
        """CNI DEL: frees the pod's address; releasing twice is not an error (CNI DEL is idempotent)."""
        allocation = self._by_uid.pop(uid, None)
        if allocation is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / allocation.ip).unlink()
            self._sync_directory()
            self._remember(allocation)
        return allocation

    def _remember(self, allocation: Allocation) -> None:
        self._held.pop(allocation.key, None)
        self._held[allocation.key] = allocation.ip
        while len(self._held) > MEMORY:
            del self._held[next(iter(self._held))]
        self._write(_LAST_HELD, json.dumps(self._held))

    def release_all_but(self, live_uids: set[str]) -> list[Allocation]:
        """Frees every address whose pod no longer exists (garbage collection after a restart)."""
        return [a for uid in list(self._by_uid) if uid not in live_uids and (a := self.release(uid))]
