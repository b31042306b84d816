"""WireGuard's primitives (whitepaper §5.4), built on hashlib's BLAKE2s and `cryptography`.

HASH, MAC, HMAC and KDF1-3 are BLAKE2s as the protocol defines them; AEAD is ChaCha20-Poly1305 with the
64-bit little-endian counter in the last 8 bytes of the nonce. XAEAD (cookie replies only) is
XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha), which `cryptography` lacks: its HChaCha20 step is derived
from one ChaCha20 keystream block. A ChaCha20 block is `rounds(state) + state` word by word, and
HChaCha20 is words 0-3 and 12-15 of `rounds(state)` where the state's words 12-15 are the 16-byte
nonce; subtracting the known input words (the constants and the nonce) from the keystream recovers them
exactly, so no ChaCha round is written here.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

_CHACHA_CONSTANTS = struct.unpack("<4I", b"expand 32-byte k")
_WORDS = struct.Struct("<16I")
_ZERO_BLOCK = bytes(64)


class AuthenticationError(ValueError):
    """A ciphertext whose tag does not verify under the given key."""


def hash_(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf(key: bytes, data: bytes, n: int) -> tuple[bytes, ...]:
    """KDF_n: HKDF over HMAC-BLAKE2s with an empty info, n outputs of 32 bytes."""
    prk = hmac_(key, data)
    outputs: list[bytes] = []
    previous = b""
    for i in range(1, n + 1):
        previous = hmac_(prk, previous + bytes([i]))
        outputs.append(previous)
    return tuple(outputs)


_NONCE = struct.Struct("<4xQ")  # 32 zero bits, then the counter
_nonce = transport_nonce = _NONCE.pack


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, associated: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_nonce(counter), plaintext, associated or None)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, associated: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_nonce(counter), ciphertext, associated or None)
    except InvalidTag:
        raise AuthenticationError("AEAD tag mismatch") from None


class TransportCipher:
    """One direction of a session: the AEAD with its key schedule done once, not per packet. Loops that
    seal or open a batch call `aead` themselves (with `transport_nonce(counter)` and no associated data,
    InvalidTag meaning AuthenticationError): a call per packet less, and `encrypt_into` writes into the
    caller's buffer."""

    __slots__ = ("aead",)

    def __init__(self, key: bytes):
        self.aead = ChaCha20Poly1305(key)

    def seal(self, counter: int, plaintext: bytes) -> bytes:
        return self.aead.encrypt(_nonce(counter), plaintext, None)

    def open(self, counter: int, ciphertext: bytes) -> bytes:
        try:
            return self.aead.decrypt(_nonce(counter), ciphertext, None)
        except InvalidTag:
            raise AuthenticationError("AEAD tag mismatch") from None


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    keystream = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor().update(_ZERO_BLOCK)
    out = _WORDS.unpack(keystream)
    nonce_words = struct.unpack("<4I", nonce16)
    words = [(out[i] - _CHACHA_CONSTANTS[i]) & 0xFFFFFFFF for i in range(4)]
    words += [(out[12 + i] - nonce_words[i]) & 0xFFFFFFFF for i in range(4)]
    return struct.pack("<8I", *words)


def _xchacha_split(key: bytes, nonce24: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    if len(nonce24) != 24:
        raise ValueError("XChaCha20-Poly1305 takes a 24-byte nonce")
    return ChaCha20Poly1305(hchacha20(key, nonce24[:16])), b"\x00\x00\x00\x00" + nonce24[16:]


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, associated: bytes) -> bytes:
    cipher, nonce = _xchacha_split(key, nonce24)
    return cipher.encrypt(nonce, plaintext, associated or None)


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    cipher, nonce = _xchacha_split(key, nonce24)
    try:
        return cipher.decrypt(nonce, ciphertext, associated or None)
    except InvalidTag:
        raise AuthenticationError("XAEAD tag mismatch") from None


class DHError(ValueError):
    """A peer public key that yields the all-zero shared secret (a low-order point)."""


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as error:  # cryptography refuses an all-zero result
        raise DHError(str(error)) from None


def private_key(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# TAI64N labels seconds from 1970 TAI as 2^62 + seconds; WireGuard's implementations add the 10 s
# TAI-UTC offset of 1970, and only need the value to grow from one initiation to the next.
_TAI64_BASE = (1 << 62) + 10


def tai64n(unix_time: float) -> bytes:
    seconds = int(unix_time)
    nanoseconds = int((unix_time - seconds) * 1e9)
    return struct.pack(">QI", _TAI64_BASE + seconds, nanoseconds)
