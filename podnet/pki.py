"""The cluster's certificates, as kube-apiserver and kubectl read them: a CA, a serving certificate for the
API server, and client certificates whose subject is the identity (CN = user name, O = one group each).

Pure: keys, certificates and PEM bytes in and out; the caller gives the time (`now`) and writes the files.
Keys are ECDSA P-256 (kubeadm's `--encryption-algorithm ECDSA-P256`): quick to make, and every Kubernetes
client accepts them.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
# kubeadm's certificates (other than the CA) last a year.
LEAF_VALIDITY = datetime.timedelta(days=365)
# Certificates are valid from a little before `now`, so that a peer whose clock is behind accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=5)


class CertificateError(ValueError):
    """A certificate that does not prove an identity: unparsable, expired, or not signed by the CA."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an ECDSA private key")
        return key

    @property
    def matches(self) -> bool:
        """Whether the key is the certificate's."""
        return self.certificate.public_key() == self.private_key.public_key()


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a client certificate says its holder is, as kube-apiserver's x509 authenticator reads it."""

    user: str
    groups: tuple[str, ...]


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    # One O attribute per group, as `openssl req -subj /O=a/O=b/CN=user` and kubeadm write them.
    return x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    return KeyPair(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, now: datetime.datetime,
             validity: datetime.timedelta) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + validity)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))


def make_ca(now: datetime.datetime, common_name: str = "podnet-ca", validity: datetime.timedelta = CA_VALIDITY) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (_builder(name, name, key, now, validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return _pem(cert, key)


def _leaf(ca: KeyPair, subject: x509.Name, usages: list[x509.ObjectIdentifier], now: datetime.datetime,
          validity: datetime.timedelta) -> tuple[x509.CertificateBuilder, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = ca.certificate
    builder = (_builder(subject, ca_cert.subject, key, now, validity)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False))
    return builder, key


def subject_alternative_names(names: Iterable[str]) -> list[x509.GeneralName]:
    """Addresses become IP SANs and everything else DNS SANs (Go checks an address only against IP SANs)."""
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return sans


def make_serving(ca: KeyPair, names: Iterable[str], now: datetime.datetime, common_name: str = "kube-apiserver",
                 validity: datetime.timedelta = LEAF_VALIDITY, *, client_too: bool = False) -> KeyPair:
    """A server certificate for every address and DNS name in `names`. With `client_too` it may also be
    presented as a client's, as etcd presents its own (kubeadm's etcd/server.crt and etcd/peer.crt): to its
    peers, and to itself when its HTTP gateway calls its gRPC API."""
    sans = subject_alternative_names(names)
    if not sans:
        raise ValueError("a serving certificate needs at least one name")
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, *([ExtendedKeyUsageOID.CLIENT_AUTH] if client_too else [])]
    builder, key = _leaf(ca, _name(common_name), usages, now, validity)
    cert = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(ca.private_key, hashes.SHA256())
    return _pem(cert, key)


def make_client(ca: KeyPair, user: str, groups: Iterable[str], now: datetime.datetime,
                validity: datetime.timedelta = LEAF_VALIDITY) -> KeyPair:
    """A client certificate for `user` in `groups` (CN = user, one O per group)."""
    if not user:
        raise ValueError("a client certificate needs a user name")
    builder, key = _leaf(ca, _name(user, groups), [ExtendedKeyUsageOID.CLIENT_AUTH], now, validity)
    return _pem(builder.sign(ca.private_key, hashes.SHA256()), key)


def make_signing_key() -> bytes:
    """A private key (PEM) that signs service-account tokens, as kubeadm's sa.key (ES256 here)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (a --client-ca-file may hold several CAs)."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateError("not a PEM certificate bundle") from None


def verify_client(cert_der: bytes, cas: Iterable[x509.Certificate], now: datetime.datetime) -> Identity:
    """The identity of a client certificate directly signed by one of `cas`, valid at `now` and allowed for
    client authentication; CertificateError otherwise."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError as exc:
        raise CertificateError(f"unparsable certificate: {exc}") from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError(f"certificate has expired or is not yet valid: current time {now:%Y-%m-%dT%H:%M:%SZ} "
                               f"is outside {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} – "
                               f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        break
    else:
        raise CertificateError("certificate signed by unknown authority")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        raise CertificateError("certificate specifies an incompatible key usage")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    user = str(names[0].value) if names else ""
    if not user:
        raise CertificateError("certificate has no common name")
    groups = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return Identity(user, groups)
