"""Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it (whitepaper §5.4.2-5.4.7), plus mac1/mac2.

Pure functions over explicit state: the initiator's half-done handshake is an `InitiatorState`, and
each side ends with a `SessionKeys`. Randomness (ephemeral keys, sender indices) and the TAI64N
timestamp come in as arguments, so a handshake is reproducible in tests. Any bad peer input raises
`HandshakeError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import crypto
from .messages import MAC_OFFSETS, Initiation, MessageType, Response

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

INITIAL_CHAINING_KEY = crypto.hash_(CONSTRUCTION)
INITIAL_HASH = crypto.hash_(INITIAL_CHAINING_KEY + IDENTIFIER)
ZERO_PSK = bytes(32)


class HandshakeError(ValueError):
    """A handshake message that fails authentication or carries an invalid key."""


@dataclass(frozen=True, slots=True)
class StaticIdentity:
    """A static key pair and the two keys derived from its public half that peers address it with."""

    private: X25519PrivateKey
    public: bytes
    mac1_key: bytes  # HASH(LABEL_MAC1 || public): peers sign mac1 with it
    cookie_key: bytes  # HASH(LABEL_COOKIE || public): cookie replies to/from this key are sealed with it

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> StaticIdentity:
        private = crypto.private_key(raw)
        return cls.for_public(crypto.public_bytes(private), private)

    @classmethod
    def for_public(cls, public: bytes, private: X25519PrivateKey | None = None) -> StaticIdentity:
        return cls(private, public, crypto.hash_(LABEL_MAC1 + public), crypto.hash_(LABEL_COOKIE + public))


@dataclass(frozen=True, slots=True)
class InitiatorState:
    sender: int
    ephemeral: X25519PrivateKey
    chaining_key: bytes
    hash: bytes
    remote_static: bytes


@dataclass(frozen=True, slots=True)
class ConsumedInitiation:
    remote_static: bytes
    remote_sender: int
    remote_ephemeral: bytes
    timestamp: bytes
    chaining_key: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class SessionKeys:
    send: bytes
    receive: bytes
    local_index: int
    remote_index: int


def _mix_hash(h: bytes, data: bytes) -> bytes:
    return crypto.hash_(h + data)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return crypto.dh(private, public)
    except crypto.DHError as error:
        raise HandshakeError(f"invalid public key: {error}") from None


def _open(key: bytes, ciphertext: bytes, h: bytes, what: str) -> bytes:
    try:
        return crypto.aead_decrypt(key, 0, ciphertext, h)
    except crypto.AuthenticationError:
        raise HandshakeError(f"{what} does not authenticate") from None


def create_initiation(
    local: StaticIdentity, remote: StaticIdentity, sender: int, ephemeral: X25519PrivateKey, timestamp: bytes,
) -> tuple[Initiation, InitiatorState]:
    """An initiation without its MACs (see `seal`) and the state that will consume the response."""
    c = INITIAL_CHAINING_KEY
    h = _mix_hash(INITIAL_HASH, remote.public)
    ephemeral_public = crypto.public_bytes(ephemeral)
    (c,) = crypto.kdf(c, ephemeral_public, 1)
    h = _mix_hash(h, ephemeral_public)
    c, key = crypto.kdf(c, _dh(ephemeral, remote.public), 2)
    encrypted_static = crypto.aead_encrypt(key, 0, local.public, h)
    h = _mix_hash(h, encrypted_static)
    c, key = crypto.kdf(c, _dh(local.private, remote.public), 2)
    encrypted_timestamp = crypto.aead_encrypt(key, 0, timestamp, h)
    h = _mix_hash(h, encrypted_timestamp)
    message = Initiation(sender, ephemeral_public, encrypted_static, encrypted_timestamp)
    return message, InitiatorState(sender, ephemeral, c, h, remote.public)


def consume_initiation(local: StaticIdentity, message: Initiation) -> ConsumedInitiation:
    c = INITIAL_CHAINING_KEY
    h = _mix_hash(INITIAL_HASH, local.public)
    (c,) = crypto.kdf(c, message.ephemeral, 1)
    h = _mix_hash(h, message.ephemeral)
    c, key = crypto.kdf(c, _dh(local.private, message.ephemeral), 2)
    remote_static = _open(key, message.encrypted_static, h, "initiation static key")
    h = _mix_hash(h, message.encrypted_static)
    c, key = crypto.kdf(c, _dh(local.private, remote_static), 2)
    timestamp = _open(key, message.encrypted_timestamp, h, "initiation timestamp")
    h = _mix_hash(h, message.encrypted_timestamp)
    return ConsumedInitiation(remote_static, message.sender, message.ephemeral, timestamp, c, h)


def create_response(
    consumed: ConsumedInitiation, psk: bytes, sender: int, ephemeral: X25519PrivateKey,
) -> tuple[Response, SessionKeys]:
    c, h = consumed.chaining_key, consumed.hash
    ephemeral_public = crypto.public_bytes(ephemeral)
    (c,) = crypto.kdf(c, ephemeral_public, 1)
    h = _mix_hash(h, ephemeral_public)
    (c,) = crypto.kdf(c, _dh(ephemeral, consumed.remote_ephemeral), 1)
    (c,) = crypto.kdf(c, _dh(ephemeral, consumed.remote_static), 1)
    c, tau, key = crypto.kdf(c, psk, 3)
    h = _mix_hash(h, tau)
    encrypted_nothing = crypto.aead_encrypt(key, 0, b"", h)
    receive, send = crypto.kdf(c, b"", 2)
    message = Response(sender, consumed.remote_sender, ephemeral_public, encrypted_nothing)
    return message, SessionKeys(send, receive, sender, consumed.remote_sender)


def consume_response(local: StaticIdentity, state: InitiatorState, psk: bytes, message: Response) -> SessionKeys:
    c, h = state.chaining_key, state.hash
    (c,) = crypto.kdf(c, message.ephemeral, 1)
    h = _mix_hash(h, message.ephemeral)
    (c,) = crypto.kdf(c, _dh(state.ephemeral, message.ephemeral), 1)
    (c,) = crypto.kdf(c, _dh(local.private, message.ephemeral), 1)
    c, tau, key = crypto.kdf(c, psk, 3)
    h = _mix_hash(h, tau)
    _open(key, message.encrypted_nothing, h, "response")
    send, receive = crypto.kdf(c, b"", 2)
    return SessionKeys(send, receive, state.sender, message.sender)


def seal(encoded: bytes, mac1_key: bytes, cookie: bytes | None) -> bytes:
    """Fill in mac1 (keyed to the receiver's public key) and mac2 (keyed by its cookie, if we hold one)."""
    kind = MessageType(encoded[0])
    mac1_at, mac2_at = MAC_OFFSETS[kind]
    mac1 = crypto.mac(mac1_key, encoded[:mac1_at])
    mac2 = crypto.mac(cookie, encoded[:mac1_at] + mac1) if cookie is not None else bytes(16)
    return encoded[:mac1_at] + mac1 + mac2


def mac1_valid(data: bytes, mac1_key: bytes) -> bool:
    mac1_at, mac2_at = MAC_OFFSETS[MessageType(data[0])]
    return crypto.mac(mac1_key, data[:mac1_at]) == data[mac1_at:mac2_at]


def mac2_valid(data: bytes, cookie: bytes) -> bool:
    _, mac2_at = MAC_OFFSETS[MessageType(data[0])]
    return crypto.mac(cookie, data[:mac2_at]) == data[mac2_at:]


def mac1_of(data: bytes) -> bytes:
    mac1_at, mac2_at = MAC_OFFSETS[MessageType(data[0])]
    return data[mac1_at:mac2_at]
