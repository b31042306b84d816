"""Authentication by client certificate or static bearer token: who a request is.

As kube-apiserver: a TLS client certificate signed by the `--client-ca-file` CA names the user (CN) and
its groups (one O each); the certificate is checked here, not at the TLS handshake, so one from another
CA gets 401 like a wrong token. The token file is kube-apiserver's `--token-auth-file` CSV:
`token,user,uid,"group1,group2"` (the groups column is optional; lines starting with `#` are comments).

Authorization is RBAC's (apiserver/rbac/): the user name and groups found here are what its bindings
name; `system:masters` is the break-glass group that bypasses it. `/healthz`, `/readyz`, `/livez` and
`/version` answer anyone, as kube-apiserver lets `system:anonymous` read them; why a check failed is told
only to a caller who authenticated (anyone else reads "reason withheld").
With neither a token file nor a client CA the server is open: every request is treated as an admin (and the server logs a
warning at start).
"""

from __future__ import annotations

import csv
import datetime
import hmac
import io
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from podnet.pki import CertificateError, verify_client

MASTERS_GROUP = "system:masters"
AUTHENTICATED_GROUP = "system:authenticated"


class TokenFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: str
    groups: tuple[str, ...]
    # Kubernetes' user "extra" (key, values), in key order: what a service-account token adds about itself.
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


ANONYMOUS_ADMIN = User("system:anonymous", "", (MASTERS_GROUP,))


def parse_token_file(text: str) -> dict[str, User]:
    users: dict[str, User] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or row[0].lstrip().startswith("#") or not "".join(row).strip():
            continue
        if len(row) < 3:
            raise TokenFileError(f"token file line {number}: want token,user,uid[,\"groups\"]")
        token, name, uid = (field.strip() for field in row[:3])
        if not token or not name:
            raise TokenFileError(f"token file line {number}: empty token or user")
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        users[token] = User(name, uid, groups + (AUTHENTICATED_GROUP,))
    return users


class Authenticator:
    """Maps client certificates and bearer tokens to users; with neither tokens nor CAs the server runs open."""

    def __init__(self, tokens: dict[str, User] | None, client_cas: Sequence[x509.Certificate] = ()):
        self._tokens = tokens
        self._client_cas = tuple(client_cas)

    @property
    def open(self) -> bool:
        return self._tokens is None and not self._client_cas

    def add(self, token: str, user: User) -> None:
        """An extra token known only to this process (the loopback token of in-process controllers)."""
        if self._tokens is None:
            self._tokens = {}
        self._tokens[token] = user

    def authenticate(self, authorization: str | None, peer_certificate: bytes | None = None,
                     now: datetime.datetime | None = None) -> User | None:
        """The user a request proves to be, by its TLS client certificate (DER) or its Authorization header;
        None when it proves nothing. `now` (default: the current time) judges the certificate's validity."""
        if self.open:
            return ANONYMOUS_ADMIN
        if peer_certificate and self._client_cas:
            try:
                identity = verify_client(peer_certificate, self._client_cas, now or datetime.datetime.now(datetime.UTC))
            except CertificateError:
                identity = None  # as kube-apiserver: another authenticator (the token) may still succeed
            if identity is not None:
                return User(identity.user, "", identity.groups + (AUTHENTICATED_GROUP,))
        return self._token_user(authorization)

    def _token_user(self, authorization: str | None) -> User | None:
        if not authorization or not self._tokens:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        for known, user in self._tokens.items():
            # Constant-time comparison: a token is a password.
            if hmac.compare_digest(known.encode(), token.encode()):
                return user
        return None
