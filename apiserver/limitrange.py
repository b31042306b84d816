"""LimitRange, pure: its defaulting, and what kube-apiserver's LimitRanger admission does to a new pod.

A `Container` item gives containers without requests or limits its `defaultRequest` and `default` (after
the API's own defaulting of the item: a missing default is the max, a missing default request the default,
else the min), recorded in the pod's `kubernetes.io/limit-ranger` annotation; then every container (`Container`
items) and the pod as a whole (`Pod` items: the sums) must keep within min, max and maxLimitRequestRatio.
A pod that does not is refused with kube-apiserver's words (`maximum cpu usage per Container is 500m, but
limit is 1`). Quantities are compared exactly (`parse_quantity`: Kubernetes' suffixes and exponents).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podnet.apiserver.validation import Errors

LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"
TYPES = ("Container", "Pod", "PersistentVolumeClaim")
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_SUFFIXES = {"Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
             "Pi": Fraction(2**50), "Ei": Fraction(2**60), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6),
             "m": Fraction(1, 1000), "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
             "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18)}
_BOUNDS = ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")


def parse_quantity(text: object) -> Fraction:
    """A Kubernetes quantity (`500m`, `1.5`, `128Mi`, `1e3`) as an exact number; ValueError otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return Fraction(str(text))
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"quantities must match the regular expression '{_QUANTITY.pattern}'")
    number, suffix = Fraction(match[1]), match[2] or ""
    if suffix[:1] in ("e", "E"):
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES.get(suffix, Fraction(1))


def default_item(item: dict) -> dict:
    """The API's defaulting of a Container item (SetDefaults_LimitRangeItem)."""
    if item.get("type") != "Container":
        return item
    default = {**(item.get("max") or {}), **(item.get("default") or {})}
    request = {**(item.get("min") or {}), **default, **(item.get("defaultRequest") or {})}
    return {**item, **({"default": default} if default else {}), **({"defaultRequest": request} if request else {})}


def default_limit_range(limit_range: dict) -> None:
    spec = limit_range.get("spec") or {}
    if isinstance(spec.get("limits"), list):
        spec["limits"] = [default_item(item) if isinstance(item, dict) else item for item in spec["limits"]]


def validate_limit_range(errors: Errors, limit_range: dict, limits: object) -> None:
    for index, item in enumerate((limit_range.get("spec") or {}).get("limits") or []):
        field = f"spec.limits[{index}]"
        if item.get("type") not in TYPES:
            errors.not_supported(f"{field}.type", item.get("type"), TYPES)
        for bound in _BOUNDS:
            for resource, value in (item.get(bound) or {}).items():
                try:
                    if parse_quantity(value) < 0:
                        errors.invalid(f"{field}.{bound}[{resource}]", value, "must be greater than or equal to 0")
                except ValueError:
                    errors.invalid(f"{field}.{bound}[{resource}]", value, "must be a quantity")
        for resource, low in (item.get("min") or {}).items():
            high = (item.get("max") or {}).get(resource)
            if high is not None and _safe(low) > _safe(high):
                errors.invalid(f"{field}.min[{resource}]", low, f"min value {low} is greater than max value {high}")


def _safe(value: object) -> Fraction:
    try:
        return parse_quantity(value)
    except ValueError:
        return Fraction(0)


def apply_defaults(pod: dict, limit_ranges: Iterable[dict]) -> None:
    """Gives the pod's containers the Container items' default requests and limits they lack, as the
    LimitRanger does before it checks, and notes what it set."""
    noted: list[str] = []
    for limit_range in limit_ranges:
        for item in (limit_range.get("spec") or {}).get("limits") or []:
            if item.get("type") != "Container":
                continue
            item = default_item(item)
            for container in (pod.get("spec") or {}).get("containers") or []:
                resources = container.setdefault("resources", {})
                for part, defaults, word in (("requests", item.get("defaultRequest"), "request"),
                                             ("limits", item.get("default"), "limit")):
                    for resource, value in (defaults or {}).items():
                        current = resources.setdefault(part, {})
                        if resource not in current:
                            current[resource] = value
                            noted.append(f"{resource} {word} for container {container.get('name')}")
    if noted:
        annotations = pod.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[LIMIT_RANGER_ANNOTATION] = "LimitRanger plugin set: " + "; ".join(noted)


def _check(kind: str, item: dict, requests: dict, limits: dict) -> list[str]:
    problems = []
    for resource, enforced in (item.get("min") or {}).items():
        low = parse_quantity(enforced)
        if resource not in requests:
            problems.append(f"minimum {resource} usage per {kind} is {enforced}.  No request is specified")
        elif parse_quantity(requests[resource]) < low:
            problems.append(f"minimum {resource} usage per {kind} is {enforced}, but request is {requests[resource]}")
        elif resource in limits and parse_quantity(limits[resource]) < low:
            problems.append(f"minimum {resource} usage per {kind} is {enforced}, but limit is {limits[resource]}")
    for resource, enforced in (item.get("max") or {}).items():
        high = parse_quantity(enforced)
        if resource not in limits:
            problems.append(f"maximum {resource} usage per {kind} is {enforced}.  No limit is specified")
        elif parse_quantity(limits[resource]) > high:
            problems.append(f"maximum {resource} usage per {kind} is {enforced}, but limit is {limits[resource]}")
        elif resource in requests and parse_quantity(requests[resource]) > high:
            problems.append(f"maximum {resource} usage per {kind} is {enforced}, but request is {requests[resource]}")
    for resource, enforced in (item.get("maxLimitRequestRatio") or {}).items():
        request = parse_quantity(requests[resource]) if resource in requests else Fraction(0)
        limit = parse_quantity(limits[resource]) if resource in limits else Fraction(0)
        if not request:
            problems.append(f"{resource} max limit to request ratio per {kind} is {enforced}, but no request is "
                            "specified or request is 0")
        elif not limit:
            problems.append(f"{resource} max limit to request ratio per {kind} is {enforced}, but no limit is "
                            "specified or limit is 0")
        elif limit / request > parse_quantity(enforced):
            problems.append(f"{resource} max limit to request ratio per {kind} is {enforced}, but provided ratio is "
                            f"{float(limit / request):f}")
    return problems


def _sum(containers: list[dict], part: str) -> dict[str, str]:
    """The pod's total of each resource its containers name (what a Pod item's bounds judge)."""
    totals: dict[str, Fraction] = {}
    for container in containers:
        for resource, value in ((container.get("resources") or {}).get(part) or {}).items():
            totals[resource] = totals.get(resource, Fraction(0)) + parse_quantity(value)
    return {resource: _show(total) for resource, total in totals.items()}


def _show(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    milli = value * 1000
    return f"{milli.numerator // milli.denominator}m" if milli.denominator == 1 else str(float(value))


def refusal(pod: dict, limit_ranges: Iterable[dict]) -> str | None:
    """Why the (defaulted) pod is outside a LimitRange, in kube-apiserver's words, or None."""
    containers = (pod.get("spec") or {}).get("containers") or []
    problems: list[str] = []
    for limit_range in limit_ranges:
        for item in (limit_range.get("spec") or {}).get("limits") or []:
            if item.get("type") == "Container":
                for container in containers:
                    resources = container.get("resources") or {}
                    problems += _check("Container", item, resources.get("requests") or {}, resources.get("limits") or {})
            elif item.get("type") == "Pod":
                problems += _check("Pod", item, _sum(containers, "requests"), _sum(containers, "limits"))
    if not problems:
        return None
    return problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
