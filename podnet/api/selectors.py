"""Label selectors, as Kubernetes defines them: the string form of `?labelSelector=` and `kubectl -l`,
and the object form (`matchLabels` + `matchExpressions`) of Deployments, Services' pod selection and
NetworkPolicies. Both compile to one `Selector`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class SelectorError(ValueError):
    pass


class Operator(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if op in (Operator.EQUALS, Operator.IN):
            return self.key in labels and labels[self.key] in self.values
        # != and notin match objects without the key, as Kubernetes does.
        return self.key not in labels or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    """All requirements must match. No requirement selects everything; `nothing` selects nothing."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    @property
    def empty(self) -> bool:
        return not self.requirements and not self.nothing

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


EVERYTHING = Selector()
NOTHING = Selector(nothing=True)

_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)"
_KEY_RE = re.compile(rf"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}")
_VALUE_RE = re.compile(rf"({_NAME})?")


def validate_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if not _KEY_RE.fullmatch(key) or len(name) > 63 or len(prefix) > 253:
        raise SelectorError(f"invalid label key {key!r}")


def validate_value(value: str) -> None:
    if len(value) > 63 or not _VALUE_RE.fullmatch(value):
        raise SelectorError(f"invalid label value {value!r}")


def _requirement(key: str, operator: Operator, values: list[str]) -> Requirement:
    validate_key(key)
    for v in values:
        validate_value(v)
    if operator in (Operator.IN, Operator.NOT_IN) and not values:
        raise SelectorError(f"{key}: operator {operator.value} needs at least one value")
    return Requirement(key, operator, frozenset(values))


# One requirement of the string form: `k in (a,b)`, `k notin (a)`, `k=v`, `k==v`, `k!=v`, `k`, `!k`.
_SET_RE = re.compile(r"\s*(?P<key>[^\s=!(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*")
_EQ_RE = re.compile(r"\s*(?P<key>[^\s=!(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s=!(),]*)\s*")
_EXISTS_RE = re.compile(r"\s*(?P<neg>!?)\s*(?P<key>[^\s=!(),]+)\s*")


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in selector {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"unbalanced '(' in selector {text!r}")
    parts.append(text[start:])
    return parts


def parse(text: str | None) -> Selector:
    """Parses the string form; an empty string selects everything."""
    if text is None or not text.strip():
        return EVERYTHING
    requirements = []
    for part in _split_top_level(text):
        if m := _SET_RE.fullmatch(part):
            values = [v.strip() for v in m["values"].split(",")]
            if any(not v for v in values):
                raise SelectorError(f"empty value in {part.strip()!r}")
            op = Operator.IN if m["op"] == "in" else Operator.NOT_IN
            requirements.append(_requirement(m["key"], op, values))
        elif m := _EQ_RE.fullmatch(part):
            op = Operator.NOT_EQUALS if m["op"] == "!=" else Operator.EQUALS
            requirements.append(_requirement(m["key"], op, [m["value"]]))
        elif m := _EXISTS_RE.fullmatch(part):
            op = Operator.DOES_NOT_EXIST if m["neg"] else Operator.EXISTS
            requirements.append(_requirement(m["key"], op, []))
        else:
            raise SelectorError(f"unable to parse requirement {part.strip()!r}")
    return Selector(tuple(requirements))


_EXPRESSION_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def from_label_selector(selector: dict | None) -> Selector:
    """Compiles a LabelSelector object. None selects nothing (as a missing selector does in the API);
    `{}` selects everything."""
    if selector is None:
        return NOTHING
    if not isinstance(selector, dict):
        raise SelectorError("a label selector must be an object")
    requirements = []
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise SelectorError("matchLabels must be a map of strings")
    for key, value in sorted(match_labels.items()):
        if not isinstance(value, str):
            raise SelectorError(f"matchLabels[{key}] must be a string")
        requirements.append(_requirement(str(key), Operator.EQUALS, [value]))
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        if not isinstance(expr, dict):
            raise SelectorError(f"matchExpressions[{i}] must be an object")
        op = _EXPRESSION_OPERATORS.get(expr.get("operator"))
        if op is None:
            raise SelectorError(f"matchExpressions[{i}].operator: {expr.get('operator')!r} is not a valid operator")
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError(f"matchExpressions[{i}].values must be a list of strings")
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
            raise SelectorError(f"matchExpressions[{i}].values must be empty for {expr['operator']}")
        requirements.append(_requirement(str(expr.get("key", "")), op, values))
    return Selector(tuple(requirements))


def from_match_labels(labels: dict[str, str] | None) -> Selector:
    """A Service's or ReplicationController's plain `selector` map; an empty or missing map selects nothing
    (a Service without a selector gets no managed endpoints)."""
    if not labels:
        return NOTHING
    return from_label_selector({"matchLabels": labels})


def to_string(selector: Selector) -> str:
    """The string form Kubernetes prints (labels.Selector.String()): requirements sorted by key, set values
    sorted, `k=v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`."""
    parts = []
    for req in sorted(selector.requirements, key=lambda r: r.key):
        values = ",".join(sorted(req.values))
        if req.operator in (Operator.EQUALS, Operator.NOT_EQUALS):
            parts.append(f"{req.key}{req.operator.value}{values}")
        elif req.operator in (Operator.IN, Operator.NOT_IN):
            parts.append(f"{req.key} {req.operator.value} ({values})")
        elif req.operator is Operator.EXISTS:
            parts.append(req.key)
        else:
            parts.append(f"!{req.key}")
    return ",".join(parts)
