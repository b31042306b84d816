"""A WireGuard device without I/O: peers, cryptokey routing, sessions and the protocol's timers.

Datagrams come in with `receive_datagram(data, source, now)`, plaintext IP packets with
`send_packet(packet, now)`; what to put on the wire comes out of `datagrams_to_send()`, decrypted
packets and notable happenings out of `next_event()`. An adapter moving many packets at a time uses the
batch forms, which pay the per-call costs once per batch: `send_packets_to_peer` returns the transport
messages sealed back to back in one buffer (`Sealed`, ready for one segmented send), and
`receive_datagrams` returns the decrypted packets of one read. Timers are data: `get_timer()` is the earliest
deadline, `handle_timer(now)` runs whatever is due. `now` is a monotonic clock in seconds; TAI64N
timestamps are `now + wall_clock_offset`, which the adapter sets from the real clock. Randomness
(ephemeral keys, indices, retry jitter) comes from the `rng` given, `random.SystemRandom()` unless a
test seeds one.

Invariants, after the whitepaper §6 and wireguard-go's timers:
- A session key is used for at most REJECT_AFTER_TIME seconds and REJECT_AFTER_MESSAGES messages, in
  both directions; the initiator of a session starts a new handshake after REKEY_AFTER_TIME or
  REKEY_AFTER_MESSAGES, the responder never does (so two peers do not race).
- A responder's new session waits in `next` until the initiator's first transport message proves the
  initiator has it; only then does it become `current` (key confirmation).
- A transport message is counted in the replay window only after it authenticated.
- A decrypted packet whose source address is not in the sending peer's allowed IPs is dropped.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from podnet.codec import DecodeError

from . import crypto, handshake, messages
from .handshake import HandshakeError, StaticIdentity
from .messages import CookieReply, Initiation, Response
from .replay import ReplayWindow

REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER = 0.334
KEEPALIVE_TIMEOUT = 10.0
COOKIE_REFRESH_TIME = 120.0
INITIATIONS_PER_SECOND = 50
STAGED_PACKETS = 128

Address = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Sealed(NamedTuple):
    """Transport messages for one endpoint sealed in one go: back to back in `data`, `sizes` bytes each,
    in the order of the packets they carry."""

    endpoint: Address
    data: bytearray
    sizes: list[int]


class PacketReceived(NamedTuple):
    """A decrypted packet. A named tuple, not a frozen dataclass as the rarer events are: one is made per
    packet, and a frozen dataclass sets each field through object.__setattr__."""

    peer: bytes
    packet: bytes


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    peer: bytes
    initiator: bool


@dataclass(frozen=True, slots=True)
class HandshakeGaveUp:
    peer: bytes
    dropped_packets: int


@dataclass(frozen=True, slots=True)
class PacketDropped:
    reason: str
    peer: bytes | None = None


Event = PacketReceived | HandshakeCompleted | HandshakeGaveUp | PacketDropped


@dataclass(slots=True)
class Keypair:
    keys: handshake.SessionKeys
    created: float
    initiator: bool
    send_counter: int = 0
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    sender: crypto.TransportCipher = field(init=False)
    receiver: crypto.TransportCipher = field(init=False)

    def __post_init__(self) -> None:
        self.sender = crypto.TransportCipher(self.keys.send)
        self.receiver = crypto.TransportCipher(self.keys.receive)

    def expired(self, now: float) -> bool:
        return now - self.created >= REJECT_AFTER_TIME


@dataclass(slots=True)
class Peer:
    identity: StaticIdentity
    preshared_key: bytes = handshake.ZERO_PSK
    endpoint: Address | None = None
    allowed_ips: tuple[Network, ...] = ()
    persistent_keepalive: float | None = None
    handshake: handshake.InitiatorState | None = None
    attempts_started: float | None = None  # when the current series of initiations began
    last_timestamp: bytes = bytes(12)
    last_initiation_consumed: float | None = None
    cookie: bytes | None = None
    cookie_received: float = 0.0
    last_mac1_sent: bytes | None = None
    previous: Keypair | None = None
    current: Keypair | None = None
    next: Keypair | None = None
    staged: deque[bytes] = field(default_factory=lambda: deque(maxlen=STAGED_PACKETS))
    last_minute_handshake: bool = False
    last_handshake: float | None = None
    timers: dict[str, float] = field(default_factory=dict)
    rx_bytes: int = 0
    tx_bytes: int = 0
    # allowed_ips as (version, first address, netmask, prefix length) integers: the per-packet checks
    # compare ints instead of building ipaddress objects.
    allowed_ranges: tuple[tuple[int, int, int, int], ...] = ()

    def set_allowed_ips(self, networks: tuple[Network, ...]) -> None:
        self.allowed_ips = networks
        self.allowed_ranges = tuple((n.version, int(n.network_address), int(n.netmask), n.prefixlen) for n in networks)

    def allows(self, version: int, address: int) -> int:
        """The longest allowed prefix holding the address, or -1."""
        best = -1
        for net_version, first, mask, prefixlen in self.allowed_ranges:
            if net_version == version and address & mask == first and prefixlen > best:
                best = prefixlen
        return best

    @property
    def public_key(self) -> bytes:
        return self.identity.public

    def keypairs(self) -> tuple[Keypair, ...]:
        return tuple(k for k in (self.previous, self.current, self.next) if k is not None)


_IPV4_LENGTH_SOURCE = struct.Struct("!2xH8xI")
_TRANSPORT = messages.MessageType.TRANSPORT
_HEADER_SIZE = messages.TRANSPORT_HEADER_SIZE
_MESSAGE_OVERHEAD = _HEADER_SIZE + 16  # the header and the tag
_PADDING = tuple(bytes(n) for n in range(16))  # what pads a packet to the next multiple of 16


def _source_of(packet: bytes) -> tuple[int, int, int] | None:
    """The inner packet's IP version, source address and true length (without padding), or None."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        length, source = _IPV4_LENGTH_SOURCE.unpack_from(packet)
        if 20 <= length <= len(packet):
            return 4, source, length
    elif version == 6 and len(packet) >= 40:
        length = 40 + int.from_bytes(packet[4:6], "big")
        if length <= len(packet):
            return 6, int.from_bytes(packet[8:24], "big"), length
    return None


