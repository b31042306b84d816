"""Authentication by client certificate or static bearer token, and a small role model for authorization.

As kube-apiserver: a TLS client certificate signed by the `--client-ca-file` CA names the user (CN) and
its groups (one O each); the certificate is checked here, not at the TLS handshake, so one from another
CA gets 401 like a wrong token. The token file is kube-apiserver's `--token-auth-file` CSV:
`token,user,uid,"group1,group2"` (the groups column is optional; lines starting with `#` are comments).

Authorization is by group (the user name never grants anything):

| group              | may                                                                       |
|--------------------|---------------------------------------------------------------------------|
| `system:masters`   | everything (as in Kubernetes, where this group bypasses RBAC)             |
| `admin`            | everything                                                                |
| `view`             | `get`, `list`, `watch` on every resource                                  |
| `edit:<namespace>` | every verb on namespaced resources in `<namespace>` (and reading them)    |

Every authenticated user may read the non-resource paths (discovery, `/version`, `/metrics`);
`/healthz`, `/readyz` and `/livez` answer anyone, as kube-apiserver lets `system:anonymous` do; why a check
failed is told only to a caller who authenticated (anyone else reads "reason withheld").
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
ADMIN_GROUP = "admin"
VIEW_GROUP = "view"
EDIT_GROUP_PREFIX = "edit:"
AUTHENTICATED_GROUP = "system:authenticated"

READ_VERBS = frozenset({"get", "list", "watch"})


class TokenFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: str
    groups: tuple[str, ...]


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


# What the view role may not read (Kubernetes' `view` ClusterRole leaves Secrets out: reading one can be
# escalation, a ServiceAccount's token among them).
HIDDEN_FROM_VIEW = frozenset({"secrets"})


def authorize(user: User, verb: str, namespace: str | None, *, namespaced: bool, resource: str = "") -> bool:
    """Whether `user` may do `verb` (get/list/watch/create/update/patch/delete) on `resource` (a plural) in
    `namespace` (None: all namespaces, or a cluster-scoped resource)."""
    groups = set(user.groups)
    if MASTERS_GROUP in groups or ADMIN_GROUP in groups:
        return True
    if verb in READ_VERBS and VIEW_GROUP in groups and resource not in HIDDEN_FROM_VIEW:
        return True
    return namespaced and namespace is not None and f"{EDIT_GROUP_PREFIX}{namespace}" in groups
