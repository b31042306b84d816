"""The claims of a bound service-account token, as kube-apiserver 1.31 writes and judges them.

A token says who it is for (`sub` = `system:serviceaccount:<ns>:<name>`, and the `kubernetes.io` claim
with the namespace, the ServiceAccount's name and uid, and the object it is bound to: a Pod — with the
Node the pod runs on, for whoever reads the token — a Secret or a Node), who may accept it (`aud`), and
when (`iat`, `nbf`, `exp`); `jti` names this one token for the audit log.

Accepting one takes, in order: an issuer this server trusts, one of this server's audiences, the time
window (with go-jose's one-minute leeway), and then that the ServiceAccount and the bound object still
exist with the uids the token names and are not being deleted since before the leeway — deleting the pod
or the account revokes every token bound to it. The lookups are the caller's: `check_claims` says what to
fetch, `check_objects` judges what was fetched. Pure: `now` is seconds since the epoch, given.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podnet.apiserver.auth import AUTHENTICATED_GROUP, User
from podnet.apiserver.rbac.authorizer import SERVICE_ACCOUNT_PREFIX

# go-jose's jwt.DefaultLeeway, which kube-apiserver uses for exp, nbf and iat and for deletions.
LEEWAY_SECONDS = 60
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
PRIVATE_CLAIM = "kubernetes.io"
BINDABLE_KINDS = ("Pod", "Secret", "Node")
_EXTRA_PREFIX = "authentication.kubernetes.io/"


class TokenRejected(ValueError):
    """A well-signed token this server does not accept (the request is then a 401)."""


@dataclass(frozen=True, slots=True)
class Ref:
    name: str
    uid: str

    def to_claim(self) -> dict:
        return {"name": self.name, "uid": self.uid} if self.uid else {"name": self.name}


@dataclass(frozen=True, slots=True)
class Subject:
    """What an accepted token names, before its objects are checked."""

    namespace: str
    account: Ref
    pod: Ref | None = None
    secret: Ref | None = None
    node: Ref | None = None  # only when the token is bound to the Node itself
    pod_node: Ref | None = None  # the node a bound pod ran on, as the token says (never checked)
    token_id: str = ""


def _ref(obj: Mapping) -> Ref:
    metadata = obj.get("metadata") or {}
    return Ref(str(metadata.get("name") or ""), str(metadata.get("uid") or ""))


def make_claims(*, issuer: str, audiences: Sequence[str], account: Mapping, now: int, expiration_seconds: int,
                token_id: str, pod: Mapping | None = None, secret: Mapping | None = None,
                node: Mapping | None = None) -> dict:
    """The claims of a new token for `account` (a ServiceAccount object), bound to at most one of pod,
    secret or node; with a pod, `node` is the node it runs on (informational, never checked)."""
    metadata = account.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    private: dict = {"namespace": namespace, "serviceaccount": _ref(account).to_claim()}
    if pod is not None:
        private["pod"] = _ref(pod).to_claim()
    elif secret is not None:
        private["secret"] = _ref(secret).to_claim()
    if node is not None:
        private["node"] = _ref(node).to_claim()
    return {"aud": list(audiences), "exp": now + expiration_seconds, "iat": now, "iss": issuer, "jti": token_id,
            PRIVATE_CLAIM: private, "nbf": now, "sub": f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"}


def _number(claims: Mapping, name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"claim {name} is not a number")
    return value


def _parse_ref(value: object, what: str, *, required: bool = False) -> Ref | None:
    if value is None and not required:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        raise TokenRejected(f"claim {PRIVATE_CLAIM}.{what} is malformed")
    uid = value.get("uid", "")
    if not isinstance(uid, str):
        raise TokenRejected(f"claim {PRIVATE_CLAIM}.{what}.uid is malformed")
    return Ref(value["name"], uid)


def check_claims(claims: Mapping, *, issuers: Sequence[str], audiences: Sequence[str], now: float) -> Subject:
    """The subject of a token whose signature is good; TokenRejected when this server must not accept it."""
    if claims.get("iss") not in issuers:
        raise TokenRejected("the token's issuer is not this server's")
    audience = claims.get("aud")
    token_audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(token_audiences, list) or not set(map(str, token_audiences)) & set(audiences):
        raise TokenRejected(f"token audiences {token_audiences!r} is invalid for the target audiences {list(audiences)!r}")
    expiry, not_before, issued = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    if expiry is None:
        raise TokenRejected("service account token has no expiry")  # every bound token has one
    if now > expiry + LEEWAY_SECONDS:
        raise TokenRejected("service account token has expired")
    if not_before is not None and now + LEEWAY_SECONDS < not_before:
        raise TokenRejected("service account token is not valid yet")
    if issued is not None and now + LEEWAY_SECONDS < issued:
        raise TokenRejected("service account token issued in the future")
    private = claims.get(PRIVATE_CLAIM)
    if not isinstance(private, dict) or not isinstance(private.get("namespace"), str) or not private["namespace"]:
        raise TokenRejected(f"claim {PRIVATE_CLAIM} is malformed")
    namespace = private["namespace"]
    account = _parse_ref(private.get("serviceaccount"), "serviceaccount", required=True)
    assert account is not None
    if claims.get("sub") != f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{account.name}":
        raise TokenRejected("the token's subject is not its service account")
    pod = _parse_ref(private.get("pod"), "pod")
    secret = _parse_ref(private.get("secret"), "secret")
    node = _parse_ref(private.get("node"), "node")
    token_id = claims.get("jti") if isinstance(claims.get("jti"), str) else ""
    if pod is not None:
        return Subject(namespace, account, pod, secret, None, node, token_id)
    return Subject(namespace, account, pod, secret, node, None, token_id)


def _deleted_before(obj: Mapping, limit: float) -> bool:
    stamp = (obj.get("metadata") or {}).get("deletionTimestamp")
    if not stamp:
        return False
    try:
        when = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return True
    return when < limit


def check_objects(subject: Subject, now: float, *, account: Mapping | None, pod: Mapping | None = None,
                  secret: Mapping | None = None, node: Mapping | None = None) -> None:
    """Whether the objects the token names still stand as it names them; TokenRejected when one was
    deleted (or is being deleted since before the leeway) or replaced by one with another uid."""
    limit = now - LEEWAY_SECONDS
    checks = [("service account", subject.account, account), ("pod", subject.pod, pod),
              ("secret", subject.secret, secret), ("node", subject.node, node)]
    for what, ref, obj in checks:
        if ref is None:
            continue
        if obj is None or _deleted_before(obj, limit):
            raise TokenRejected(f"{what} {ref.name} of the token has been deleted: the token has been invalidated")
        uid = _ref(obj).uid
        if ref.uid and uid != ref.uid:
            raise TokenRejected(f"{what} UID ({uid}) does not match the token's claim ({ref.uid})")


def user_of(subject: Subject) -> User:
    """Who a service-account token's bearer is, as kube-apiserver names them, with the extra it gives: the
    token's id, and the pod and node it is bound to."""
    extra: dict[str, str] = {}
    if subject.token_id:
        extra[f"{_EXTRA_PREFIX}credential-id"] = f"JTI={subject.token_id}"
    if subject.pod is not None:
        extra[f"{_EXTRA_PREFIX}pod-name"], extra[f"{_EXTRA_PREFIX}pod-uid"] = subject.pod.name, subject.pod.uid
    node = subject.node or subject.pod_node
    if node is not None:
        extra[f"{_EXTRA_PREFIX}node-name"] = node.name
        if node.uid:
            extra[f"{_EXTRA_PREFIX}node-uid"] = node.uid
    return User(f"{SERVICE_ACCOUNT_PREFIX}{subject.namespace}:{subject.account.name}", subject.account.uid,
                (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{subject.namespace}", AUTHENTICATED_GROUP),
                tuple((key, (value,)) for key, value in sorted(extra.items()) if value))
