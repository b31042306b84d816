"""Authentication by static bearer tokens and a small role model for authorization.

The token file is kube-apiserver's `--token-auth-file` CSV: `token,user,uid,"group1,group2"` (the
groups column is optional; lines starting with `#` are comments).

Authorization is by group (the user name never grants anything):

| group              | may                                                                       |
|--------------------|---------------------------------------------------------------------------|
| `system:masters`   | everything (as in Kubernetes, where this group bypasses RBAC)             |
| `admin`            | everything                                                                |
| `view`             | `get`, `list`, `watch` on every resource                                  |
| `edit:<namespace>` | every verb on namespaced resources in `<namespace>` (and reading them)    |

Every authenticated user may read the non-resource paths (discovery, `/version`, `/metrics`);
`/healthz`, `/readyz` and `/livez` answer anyone, as kube-apiserver lets `system:anonymous` do.
With no token file the server is open: every request is treated as an admin (and the server logs a
warning at start).
"""

from __future__ import annotations

import csv
import hmac
import io
from dataclasses import dataclass

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
    """Maps bearer tokens to users; `None` tokens mean the server runs open."""

    def __init__(self, tokens: dict[str, User] | None):
        self._tokens = tokens

    @property
    def open(self) -> bool:
        return self._tokens is None

    def add(self, token: str, user: User) -> None:
        """An extra token known only to this process (the loopback token of in-process controllers)."""
        if self._tokens is not None:
            self._tokens[token] = user

    def authenticate(self, authorization: str | None) -> User | None:
        if self._tokens is None:
            return ANONYMOUS_ADMIN
        if not authorization:
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


def authorize(user: User, verb: str, namespace: str | None, *, namespaced: bool) -> bool:
    """Whether `user` may do `verb` (get/list/watch/create/update/patch/delete) on a resource in
    `namespace` (None: all namespaces, or a cluster-scoped resource)."""
    groups = set(user.groups)
    if MASTERS_GROUP in groups or ADMIN_GROUP in groups:
        return True
    if verb in READ_VERBS and VIEW_GROUP in groups:
        return True
    return namespaced and namespace is not None and f"{EDIT_GROUP_PREFIX}{namespace}" in groups
