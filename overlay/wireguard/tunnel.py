"""An encrypted underlay with the plain tunnel's surface: the node agent hands it tunnel datagrams
(VXLAN, or foo-over-UDP's bare packets) for a node address and gets the peers' datagrams back, while on
the wire there is only WireGuard, on one UDP port that every node listens on (Cilium's 51871).

Each peer node is a WireGuard peer: its public key, its node address as the endpoint, and as allowed IPs
its node address (the source of a wrapped VXLAN datagram, see `inner`) and its podCIDR (the source of a
bare pod packet). A datagram for a node whose key is not known is dropped and counted, never sent in
clear (Cilium's strict mode). The receive path is the plain tunnel's (batched reads, partitions,
per-peer counters, captures of what is on the wire), with the device in between; captures can also
subscribe to the decrypted datagrams, which read as the unencrypted underlay would.

Datagrams move in batches, as wireguard-go moves them: what the node sends in one turn of the event loop
waits, per peer, until the turn is over, and is then sealed in one go into one buffer that leaves in
sendmsg calls with UDP_SEGMENT (sealed messages of one padded size form one run); one read's datagrams
(a UDP_GRO read brings a whole such run) are opened in one go. Per datagram there is only the
cryptography and the checks WireGuard asks for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from podnet.overlay.tunnel import Tunnel
from podnet.overlay.wire.segment import laid_apart

from .adapter import DeviceDriver
from .device import Address, Device, Event, HandshakeCompleted, HandshakeGaveUp, Keypair
from .inner import NodePair

log = logging.getLogger(__name__)

PORT = 51871
# What WireGuard adds to the IPv4 packet a node would otherwise send (which travels inside whole): its
# own IPv4/UDP header (28), the transport header (16), the tag (16) and padding to 16 bytes (up to 15),
# at most 75; WireGuard's own interfaces allow 80 (an IPv6 underlay's 48 + 32).
OVERHEAD = 80
SHOWN_COUNTERS = ("handshake-completed", "rekey-started", "dropped-replay", "dropped-authentication")


@dataclass(slots=True)
class NodePeer:
    name: str
    address: str
    public_key: bytes
    pod_cidr: str | None
    pair: NodePair  # the wrapping of VXLAN datagrams to and from it


class WireGuardTunnel(Tunnel):
    # Only datagrams whose tag checked out are delivered: Linux marks them CHECKSUM_UNNECESSARY too.
    authenticates = True

    def __init__(
        self,
        address: str,
        private_key: bytes,
        *,
        port: int = PORT,
        inner_port: int,
        bare: bool = False,
        on_batch: Callable[[list[tuple[bytes, str]]], None],
    ):
        """`inner_port`: the plain tunnel's port, which wrapped datagrams are addressed to; `bare`: the
        datagrams are IP packets already (foo-over-UDP) and travel unwrapped."""
        super().__init__(address, port, on_batch=self._received)
        self.deliver = on_batch
        self.inner_port = inner_port
        self.bare = bare
        # No padding beyond the next multiple of 16: the datagrams carried are bounded by the pod MTU.
        self.device = Device(private_key, mtu=1 << 16)
        self.driver = DeviceDriver(self.device, self._send_encrypted, on_event=self._event)
        self.peers: dict[str, NodePeer] = {}  # by node address
        self._by_key: dict[bytes, NodePeer] = {}
        self._unsealed: dict[str, list[bytes]] = {}  # this turn's datagrams, by node address
        self._inner_taps: list[asyncio.Queue] = []

    @property
    def public_key(self) -> bytes:
        return self.device.public_key

    # ---- peers -------------------------------------------------------------------------------------

    def set_peer(self, name: str, address: str, public_key: bytes, pod_cidr: str | None) -> bool:
        """Adds or updates the peer node at `address`; True if anything changed. A node that comes back
        with the same key keeps its sessions (a restarted agent's handshake replaces them)."""
        current = self.peers.get(address)
        if current is not None and (current.public_key, current.pod_cidr, current.name) == (public_key, pod_cidr, name):
            return False
        if current is not None and current.public_key != public_key:
            self._forget(current)
        other = self._by_key.get(public_key)
        if other is not None and other.address != address:  # the key moved to another address
            self._forget(other)
        allowed = (f"{address}/32",) + ((pod_cidr,) if pod_cidr else ())
        known = public_key in self.device.peers
        now = self.now()
        self.device.set_peer(public_key, endpoint=(address, self.peer_port), allowed_ips=allowed, now=now)
        peer = NodePeer(name, address, public_key, pod_cidr, NodePair(self.address, address, self.inner_port))
        self.peers[address] = self._by_key[public_key] = peer
        if not known:
            # A keepalive, which starts the handshake now: a restarted node's peers may still hold
            # sessions it has lost, and would otherwise notice only when their traffic went unanswered.
            self.device.send_to_peer(public_key, b"", now)
            self.driver.flush()
        return True

    def remove_peer(self, address: str) -> None:
        peer = self.peers.get(address)
        if peer is not None:
            self._forget(peer)

    def _forget(self, peer: NodePeer) -> None:
        self.peers.pop(peer.address, None)
        self._by_key.pop(peer.public_key, None)
        if peer.public_key in self.device.peers:
            self.device.remove_peer(peer.public_key)

    def session_of(self, address: str) -> Keypair | None:
        """The session datagrams to `address` are sealed with now, if there is one."""
        peer = self.peers.get(address)
        device_peer = self.device.peers.get(peer.public_key) if peer is not None else None
        return device_peer.current if device_peer is not None else None

    # ---- sending -----------------------------------------------------------------------------------

    def send(self, address: str, datagram: bytes) -> None:
        unsealed = self._unsealed_for(address)
        if unsealed is not None:
            unsealed.append(datagram)

    def send_burst(self, address: str, datagrams: list[bytes]) -> None:
        unsealed = self._unsealed_for(address, len(datagrams))
        if unsealed is not None:
            unsealed.extend(datagrams)

    def send_laid(self, address: str, laid: bytes | memoryview, sizes: list[int]) -> None:
        self.send_burst(address, laid_apart(laid, sizes))

    def _unsealed_for(self, address: str, count: int = 1) -> list[bytes] | None:
        """Where datagrams for `address` wait for the end of the turn; None if they are dropped (counted)."""
        unsealed = self._unsealed.get(address)
        if unsealed is not None:
            return unsealed
        if address in self.partitioned:
            self.counters["drop.partitioned"] += count
            return None
        if address not in self.peers:
            self.counters["drop.wireguard-no-key"] += count
            return None
        if not self._unsealed:
            self.driver.loop.call_soon(self._seal_unsealed)
        unsealed = self._unsealed[address] = []
        return unsealed

    def _seal_unsealed(self) -> None:
        unsealed, self._unsealed = self._unsealed, {}
        if self._sock is None:  # closed meanwhile
            return
        now, wrap_all = self.now(), not self.bare
        for address, datagrams in unsealed.items():
            peer = self.peers.get(address)
            if peer is None:  # its key went away during the turn
                self.counters["drop.wireguard-no-key"] += len(datagrams)
                continue
            if self._inner_taps:
                for datagram in datagrams:
                    self._tap_inner(datagram, self.address, address)
            packets = list(map(peer.pair.wrap, datagrams)) if wrap_all else datagrams
            sealed = self.device.send_packets_to_peer(peer.public_key, packets, now)
            if sealed is not None:
                self.send_joined(sealed.endpoint[0], sealed.data, sealed.sizes)
        self.driver.flush()

    def _send_encrypted(self, datagram: bytes, endpoint: Address) -> None:
        Tunnel.send(self, endpoint[0], datagram)

    # ---- receiving ---------------------------------------------------------------------------------

    @staticmethod
    def _cut(data: bytes, size: int) -> list:
        """Views, not copies: only the plaintexts are taken further."""
        view = memoryview(data)
        return [view[at : at + size] for at in range(0, len(data), size)]

    def _received(self, datagrams: list[tuple[bytes | memoryview, str]]) -> None:
        received = self.device.receive_datagrams(datagrams, self.peer_port, self.now())
        self.driver.flush()
        if not received:
            return
        arrived: list[tuple[bytes, str]] = []
        for public_key, packets in received:
            peer = self._by_key.get(public_key)
            if peer is None:
                continue
            address = peer.address
            if self.bare:
                arrived += [(bytes(packet), address) for packet in packets]
            else:
                unwrap = peer.pair.unwrap
                for packet in packets:
                    datagram = unwrap(packet)
                    if datagram is None:
                        self.counters["drop.wireguard-inner-not-tunnel"] += 1
                    else:
                        arrived.append((datagram, address))
        if self._inner_taps:
            for datagram, address in arrived:
                self._tap_inner(datagram, address, self.address)
        if arrived:
            self.deliver(arrived)

    def _event(self, event: Event) -> None:
        peer = self._by_key.get(getattr(event, "peer", None) or b"")
        name = peer.name if peer is not None else "an unknown peer"
        if isinstance(event, HandshakeCompleted):
            log.info("wireguard: handshake with %s (%s) completed as %s", name,
                     peer.address if peer else "?", "initiator" if event.initiator else "responder")
        elif isinstance(event, HandshakeGaveUp):
            log.warning("wireguard: no handshake with %s; %d datagrams dropped", name, event.dropped_packets)

    # ---- what it counts and shows ------------------------------------------------------------------

    def device_counters(self) -> dict[str, int]:
        """The device's counters, its drops named as the dataplane names drops; the ones an operator
        looks for first are there from the start, at zero."""
        counters = {**dict.fromkeys(SHOWN_COUNTERS, 0), **self.device.counters}
        return {
            (f"drop.wireguard-{name[len('dropped-'):]}" if name.startswith("dropped-") else f"wireguard.{name}"): value
            for name, value in counters.items()
        }

    def subscribe_decrypted(self, limit: int = 4096) -> asyncio.Queue:
        """Captures of the datagrams inside WireGuard, as they would travel unencrypted."""
        queue: asyncio.Queue = asyncio.Queue(limit)
        self._inner_taps.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        super().unsubscribe(queue)
        if queue in self._inner_taps:
            self._inner_taps.remove(queue)

    def _tap_inner(self, datagram: bytes, src: str, dst: str) -> None:
        self._tap(datagram, src, self.inner_port, dst, self.inner_port, self._inner_taps)

    def close(self) -> None:
        self._unsealed.clear()
        self.driver.close()
        super().close()

    def now(self) -> float:
        """The device's clock (the event loop's)."""
        return self.driver.loop.time()
