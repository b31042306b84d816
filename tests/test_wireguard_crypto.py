"""WireGuard's primitives against published vectors: BLAKE2s (RFC 7693), ChaCha20-Poly1305 (RFC 8439),
X25519 (RFC 7748), and our HChaCha20 / XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from podnet.overlay.wireguard import crypto

SUNSCREEN = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
    b"sunscreen would be it."
)


def test_blake2s_rfc7693_abc():
    assert crypto.hash_(b"abc").hex() == "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"


def test_keyed_blake2s_reference_kat_and_macs_16_byte_digest_parameter():
    # blake2s-kat.txt: key 00..1f, empty input. WireGuard's MAC is keyed BLAKE2s with digest length 16,
    # a parameter of the hash (it changes every output bit), not the 32-byte digest cut short.
    key = bytes(range(32))
    assert hashlib.blake2s(b"", key=key).hexdigest() == "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"
    assert crypto.mac(key, b"") == hashlib.blake2s(b"", key=key, digest_size=16).digest()
    assert crypto.mac(key, b"") != hashlib.blake2s(b"", key=key).digest()[:16]


def test_chacha20_poly1305_rfc8439_section_2_8_2():
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("070000004041424344454647")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    sealed = ChaCha20Poly1305(key).encrypt(nonce, SUNSCREEN, aad)
    assert sealed[:-16].hex() == (
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b"
        "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
        "3ff4def08e4b7a9de576d26586cec64b6116"
    )
    assert sealed[-16:].hex() == "1ae10b594f09e26a7e902ecbd0600691"


def test_wireguard_aead_nonce_is_four_zero_bytes_and_the_little_endian_counter():
    key = bytes(range(32))
    counter = 0x0102030405060708
    expected = ChaCha20Poly1305(key).encrypt(bytes(4) + counter.to_bytes(8, "little"), b"data", b"ad")
    assert crypto.aead_encrypt(key, counter, b"data", b"ad") == expected
    assert crypto.aead_decrypt(key, counter, expected, b"ad") == b"data"
    with pytest.raises(crypto.AuthenticationError):
        crypto.aead_decrypt(key, counter + 1, expected, b"ad")


def test_x25519_rfc7748_section_6_1():
    alice = crypto.private_key(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    bob = crypto.private_key(bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert crypto.public_bytes(alice).hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert crypto.public_bytes(bob).hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert crypto.dh(alice, crypto.public_bytes(bob)).hex() == shared
    assert crypto.dh(bob, crypto.public_bytes(alice)).hex() == shared


def test_x25519_low_order_point_is_refused():
    with pytest.raises(crypto.DHError):
        crypto.dh(crypto.private_key(bytes(range(32))), bytes(32))


def test_hchacha20_draft_xchacha_section_2_2_1():
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert crypto.hchacha20(bytes(range(32)), nonce).hex() == (
        "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    )


def test_xchacha20_poly1305_draft_xchacha_appendix_a_3_1():
    key = bytes(range(0x80, 0xA0))
    nonce = bytes(range(0x40, 0x58))
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    sealed = crypto.xaead_encrypt(key, nonce, SUNSCREEN, aad)
    assert sealed[:-16].hex() == (
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39"
        "ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e"
    )
    assert sealed[-16:].hex() == "c0875924c1c7987947deafd8780acf49"
    assert crypto.xaead_decrypt(key, nonce, sealed, aad) == SUNSCREEN
    with pytest.raises(crypto.AuthenticationError):
        crypto.xaead_decrypt(key, nonce, sealed, aad + b"x")


def test_kdf_outputs_chain_as_hkdf_over_hmac_blake2s():
    key, data = bytes(range(32)), b"input"
    prk = crypto.hmac_(key, data)
    first = crypto.hmac_(prk, b"\x01")
    second = crypto.hmac_(prk, first + b"\x02")
    third = crypto.hmac_(prk, second + b"\x03")
    assert crypto.kdf(key, data, 3) == (first, second, third)
    assert crypto.kdf(key, data, 1) == (first,)


def test_tai64n_is_twelve_big_endian_bytes_that_grow_with_time():
    stamp = crypto.tai64n(1_700_000_000.5)
    assert len(stamp) == 12
    assert int.from_bytes(stamp[:8], "big") == (1 << 62) + 10 + 1_700_000_000
    assert int.from_bytes(stamp[8:], "big") == 500_000_000
    assert crypto.tai64n(1_700_000_000.6) > stamp
