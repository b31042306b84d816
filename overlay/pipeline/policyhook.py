"""The values that cross the policy hook: a new connection (`Flow`) goes in, a `Verdict` comes out.

The forwarding pipeline calls `policy(direction, flow)` once per new connection, after Service DNAT
(policies see pod addresses, never Service addresses); conntrack keeps the verdict, so replies of an
allowed connection pass without asking again. The NetworkPolicy engine (nodeagent/policy) decides with
these same types; a pipeline without it allows everything (`allow_all`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class PolicyDirection(StrEnum):
    EGRESS = "egress"
    INGRESS = "ingress"


@dataclass(frozen=True, slots=True)
class Flow:
    """What a policy decides on: the first packet of a connection, after any DNAT; or a packet that
    belongs to no connection conntrack tracks, with ports 0."""

    protocol: str  # "TCP", "UDP", "ICMP", "SCTP", or another protocol's number
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """`policy` is "namespace/name" and `rule_index` the index in that policy's ingress or egress list
    of the rule that allowed the connection; both are None when no single rule decided. `direction` is
    None for a verdict no policy engine gave."""

    allowed: bool
    reason: str
    policy: str | None = None
    rule_index: int | None = None
    direction: str | None = None  # a PolicyDirection's value
    # How an L7 proxy filters the connection's requests (the trace's l7-policy stage); None: it does not.
    l7: str | None = None


ALLOWED_WITHOUT_POLICY = Verdict(True, "no policy installed")


def describe_verdict(verdict: Verdict) -> str:
    """ "allowed: <reason>" or "denied: <reason>", once, whether or not the reason already says it."""
    word = "allowed" if verdict.allowed else "denied"
    return verdict.reason if verdict.reason.startswith(word) else f"{word}: {verdict.reason}"


def allow_all(direction: PolicyDirection, flow: Flow) -> Verdict:
    return ALLOWED_WITHOUT_POLICY


Policy = Callable[[PolicyDirection, Flow], Verdict]
