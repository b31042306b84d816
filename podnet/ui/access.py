"""Who may use the UI, and for what, as the API server decides it.

The UI holds no credential of its own: a user logs in with a bearer token, which the UI takes to the API
server (a SelfSubjectReview: who is this?) and keeps only in the user's session. Every read of the API
afterwards is made with that token, so RBAC rules the page as it rules kubectl. The page shows every
namespace at once, so a token must be able to list nodes and pods cluster-wide (the `view` group, an
administrator); probes and traces send packets from a pod, which Kubernetes allows a user as `create
pods/exec` in the pod's namespace, and the UI asks the API server that question (a
SelfSubjectAccessReview) before each one.

`Sessions` is pure: the session table with its expiry, the clock passed in.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from podnet.client import ApiClient, ApiError

REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
# What the page reads everywhere: without these it would show a cluster with holes in it.
NEEDED = (("list", "", "nodes"), ("watch", "", "nodes"), ("list", "", "pods"), ("watch", "", "pods"),
          ("list", "", "services"), ("list", "", "namespaces"))


class LoginRefused(Exception):
    """Why a token does not open the UI, in words for the login page."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...]
    can_probe: bool  # anywhere: the page offers probe and trace buttons; each is asked again when used


async def allowed(client: ApiClient, verb: str, group: str, resource: str, namespace: str = "",
                  subresource: str = "") -> bool:
    """The API server's answer to "may I?" for the client's own credential."""
    attributes = {"verb": verb, "group": group, "resource": resource, "namespace": namespace,
                  "subresource": subresource}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}}}
    answer = await client.request("POST", REVIEWS, body=review)
    return bool((answer.get("status") or {}).get("allowed"))


async def may_probe(client: ApiClient, namespace: str = "") -> bool:
    """Whether the user may send traffic from pods of `namespace` ("": every namespace)."""
    return await allowed(client, "create", "", "pods", namespace, "exec")


async def identify(client: ApiClient) -> Identity:
    """Who the client's token is, and whether it may use the UI; LoginRefused otherwise."""
    if not client.token:
        raise LoginRefused("login refused: a bearer token is needed")
    try:
        review = await client.request("POST", WHOAMI, body={
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        info = (review.get("status") or {}).get("userInfo") or {}
        missing = [f"{verb} {resource}" for verb, group, resource in NEEDED
                   if not await allowed(client, verb, group, resource)]
        can_probe = await may_probe(client)
    except ApiError as exc:
        if exc.code == 401:
            raise LoginRefused("login refused: the API server does not accept this token") from None
        if exc.code == 0:
            raise LoginRefused(f"login refused: {exc}") from None
        raise LoginRefused(f"login refused by the API server: {exc}") from None
    if missing:
        raise LoginRefused(f"login refused: {info.get('username', 'this user')} may not "
                           f"{', '.join(missing)} in every namespace, which the UI shows")
    return Identity(str(info.get("username") or ""), tuple(info.get("groups") or ()), can_probe)


@dataclass(slots=True)
class Session:
    token: str
    identity: Identity
    expires: float


@dataclass
class Sessions:
    """Session id (the cookie) -> the user's token and identity, each until `ttl` seconds after login."""

    ttl: float = 8 * 3600.0
    _sessions: dict[str, Session] = field(default_factory=dict)

    def open(self, token: str, identity: Identity, now: float) -> str:
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(token, identity, now + self.ttl)
        return session_id

    def get(self, session_id: str | None, now: float) -> Session | None:
        session = self._sessions.get(session_id or "")
        if session is not None and session.expires <= now:
            del self._sessions[session_id]  # type: ignore[arg-type]
            return None
        return session

    def expire(self, now: float) -> int:
        """Drops every session past its expiry; how many went."""
        gone = [sid for sid, session in self._sessions.items() if session.expires <= now]
        for sid in gone:
            del self._sessions[sid]
        return len(gone)

    def close(self, session_id: str | None) -> Session | None:
        return self._sessions.pop(session_id or "", None)

    def tokens(self) -> set[str]:
        return {s.token for s in self._sessions.values()}

    def __len__(self) -> int:
        return len(self._sessions)