def _destination_of(packet: bytes) -> tuple[int, int] | None:
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        return 4, int.from_bytes(packet[16:20], "big")
    if version == 6 and len(packet) >= 40:
        return 6, int.from_bytes(packet[24:40], "big")
    return None


class _Heard:
    """What a batch of received datagrams owes one peer's endpoint and timers, settled after the batch."""

    __slots__ = ("peer", "host", "data", "promoted")

    def __init__(self, peer: Peer, host: str):
        self.peer, self.host = peer, host
        self.data = self.promoted = False


class Device:
    def __init__(
        self,
        private_key: bytes,
        *,
        rng: random.Random | None = None,
        mtu: int = 1420,
        wall_clock_offset: float = 0.0,
        handshakes_under_load: int = 64,
    ):
        self.identity = StaticIdentity.from_private_bytes(private_key)
        self.rng = rng or random.SystemRandom()
        self.mtu = mtu
        self.wall_clock_offset = wall_clock_offset
        self.handshakes_under_load = handshakes_under_load  # handshake messages per second
        self.peers: dict[bytes, Peer] = {}
        self.counters: dict[str, int] = {}
        self._indices: dict[int, Peer] = {}
        self._events: deque[Event] = deque()
        self._outgoing: list[tuple[bytes, Address]] = []
        self._recent_handshakes: deque[float] = deque()
        self._cookie_secret = b""
        self._cookie_secret_born = float("-inf")

    # -- configuration -------------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return self.identity.public

    def set_peer(
        self,
        public_key: bytes,
        *,
        endpoint: Address | None = None,
        allowed_ips: tuple[str, ...] = (),
        preshared_key: bytes | None = None,
        persistent_keepalive: float | None = None,
        now: float = 0.0,
    ) -> Peer:
        """Add a peer, or reconfigure one as `wg set ... peer` does: its sessions survive the change."""
        if len(public_key) != 32:
            raise ValueError("a WireGuard public key is 32 bytes")
        peer = self.peers.get(public_key)
        if peer is None:
            peer = self.peers[public_key] = Peer(StaticIdentity.for_public(public_key))
        peer.preshared_key = preshared_key or handshake.ZERO_PSK
        peer.endpoint = endpoint if endpoint is not None else peer.endpoint
        peer.set_allowed_ips(tuple(ipaddress.ip_network(n, strict=False) for n in allowed_ips))
        peer.persistent_keepalive = persistent_keepalive
        if persistent_keepalive:
            peer.timers["persistent_keepalive"] = now + persistent_keepalive
        else:
            peer.timers.pop("persistent_keepalive", None)
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key)
        for index in [i for i, p in self._indices.items() if p is peer]:
            del self._indices[index]

    def peer_for(self, version: int, destination: int) -> Peer | None:
        """Cryptokey routing: the peer whose allowed IPs hold `destination` most specifically."""
        best, best_len = None, -1
        for peer in self.peers.values():
            length = peer.allows(version, destination)
            if length > best_len:
                best, best_len = peer, length
        return best

    # -- the protocol object's outputs ---------------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        deadlines = [d for peer in self.peers.values() for d in peer.timers.values()]
        return min(deadlines) if deadlines else None

    # -- sending -------------------------------------------------------------------------------------

    def send_packet(self, packet: bytes, now: float) -> None:
        destination = _destination_of(packet)
        peer = self.peer_for(*destination) if destination is not None else None
        if peer is None:
            self._drop("no-peer-for-destination")
            return
        self._send_to(peer, packet, now)

    def send_to_peer(self, public_key: bytes, packet: bytes, now: float) -> None:
        """Sends to the peer the caller names, where the caller knows better than the destination
        address (a node agent knows which node a tunnel datagram is for); the receiver still checks the
        packet's source against our allowed IPs."""
        peer = self.peers.get(public_key)
        if peer is None:
            self._drop("unknown-peer")
            return
        self._send_to(peer, packet, now)

    def send_packets_to_peer(self, public_key: bytes, packets: list[bytes], now: float) -> Sealed | None:
        """`send_to_peer` for each of `packets`, sealed together: the messages come back in one buffer
        rather than among `datagrams_to_send()`. None when the session cannot seal them all now: then
        each went as `send_to_peer` sends it (waiting for a handshake, mostly; the initiation, and
        whatever could still be sealed, are among `datagrams_to_send()`)."""
        peer = self.peers.get(public_key)
        if peer is None:
            for _ in packets:
                self._drop("unknown-peer")
            return None
        keypair = peer.current
        if not self._usable(peer, keypair, len(packets), now):
            for packet in packets:
                self._send_to(peer, packet, now)
            return None
        sealed = self._seal(peer, keypair, packets, now)
        self._rekey_if_due(peer, keypair, now)
        return sealed

    @staticmethod
    def _usable(peer: Peer, keypair: Keypair | None, messages_to_send: int, now: float) -> bool:
        return (
            keypair is not None and not keypair.expired(now) and peer.endpoint is not None
            and keypair.send_counter + messages_to_send <= REJECT_AFTER_MESSAGES
        )

    def _send_to(self, peer: Peer, packet: bytes, now: float) -> None:
        keypair = peer.current
        if not self._usable(peer, keypair, 1, now):
            if len(peer.staged) == STAGED_PACKETS:
                self._drop("staged-queue-full", peer)  # the deque drops its oldest packet
            if packet or not peer.staged:
                peer.staged.append(packet)
            self._start_handshake(peer, now)
            return
        self._queue(self._seal(peer, keypair, [packet], now))
        self._rekey_if_due(peer, keypair, now)

    def _rekey_if_due(self, peer: Peer, keypair: Keypair, now: float) -> None:
        if keypair.initiator and (
            keypair.send_counter >= REKEY_AFTER_MESSAGES or now - keypair.created >= REKEY_AFTER_TIME
        ):
            self._start_handshake(peer, now)

    def _seal(self, peer: Peer, keypair: Keypair, packets: list[bytes], now: float) -> Sealed:
        """Each packet padded to a multiple of 16 (not past the MTU) and sealed under the next counter,
        straight into one buffer behind its transport header."""
        # header, the packet padded to the next multiple of 16, tag: (length + 15 + 32) rounded down to 16
        sizes = [(len(packet) + 47) & -16 for packet in packets]
        if max(sizes) > self.mtu + _MESSAGE_OVERHEAD:  # padding stops at the MTU
            sizes = [_MESSAGE_OVERHEAD + min(size - _MESSAGE_OVERHEAD, max(self.mtu, len(packet)))
                     for packet, size in zip(packets, sizes, strict=True)]
        data = bytearray(sum(sizes))
        view = memoryview(data)
        pack_header, encrypt_into, nonce = messages.TRANSPORT_HEADER.pack_into, keypair.sender.aead.encrypt_into, crypto.transport_nonce
        receiver, counter = keypair.keys.remote_index, keypair.send_counter
        offset = keepalives = 0
        for packet, size in zip(packets, sizes, strict=True):
            pack_header(data, offset, _TRANSPORT, receiver, counter)
            padding = size - _MESSAGE_OVERHEAD - len(packet)
            plaintext = packet + _PADDING[padding] if padding else packet
            encrypt_into(nonce(counter), plaintext, None, view[offset + _HEADER_SIZE : offset + size])
            if not packet:
                keepalives += 1
            counter += 1
            offset += size
        keypair.send_counter = counter
        self._sent(peer, offset, now)
        if keepalives < len(packets):
            peer.timers.setdefault("new_handshake", now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT)
            self._count("transport-sent", len(packets) - keepalives)
        if keepalives:
            self._count("keepalive-sent", keepalives)
        assert peer.endpoint is not None
        return Sealed(peer.endpoint, data, sizes)

    def _queue(self, sealed: Sealed) -> None:
        """Sealed messages among `datagrams_to_send()`, one datagram each."""
        offset = 0
        for size in sealed.sizes:
            self._outgoing.append((bytes(sealed.data[offset : offset + size]), sealed.endpoint))
            offset += size

    def _transmit(self, peer: Peer, datagram: bytes, now: float) -> None:
        assert peer.endpoint is not None
        self._outgoing.append((datagram, peer.endpoint))
        self._sent(peer, len(datagram), now)

    def _sent(self, peer: Peer, size: int, now: float) -> None:
        """Authenticated messages of `size` bytes in all go to the peer: they double as the keepalive
        owed to it."""
        peer.tx_bytes += size
        peer.timers.pop("send_keepalive", None)
        if peer.persistent_keepalive:
            peer.timers["persistent_keepalive"] = now + peer.persistent_keepalive

    def _flush_staged(self, peer: Peer, now: float) -> None:
        if peer.staged and peer.current is not None:
            packets = list(peer.staged)
            peer.staged.clear()
            self._queue(self._seal(peer, peer.current, packets, now))

    # -- handshake initiation ------------------------------------------------------------------------

    def _new_index(self, peer: Peer) -> int:
        while True:
            index = self.rng.getrandbits(32)
            if index not in self._indices:
                self._indices[index] = peer
                return index

    def _ephemeral(self) -> X25519PrivateKey:
        return crypto.private_key(self.rng.randbytes(32))

    def _start_handshake(self, peer: Peer, now: float) -> None:
        """Begin a series of initiations unless one is under way: its retransmit timer paces it, so
        whatever asks for a handshake gets at most one initiation per REKEY_TIMEOUT."""
        if "retransmit_handshake" in peer.timers:
            return
        if peer.endpoint is None:
            self._drop("no-endpoint", peer)
            return
        peer.attempts_started = now
        if peer.current is not None:
            self._count("rekey-started")  # a session exists: this handshake replaces its keys
        self._send_initiation(peer, now)

    def _send_initiation(self, peer: Peer, now: float) -> None:
        if peer.handshake is not None:
            self._indices.pop(peer.handshake.sender, None)
        timestamp = crypto.tai64n(now + self.wall_clock_offset)
        message, state = handshake.create_initiation(
            self.identity, peer.identity, self._new_index(peer), self._ephemeral(), timestamp
        )
        peer.handshake = state
        datagram = handshake.seal(messages.encode(message), peer.identity.mac1_key, self._cookie_for(peer, now))
        peer.last_mac1_sent = handshake.mac1_of(datagram)
        self._transmit(peer, datagram, now)
        peer.timers["retransmit_handshake"] = now + REKEY_TIMEOUT + self.rng.uniform(0, REKEY_TIMEOUT_JITTER)
        self._count("handshake-initiation-sent")

    def _cookie_for(self, peer: Peer, now: float) -> bytes | None:
        if peer.cookie is not None and now - peer.cookie_received < COOKIE_REFRESH_TIME:
            return peer.cookie
        return None

    # -- receiving -----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        for public_key, packets in self.receive_datagrams([(data, source[0])], source[1], now):
            self._events.extend(PacketReceived(public_key, bytes(packet)) for packet in packets)

    def receive_datagrams(
        self, datagrams: list[tuple[bytes | memoryview, str]], port: int, now: float
    ) -> list[tuple[bytes, list[memoryview]]]:
        """`receive_datagram` for each of one read's datagrams (data, host), all from `port`: the
        decrypted packets come back in order instead of as events, each run of them from one peer as
        (its public key, the packets); each packet is a view into one buffer that the batch's plaintexts
        share.

        Per transport message only what must be: its session looked up when it is not the previous
        message's, the tag, the replay window, the inner source against the peer's allowed IPs (the
        previous source's verdict reused). What a peer's messages owe its endpoint and timers is settled
        once after the batch, as after its last message (heard before anything sent in answer)."""
        received: list[tuple[bytes, list[memoryview]]] = []
        run: list[memoryview] = []  # the packets of the peer that sent the last one
        run_peer: Peer | None = None
        heard: dict[int, _Heard] = {}
        plaintexts, at = memoryview(bytearray()), 0  # where the plaintexts go, and the next one
        transport_header, nonce, limit = messages.transport_header, crypto.transport_nonce, REJECT_AFTER_MESSAGES
        session_index = -1  # the receiver index whose session is in hand
        peer = keypair = decrypt_into = accept = confirmed = entry = allowed_peer = public_key = None
        allowed_source = -1
        for data, host in datagrams:
            header = transport_header(data)
            if header is None:
                self._receive_message(bytes(data), (host, port), now)
                session_index, confirmed = -1, None  # a handshake may have moved the sessions
                continue
            receiver, counter = header
            if receiver != session_index:
                peer, keypair = self._session_of(receiver)
                if peer is None or keypair is None:
                    self._drop("unknown-receiver")
                    continue
                if keypair.expired(now):
                    self._drop("expired-session", peer)
                    continue
                session_index, decrypt_into, accept = receiver, keypair.receiver.aead.decrypt_into, keypair.replay.accept
                public_key = peer.identity.public
            if counter >= limit:
                self._drop("expired-session", peer)
                continue
            size = len(data) - _MESSAGE_OVERHEAD
            if at + size > len(plaintexts):  # room for a batch of this size (once, mostly)
                plaintexts, at = memoryview(bytearray(size * len(datagrams))), 0
            packet = plaintexts[at : at + size]
            try:
                decrypt_into(nonce(counter), data[_HEADER_SIZE:], None, packet)
            except crypto.InvalidTag:
                self._drop("authentication", peer)
                continue
            if not accept(counter, limit):
                self._drop("replay", peer)
                continue
            peer.rx_bytes += len(data)
            at += size
            if keypair is not confirmed:  # the session's first message in this batch
                entry = heard.get(id(peer))
                if entry is None:
                    entry = heard[id(peer)] = _Heard(peer, host)
                entry.promoted |= self._confirm(peer, keypair, (host, port), now)
                confirmed = keypair
            entry.host = host
            if not packet:
                self._count("keepalive-received")
                continue
            if packet[0] >> 4 == 4 and len(packet) >= 20:
                version = 4
                length, address = _IPV4_LENGTH_SOURCE.unpack_from(packet)
                if not 20 <= length <= len(packet):
                    self._drop("not-ip", peer)
                    continue
            elif (inner := _source_of(packet)) is not None:
                version, address, length = inner
            else:
                self._drop("not-ip", peer)
                continue
            if peer is not allowed_peer or address != allowed_source or version != 4:
                if peer.allows(version, address) < 0:
                    self._drop("source-not-allowed", peer)
                    continue
                allowed_peer, allowed_source = (peer, address) if version == 4 else (None, -1)
            entry.data = True
            if peer is not run_peer:
                run_peer, run = peer, []
                received.append((public_key, run))
            run.append(packet[:length] if length != size else packet)
        for entry in heard.values():
            self._heard(entry, port, now)
        if received:
            self._count("transport-received", sum(len(packets) for _, packets in received))
        return received

    def _session_of(self, receiver: int) -> tuple[Peer | None, Keypair | None]:
        peer = self._indices.get(receiver)
        if peer is not None:
            for candidate in (peer.current, peer.previous, peer.next):
                if candidate is not None and candidate.keys.local_index == receiver:
                    return peer, candidate
        return peer, None

    def _confirm(self, peer: Peer, keypair: Keypair, source: Address, now: float) -> bool:
        """A session's message authenticated: a responder's new session it confirms becomes current (True
        then: staged packets may go), and an initiator's session near its end starts its last handshake."""
        peer.endpoint = source
        promoted = keypair is peer.next
        if promoted:
            if peer.previous is not None:
                self._indices.pop(peer.previous.keys.local_index, None)
            peer.previous, peer.current, peer.next = peer.current, keypair, None
            self._handshake_complete(peer, now, initiator=False)
        if (
            keypair is peer.current and keypair.initiator and not peer.last_minute_handshake
            and now - keypair.created >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        ):
            peer.last_minute_handshake = True
            self._start_handshake(peer, now)
        return promoted

    def _heard(self, entry: _Heard, port: int, now: float) -> None:
        peer = entry.peer
        if peer.endpoint != (entry.host, port):
            peer.endpoint = (entry.host, port)
        peer.timers.pop("new_handshake", None)
        if peer.persistent_keepalive:
            peer.timers["persistent_keepalive"] = now + peer.persistent_keepalive
        if entry.promoted:
            self._flush_staged(peer, now)
        if entry.data:
            peer.timers.setdefault("send_keepalive", now + KEEPALIVE_TIMEOUT)

    def _receive_message(self, data: bytes, source: Address, now: float) -> None:
        """A datagram other than transport data: a handshake message, a cookie reply, or garbage."""
        try:
            message = messages.decode(data)
        except DecodeError:
            self._drop("malformed")
            return
        if isinstance(message, CookieReply):
            self._receive_cookie_reply(message, now)
        else:
            self._receive_handshake(data, message, source, now)

    def _receive_handshake(self, data: bytes, message: Initiation | Response, source: Address, now: float) -> None:
        if not handshake.mac1_valid(data, self.identity.mac1_key):
            self._drop("bad-mac1")
            return
        if self._under_load(now) and not handshake.mac2_valid(data, self._cookie(source, now)):
            self._send_cookie_reply(data, message.sender, source, now)
            return
        try:
            if isinstance(message, Initiation):
                self._consume_initiation(message, source, now)
            else:
                self._consume_response(message, source, now)
        except HandshakeError:
            self._drop("handshake-authentication")

    def _consume_initiation(self, message: Initiation, source: Address, now: float) -> None:
        consumed = handshake.consume_initiation(self.identity, message)
        peer = self.peers.get(consumed.remote_static)
        if peer is None:
            self._drop("unknown-peer")
            return
        if consumed.timestamp <= peer.last_timestamp:
            self._drop("replayed-initiation", peer)
            return
        if peer.last_initiation_consumed is not None and now - peer.last_initiation_consumed < 1 / INITIATIONS_PER_SECOND:
            self._drop("initiation-flood", peer)
            return
        peer.last_timestamp = consumed.timestamp
        peer.last_initiation_consumed = now
        peer.endpoint = source
        # Simultaneous initiations (two nodes that learn of each other at once): our own stays pending,
        # so its response still completes it. Each side then sends on the session it initiated and
        # receives on the one it answered, and nobody waits REKEY_TIMEOUT for a retransmission.
        index = self._new_index(peer)
        response, keys = handshake.create_response(consumed, peer.preshared_key, index, self._ephemeral())
        datagram = handshake.seal(messages.encode(response), peer.identity.mac1_key, self._cookie_for(peer, now))
        peer.last_mac1_sent = handshake.mac1_of(datagram)
        self._install(peer, Keypair(keys, now, initiator=False), now)
        self._transmit(peer, datagram, now)
        self._count("handshake-response-sent")

    def _consume_response(self, message: Response, source: Address, now: float) -> None:
        peer = self._indices.get(message.receiver)
        if peer is None or peer.handshake is None or peer.handshake.sender != message.receiver:
            self._drop("unknown-receiver")
            return
        keys = handshake.consume_response(self.identity, peer.handshake, peer.preshared_key, message)
        peer.handshake = None
        peer.endpoint = source
        self._install(peer, Keypair(keys, now, initiator=True), now)
        self._handshake_complete(peer, now, initiator=True)
        if peer.staged:
            self._flush_staged(peer, now)
        else:
            self._queue(self._seal(peer, peer.current, [b""], now))

    def _install(self, peer: Peer, keypair: Keypair, now: float) -> None:
        """Place a fresh session as wireguard-go does: the initiator uses it at once, the responder
        keeps it in `next` until the initiator's first message confirms it."""
        retired = []
        if keypair.initiator:
            if peer.next is not None:
                retired += [peer.previous, peer.current]
                peer.previous, peer.next = peer.next, None
            else:
                retired.append(peer.previous)
                peer.previous = peer.current
            peer.current = keypair
        else:
            retired += [peer.next, peer.previous]
            peer.next, peer.previous = keypair, None
        for old in retired:
            if old is not None:
                self._indices.pop(old.keys.local_index, None)
        self._indices[keypair.keys.local_index] = peer
        peer.last_minute_handshake = False
        peer.timers["zero_keys"] = now + 3 * REJECT_AFTER_TIME

    def _handshake_complete(self, peer: Peer, now: float, *, initiator: bool) -> None:
        peer.timers.pop("retransmit_handshake", None)
        peer.attempts_started = None
        peer.last_handshake = now
        self._count("handshake-completed")
        self._events.append(HandshakeCompleted(peer.public_key, initiator))

    # -- cookies (DoS mitigation) ---------------------------------------------------------------------

    def _under_load(self, now: float) -> bool:
        recent = self._recent_handshakes
        recent.append(now)
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        return len(recent) > self.handshakes_under_load

    def _cookie(self, source: Address, now: float) -> bytes:
        if now - self._cookie_secret_born >= COOKIE_REFRESH_TIME:
            self._cookie_secret, self._cookie_secret_born = self.rng.randbytes(32), now
        host, port = source
        return crypto.mac(self._cookie_secret, ipaddress.ip_address(host).packed + port.to_bytes(2, "big"))

    def _send_cookie_reply(self, data: bytes, receiver: int, source: Address, now: float) -> None:
        nonce = self.rng.randbytes(24)
        sealed = crypto.xaead_encrypt(self.identity.cookie_key, nonce, self._cookie(source, now), handshake.mac1_of(data))
        self._outgoing.append((messages.encode(CookieReply(receiver, nonce, sealed)), source))
        self._count("cookie-reply-sent")

    def _receive_cookie_reply(self, message: CookieReply, now: float) -> None:
        peer = self._indices.get(message.receiver)
        if peer is None or peer.last_mac1_sent is None:
            self._drop("unknown-receiver")
            return
        try:
            cookie = crypto.xaead_decrypt(peer.identity.cookie_key, message.nonce, message.encrypted_cookie, peer.last_mac1_sent)
        except crypto.AuthenticationError:
            self._drop("cookie-authentication", peer)
            return
        peer.cookie, peer.cookie_received = cookie, now
        self._count("cookie-reply-received")

    # -- timers --------------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        for peer in list(self.peers.values()):
            for name, deadline in sorted(peer.timers.items(), key=lambda item: item[1]):
                if deadline <= now and peer.timers.get(name) == deadline:
                    del peer.timers[name]
                    getattr(self, f"_expired_{name}")(peer, now)

    def _expired_retransmit_handshake(self, peer: Peer, now: float) -> None:
        if peer.attempts_started is not None and now - peer.attempts_started >= REKEY_ATTEMPT_TIME:
            dropped = len(peer.staged)
            peer.staged.clear()
            if peer.handshake is not None:
                self._indices.pop(peer.handshake.sender, None)
                peer.handshake = None
            peer.attempts_started = None
            self._count("handshake-gave-up")
            self._events.append(HandshakeGaveUp(peer.public_key, dropped))
            return
        self._count("handshake-retransmitted")
        self._send_initiation(peer, now)

    def _expired_send_keepalive(self, peer: Peer, now: float) -> None:
        self._send_to(peer, b"", now)

    def _expired_persistent_keepalive(self, peer: Peer, now: float) -> None:
        self._send_to(peer, b"", now)

    def _expired_new_handshake(self, peer: Peer, now: float) -> None:
        """We sent data and heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: the session may be dead."""
        self._start_handshake(peer, now)

    def _expired_zero_keys(self, peer: Peer, now: float) -> None:
        for keypair in peer.keypairs():
            self._indices.pop(keypair.keys.local_index, None)
        peer.previous = peer.current = peer.next = None
        if peer.handshake is not None:
            self._indices.pop(peer.handshake.sender, None)
            peer.handshake = None

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _drop(self, reason: str, peer: Peer | None = None) -> None:
        self._count(f"dropped-{reason}")
        self._events.append(PacketDropped(reason, peer.public_key if peer else None))
