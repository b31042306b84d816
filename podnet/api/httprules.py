"""Cilium's HTTP rules (`toPorts[].rules.http[]`, PortRuleHTTP) and how one request is matched.

Cilium hands these rules to Envoy, which decides, so the semantics are Envoy's route matching:
- `method`, `path` and `host` are regular expressions matched against the whole of the request's
  method, request target (`:path`, query string included) and Host (`:authority`): an implicit `^...$`,
  so `/public` does not match `/public/x` and `GET|HEAD` matches either method. An absent field matches
  anything.
- `headers` lists headers the request must carry: `"X-Token"` asks only for presence, `"X-Token: abc"`
  (a name, a colon, a space, a value) for that exact value. Header names match without regard to case.
- A rule matches when all its fields match; a list of rules allows a request when any rule matches.

Patterns are RE2 in Cilium (Go's regexp validates them); constructs RE2 refuses — look-around and
back-references — are refused here too, so that a policy accepted by podnet is one Cilium accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The methods of RFC 9110 and RFC 5789: a `method` pattern that matches none of them cannot match a
# request any server would answer, which is a mistake in the rule.
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")

HTTP_RULE_FIELDS = ("method", "path", "host", "headers")

_RE2_REFUSES = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")


class RuleError(ValueError):
    """A rule field Cilium would refuse: `field` is its path in the object, `value` the bad value."""

    def __init__(self, field: str, value: object, detail: str) -> None:
        super().__init__(f"{field}: Invalid value: {value!r}: {detail}")
        self.field = field
        self.value = value
        self.detail = detail


@dataclass(frozen=True, slots=True)
class HttpRequestHead:
    """What an HTTP rule looks at: the method, the request target as sent, and the header fields in
    order (names as sent)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def host(self) -> str:
        return self.header("host") or ""


@dataclass(frozen=True, slots=True)
class HeaderRequirement:
    name: str
    value: str | None  # None: presence is enough

    def matches(self, request: HttpRequestHead) -> bool:
        found = request.header(self.name)
        return found is not None and (self.value is None or found == self.value)


@dataclass(frozen=True, slots=True)
class HttpRule:
    method: re.Pattern | None
    path: re.Pattern | None
    host: re.Pattern | None
    headers: tuple[HeaderRequirement, ...]
    text: str  # the rule as written, for explanations

    def matches(self, request: HttpRequestHead) -> bool:
        if self.method is not None and not self.method.fullmatch(request.method):
            return False
        if self.path is not None and not self.path.fullmatch(request.target):
            return False
        if self.host is not None and not self.host.fullmatch(request.host):
            return False
        return all(h.matches(request) for h in self.headers)


def compile_pattern(pattern: object, field: str) -> re.Pattern:
    if not isinstance(pattern, str):
        raise RuleError(field, pattern, "must be a string")
    if _RE2_REFUSES.search(pattern):
        raise RuleError(field, pattern, "look-around and back-references are not RE2 regular expressions")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise RuleError(field, pattern, f"invalid regular expression: {e}") from e


def _header_requirement(text: object, field: str) -> HeaderRequirement:
    if not isinstance(text, str) or not text.strip():
        raise RuleError(field, text, "must be a header name, optionally followed by ': value'")
    name, sep, value = text.strip().partition(" ")
    return HeaderRequirement(name=name.rstrip(":"), value=value if sep else None)


def parse_http_rule(rule: object, field: str) -> HttpRule:
    if not isinstance(rule, Mapping):
        raise RuleError(field, rule, "must be an object")
    method = None
    if rule.get("method") is not None:
        method = compile_pattern(rule["method"], f"{field}.method")
        if not any(method.fullmatch(m) for m in KNOWN_METHODS):
            raise RuleError(
                f"{field}.method", rule["method"], f"matches no HTTP method ({', '.join(KNOWN_METHODS)})"
            )
    headers = rule.get("headers") or []
    if not isinstance(headers, list):
        raise RuleError(f"{field}.headers", headers, "must be a list of strings")
    text = " ".join(f"{k}={rule[k]!r}" for k in HTTP_RULE_FIELDS if rule.get(k) is not None) or "{}"
    return HttpRule(
        method=method,
        path=None if rule.get("path") is None else compile_pattern(rule["path"], f"{field}.path"),
        host=None if rule.get("host") is None else compile_pattern(rule["host"], f"{field}.host"),
        headers=tuple(_header_requirement(h, f"{field}.headers[{i}]") for i, h in enumerate(headers)),
        text=text,
    )


def parse_http_rules(rules: object, field: str) -> tuple[HttpRule, ...]:
    if not isinstance(rules, list):
        raise RuleError(field, rules, "must be a list")
    return tuple(parse_http_rule(r, f"{field}[{i}]") for i, r in enumerate(rules))


def first_match(rules: Sequence[HttpRule], request: HttpRequestHead) -> int | None:
    """The index of the first rule matching the request, or None."""
    for i, rule in enumerate(rules):
        if rule.matches(request):
            return i
    return None
