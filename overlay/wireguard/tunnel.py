"""An encrypted underlay with the plain tunnel's surface: the node agent hands it tunnel datagrams
(VXLAN, or foo-over-UDP's bare packets) for a node address and gets the peers' datagrams back, while on
the wire there is only WireGuard, on one UDP port that every node listens on (Cilium's 51871).

Each peer node is a WireGuard peer: its public key, its node address as the endpoint, and as allowed IPs
its node address (the source of a wrapped VXLAN datagram, see `inner`) and its podCIDR (the source of a
bare pod packet). A datagram for a node whose key is not known is dropped and counted, never sent in
clear (Cilium's strict mode). The receive path is the plain tunnel's (batched reads, partitions,
per-peer counters, captures of what is on the wire), with the device in between; captures can also
subscribe to the decrypted datagrams, which read as the unencrypted underlay would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from podnet.overlay.tunnel import Tunnel

from .adapter import DeviceDriver
from .device import Address, Device, Event, HandshakeCompleted, HandshakeGaveUp, Keypair
from .inner import NodePair

log = logging.getLogger(__name__)

PORT = 51871
# What WireGuard adds around the datagram a node would otherwise send: the inner IPv4/UDP header of a
# wrapped VXLAN datagram (28), the transport header (16), the tag (16), up to 15 bytes of padding, and
# the outer IPv4/UDP header (28); WireGuard's own interfaces allow 80 (an IPv6 underlay's 48 + 32).
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
        self.driver = DeviceDriver(self.device, self._send_encrypted, self._decrypted, self._event)
        self.peers: dict[str, NodePeer] = {}  # by node address
        self._by_key: dict[bytes, NodePeer] = {}
        self._arrived: list[tuple[bytes, str]] = []
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
        if address in self.partitioned:
            self.counters["drop.partitioned"] += 1
            return
        peer = self.peers.get(address)
        if peer is None:
            self.counters["drop.wireguard-no-key"] += 1
            return
        if self._inner_taps:
            self._tap_inner(datagram, self.address, address)
        packet = datagram if self.bare else peer.pair.wrap(datagram)
        self.device.send_to_peer(peer.public_key, packet, self.now())
        self.driver.send_now_flush_soon()

    def send_burst(self, address: str, datagrams: list[bytes]) -> None:
        """A run of datagrams for one node: each sealed on its own (WireGuard has no segmentation)."""
        for datagram in datagrams:
            self.send(address, datagram)

    def _send_encrypted(self, datagram: bytes, endpoint: Address) -> None:
        Tunnel.send(self, endpoint[0], datagram)

    # ---- receiving ---------------------------------------------------------------------------------

    def _received(self, datagrams: list[tuple[bytes, str]]) -> None:
        now, port, receive = self.now(), self.peer_port, self.device.receive_datagram
        for data, host in datagrams:
            receive(data, (host, port), now)
        self.driver.flush()
        arrived, self._arrived = self._arrived, []
        if arrived:
            self.deliver(arrived)

    def _decrypted(self, public_key: bytes, packet: bytes) -> None:
        peer = self._by_key.get(public_key)
        if peer is None:
            return
        if self.bare:
            datagram: bytes | None = packet
        else:
            datagram = peer.pair.unwrap(packet)
            if datagram is None:
                self.counters["drop.wireguard-inner-not-tunnel"] += 1
                return
        if self._inner_taps:
            self._tap_inner(datagram, peer.address, self.address)
        self._arrived.append((datagram, peer.address))

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
        self.driver.close()
        super().close()

    def now(self) -> float:
        """The device's clock (the event loop's)."""
        return self.driver.loop.time()
