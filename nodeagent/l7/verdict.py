"""One verdict from Kubernetes NetworkPolicies and Cilium policies together, then one per HTTP request.

Cilium enforces both kinds in one policy repository, so they combine as its documentation says:
- a deny rule that matches wins over every allow, whatever kind of policy allows;
- a pod is in default deny in a direction as soon as any policy of either kind isolates it there
  (a Cilium policy with `enableDefaultDeny` off does not, but its HTTP rules still filter the requests
  of the connections they cover);
- allow rules of both kinds add up, and a NetworkPolicy rule is an allow with no HTTP rules: when any
  allow covering the connection has no HTTP rules, its requests are not filtered;
- otherwise every allow covering it carries HTTP rules, and each request on the connection is allowed
  when any of those rules matches it, and otherwise answered by the proxy with 403 and Cilium's body.
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet.api.httprules import HttpRequestHead, HttpRule

from ..policy.model import Verdict
from .cilium import Allow, CiliumDecision

# Cilium's Envoy filter (cilium.l7policy) answers a denied request with this body when the agent sets
# no --http-403-msg; Envoy adds text/plain.
ACCESS_DENIED_BODY = b"Access denied\r\n"


@dataclass(frozen=True, slots=True)
class L7Rule:
    policy: str
    rule_index: int  # of the policy's ingress/egress list
    http_index: int  # of that rule's toPorts[].rules.http list
    rule: HttpRule


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionVerdict:
    """`l7` is None when the connection's requests are not filtered; otherwise the HTTP rules any one of
    which must match each request."""

    allowed: bool
    reason: str
    direction: str
    policy: str | None = None
    rule_index: int | None = None
    l7: tuple[L7Rule, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVerdict:
    allowed: bool
    reason: str
    policy: str | None = None
    rule_index: int | None = None


def _is_isolating(np: Verdict) -> bool:
    """Whether a NetworkPolicy verdict comes from policies selecting the pod (allowed by one of their
    rules, or denied); an allow with no deciding policy means no NetworkPolicy selects it."""
    return not np.allowed or np.policy is not None


def _decided(verdict: Verdict, direction: str, l7: tuple[L7Rule, ...] | None = None) -> ConnectionVerdict:
    return ConnectionVerdict(
        allowed=verdict.allowed,
        reason=verdict.reason,
        direction=direction,
        policy=verdict.policy,
        rule_index=verdict.rule_index,
        l7=l7,
    )


def _allowed_by(allow: Allow, direction: str, reason: str) -> Verdict:
    return Verdict(
        allowed=True, reason=reason, policy=allow.policy, rule_index=allow.rule_index, direction=direction
    )


def combine(np: Verdict, cilium: CiliumDecision) -> ConnectionVerdict:
    direction = np.direction
    if cilium.denied_by is not None:
        return _decided(cilium.denied_by, direction)
    if np.allowed and np.policy is not None:
        return _decided(np, direction)
    unfiltered = next((a for a in cilium.allows if a.http is None), None)
    if unfiltered is not None:
        reason = f"allowed by {unfiltered.policy} {direction} rule {unfiltered.rule_index}"
        return _decided(_allowed_by(unfiltered, direction, reason), direction)
    if cilium.allows:
        first = cilium.allows[0]
        reason = f"allowed at L4 by {first.policy} {direction} rule {first.rule_index}; HTTP filtered"
        rules = tuple(
            L7Rule(a.policy, a.rule_index, i, rule) for a in cilium.allows for i, rule in enumerate(a.http)
        )
        return _decided(_allowed_by(first, direction, reason), direction, rules)
    if not (cilium.isolated or _is_isolating(np)) or not np.allowed:
        return _decided(np, direction)
    return ConnectionVerdict(
        allowed=False, reason="denied: selected by a Cilium policy and no rule matched", direction=direction
    )


def judge_request(connection: ConnectionVerdict, request: HttpRequestHead) -> RequestVerdict:
    """One request on an allowed connection."""
    if connection.l7 is None:
        return RequestVerdict(
            allowed=True, reason=connection.reason, policy=connection.policy, rule_index=connection.rule_index
        )
    for rule in connection.l7:
        if rule.rule.matches(request):
            return RequestVerdict(
                allowed=True,
                reason=f"allowed by {rule.policy} {connection.direction} rule {rule.rule_index} "
                f"http[{rule.http_index}] {rule.rule.text}",
                policy=rule.policy,
                rule_index=rule.rule_index,
            )
    deciders = list(dict.fromkeys((r.policy, r.rule_index) for r in connection.l7))
    if len(deciders) == 1:
        policy, index = deciders[0]
        return RequestVerdict(
            allowed=False,
            reason=f"denied by {policy} {connection.direction} rule {index}: no HTTP rule matched",
            policy=policy,
            rule_index=index,
        )
    rules = ", ".join(f"{p} {connection.direction} rule {i}" for p, i in deciders)
    return RequestVerdict(allowed=False, reason=f"denied: no HTTP rule of {rules} matched")


def access_denied_response(*, keep_alive: bool = True) -> bytes:
    """The proxy's answer to a denied request; the connection stays open for the next one unless the
    client asked to close it."""
    head = [
        b"HTTP/1.1 403 Forbidden",
        b"content-length: %d" % len(ACCESS_DENIED_BODY),
        b"content-type: text/plain",
    ]
    if not keep_alive:
        head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + ACCESS_DENIED_BODY
