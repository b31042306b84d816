"""JSON Web Tokens as kube-apiserver signs and checks service-account tokens.

JWS compact serialization (RFC 7515) with RS256 (RSA PKCS#1 v1.5, SHA-256) or ES256 (ECDSA P-256, the
signature as fixed-width r||s, RFC 7518 §3.4), chosen by the signing key's type. A key's id (`kid`) is
kube-apiserver's: the unpadded base64url of the SHA-256 of the public key's PKIX DER, so a verifier that
holds several keys (a rotation) picks the one a token names. `jwks` renders the keys as the
`/openid/v1/jwks` document lists them.

Verification refuses rather than guesses: a header or payload that is not a JSON object, padding or any
other than the canonical spelling of the base64url, an `alg` that does not match the key (`none`, HS256 forged with a public key), a `crit` header
(no extension is understood) — each is a `JwtError`. Pure: keys and strings in, dicts out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_P256_BYTES = 32
# A token is a header, so kube-apiserver never sees one longer than its header limit; refusing a huge one
# before decoding keeps a hostile client from making the server parse megabytes of base64.
MAX_TOKEN_BYTES = 16 * 1024


class JwtError(ValueError):
    """A token that is not a well-formed JWS signed by one of the keys."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    if "=" in text:
        raise JwtError("base64url with padding")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("not base64url") from None
    # Only the canonical spelling: otherwise one signed token has several spellings (the unused low bits of
    # the last character), and a token refused by its text could come back as another text.
    if _b64encode(data) != text:
        raise JwtError("base64url that is not canonical")
    return data


def key_id(public_key: PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64encode(hashlib.sha256(der).digest())


def algorithm(public_key: PublicKey) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key.curve, ec.SECP256R1):
        return "ES256"
    raise JwtError(f"unsupported key: ECDSA on {public_key.curve.name} (ES256 needs P-256)")


@dataclass(frozen=True, slots=True)
class SigningKey:
    private_key: PrivateKey

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()


def load_signing_key(pem: bytes) -> SigningKey:
    """The private key of a PEM file (kube-apiserver's --service-account-signing-key-file); ValueError."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("data does not contain a valid RSA or ECDSA private key")
    algorithm(key.public_key())
    return SigningKey(key)


def load_public_keys(pem: bytes) -> list[PublicKey]:
    """Every public key of a PEM file (--service-account-key-file): public keys, or the public half of a
    private key; ValueError when it holds none."""
    keys: list[PublicKey] = []
    for block in pem.split(b"-----END ")[:-1]:
        begin = block.rfind(b"-----BEGIN ")
        if begin < 0:
            continue
        label = block[begin + len(b"-----BEGIN "):].split(b"-----", 1)[0]
        text = block[begin:] + b"-----END " + label + b"-----\n"
        try:
            if label.endswith(b"PRIVATE KEY"):
                loaded = serialization.load_pem_private_key(text, password=None).public_key()
            elif label.endswith(b"PUBLIC KEY"):
                loaded = serialization.load_pem_public_key(text)
            else:
                continue
        except (ValueError, TypeError):
            raise ValueError(f"a {label.decode(errors='replace')} block that does not parse") from None
        if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("not an RSA or ECDSA key")
        algorithm(loaded)
        keys.append(loaded)
    if not keys:
        raise ValueError("no public or private key in the file")
    return keys


def sign(claims: dict, key: SigningKey) -> str:
    header = {"alg": algorithm(key.public_key), "kid": key_id(key.public_key)}
    signing_input = ".".join(_b64encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    data = signing_input.encode()
    if isinstance(key.private_key, rsa.RSAPrivateKey):
        signature = key.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    return f"{signing_input}.{_b64encode(signature)}"


def _json_object(segment: str, what: str) -> dict:
    try:
        value = json.loads(_b64decode(segment))
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, JwtError):
            raise
        raise JwtError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise JwtError(f"{what} is not a JSON object")
    return value


def _verifies(public_key: PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            if len(signature) != 2 * _P256_BYTES:
                return False
            r, s = int.from_bytes(signature[:_P256_BYTES], "big"), int.from_bytes(signature[_P256_BYTES:], "big")
            public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def unverified_claims(token: str) -> dict:
    """The payload, unchecked: what kube-apiserver reads first to tell whether a token's issuer is its own."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN_BYTES or len(parts) != 3:
        raise JwtError("not a JWS in compact serialization")
    return _json_object(parts[1], "the payload")


def verify(token: str, keys: Sequence[PublicKey]) -> dict:
    """The claims of a token signed by one of `keys`; JwtError otherwise. Times and audiences are the
    caller's to judge (claims.py)."""
    claims = unverified_claims(token)
    header_segment, payload_segment, signature_segment = token.split(".")
    header = _json_object(header_segment, "the header")
    if "crit" in header:
        raise JwtError("critical header extensions are not supported")
    alg, kid = header.get("alg"), header.get("kid")
    candidates = [k for k in keys if algorithm(k) == alg and (not kid or key_id(k) == kid)]
    if not candidates:
        raise JwtError("no key for the token's algorithm and key id")
    data = f"{header_segment}.{payload_segment}".encode()
    signature = _b64decode(signature_segment)
    if not any(_verifies(k, data, signature) for k in candidates):
        raise JwtError("invalid signature")
    return claims


def _jwk(public_key: PublicKey) -> dict:
    common = {"use": "sig", "kid": key_id(public_key), "alg": algorithm(public_key)}
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {"kty": "RSA"} | common | {"n": _b64encode(n), "e": _b64encode(e)}
    point = public_key.public_numbers()
    return {"kty": "EC"} | common | {"crv": "P-256", "x": _b64encode(point.x.to_bytes(_P256_BYTES, "big")),
                                     "y": _b64encode(point.y.to_bytes(_P256_BYTES, "big"))}


def jwks(keys: Sequence[PublicKey]) -> dict:
    """The JSON Web Key Set of the keys, one per key id."""
    unique = {key_id(k): k for k in keys}
    return {"keys": [_jwk(k) for k in unique.values()]}
