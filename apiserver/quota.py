"""ResourceQuota, pure: what an object uses of a namespace's quotas, what the namespace uses now, and the
decision kube-apiserver's ResourceQuota admission makes on a create.

Object counts only (no compute resources): `pods` (those not Succeeded or Failed), `services`,
`services.loadbalancers`, `services.nodeports` (one per nodePort of a NodePort or LoadBalancer Service),
`configmaps`, `secrets`, `resourcequotas`, and `count/<resource>[.<group>]` for every kind podnet serves.
An object over any quota is refused with kube-apiserver's words: `exceeded quota: q, requested: pods=1,
used: pods=2, limited: pods=2`, naming only the exceeded resources. The resourcequota controller keeps
each quota's status (hard as asked, used as counted) right, after deletes too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from podnet.api.kinds import KINDS, Kind

if TYPE_CHECKING:
    from podnet.apiserver.validation import Errors

# The standard object-count names and the kind each counts.
_LEGACY_COUNTS = {"pods": "pods", "services": "services", "configmaps": "configmaps", "secrets": "secrets",
                  "resourcequotas": "resourcequotas"}
_SERVICE_SUBSETS = ("services.loadbalancers", "services.nodeports")
_BY_COUNT_NAME = {f"count/{k.plural}{'.' + k.group if k.group else ''}": k for k in KINDS}
_QUANTITY = re.compile(r"^([0-9]+)(|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)$")
_FACTORS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def kind_counted(resource: str) -> str | None:
    """The plural of the kind a quota resource counts, or None for a name this quota does not know."""
    if resource in _LEGACY_COUNTS:
        return _LEGACY_COUNTS[resource]
    if resource in _SERVICE_SUBSETS:
        return "services"
    kind = _BY_COUNT_NAME.get(resource)
    return kind.plural if kind is not None else None


def parse_count(text: object) -> int:
    """A quantity that counts objects (`2`, `10`, `1k`); ValueError for anything else."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a whole, non-negative quantity")
    return int(match[1]) * _FACTORS[match[2]]


def format_count(value: int) -> str:
    """As Go's resource.Quantity prints a decimal count: 1000 is `1k`, 1500 stays `1500`."""
    for suffix in ("E", "P", "T", "G", "M", "k"):
        factor = _FACTORS[suffix]
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def _node_ports(service: dict) -> int:
    spec = service.get("spec") or {}
    if spec.get("type") not in ("NodePort", "LoadBalancer"):
        return 0
    return len(spec.get("ports") or [])


def uses(kind: Kind, obj: dict) -> dict[str, int]:
    """What one object of `kind` counts for, by quota resource name."""
    counts = {name: 1 for name, k in _BY_COUNT_NAME.items() if k is kind}
    if kind.plural in _LEGACY_COUNTS:
        counts[kind.plural] = 1
    if kind.kind == "Pod" and (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return {}
    if kind.kind == "Service":
        counts["services.loadbalancers"] = int((obj.get("spec") or {}).get("type") == "LoadBalancer")
        counts["services.nodeports"] = _node_ports(obj)
    return counts


def added(kind: Kind, obj: dict, old: dict | None) -> dict[str, int]:
    """What writing `obj` (over `old`, for an update) adds to the namespace's use, resource by resource."""
    before = uses(kind, old) if old is not None else {}
    return {resource: amount - before.get(resource, 0) for resource, amount in uses(kind, obj).items()
            if amount > before.get(resource, 0)}


def used(resources: Iterable[str], objects: Mapping[str, Iterable[dict]]) -> dict[str, int]:
    """What the namespace uses of each resource; `objects` holds the namespace's objects by kind plural."""
    wanted = set(resources)
    totals = dict.fromkeys(wanted, 0)
    for kind in KINDS:
        if kind.plural not in objects:
            continue
        for obj in objects[kind.plural]:
            for resource, amount in uses(kind, obj).items():
                if resource in wanted:
                    totals[resource] += amount
    return totals


def kinds_to_count(quotas: Iterable[dict]) -> set[str]:
    """The kinds (plurals) whose objects the quotas' resources count."""
    return {plural for quota in quotas for resource in hard_of(quota) if (plural := kind_counted(resource))}


def hard_of(quota: dict) -> dict[str, int]:
    """The quota's limits the API accepted (validation has refused any other)."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    limits = {}
    for resource, value in hard.items():
        try:
            limits[resource] = parse_count(value)
        except ValueError:
            continue
    return limits


def _pretty(values: Mapping[str, int]) -> str:
    return ",".join(f"{name}={format_count(value)}" for name, value in sorted(values.items()))


def refusal(quotas: Iterable[dict], requested: Mapping[str, int], in_use: Mapping[str, int]) -> str | None:
    """Why the request is over a quota (kube-apiserver's message), or None when every quota allows it.
    `in_use` is what the namespace uses now of every resource the quotas limit."""
    for quota in sorted(quotas, key=lambda q: (q.get("metadata") or {}).get("name", "")):
        hard = hard_of(quota)
        over = [r for r, amount in requested.items() if amount and r in hard and in_use.get(r, 0) + amount > hard[r]]
        if over:
            name = (quota.get("metadata") or {}).get("name", "")
            return (f"exceeded quota: {name}, requested: {_pretty({r: requested[r] for r in over})}, "
                    f"used: {_pretty({r: in_use.get(r, 0) for r in over})}, limited: {_pretty({r: hard[r] for r in over})}")
    return None


def status_of(quota: dict, in_use: Mapping[str, int]) -> dict:
    """The status the controller writes: the hard limits as asked, and what is used of each."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    return {"hard": dict(hard), "used": {resource: format_count(in_use.get(resource, 0)) for resource in hard}}


def recorded_use(quota: dict) -> dict[str, int]:
    """What the quota's status says is used (what the controller counted, plus what admission charged since)."""
    recorded = {}
    for resource, value in ((quota.get("status") or {}).get("used") or {}).items():
        try:
            recorded[resource] = parse_count(value)
        except ValueError:
            continue
    return recorded


def in_use(quotas: Iterable[dict], counted: Mapping[str, int]) -> dict[str, int]:
    """What the namespace uses, as admission must take it: the more of the objects counted now and each
    quota's recorded use, since an object another API server admitted may not be written yet, while its
    charge to the quota is."""
    totals = dict(counted)
    for quota in quotas:
        for resource, amount in recorded_use(quota).items():
            if resource in totals:
                totals[resource] = max(totals[resource], amount)
    return totals


def charged(quota: dict, requested: Mapping[str, int], use: Mapping[str, int]) -> dict:
    """The quota with the request charged to its status (kube's admission does the same, under the
    quota's resourceVersion), so that a concurrent admission elsewhere counts it."""
    hard = hard_of(quota)
    status = status_of(quota, {resource: use.get(resource, 0) + requested.get(resource, 0) for resource in hard})
    return {**quota, "status": status}


def validate_resource_quota(errors: Errors, quota: dict, limits: object) -> None:
    """spec.hard names known count resources with whole, non-negative quantities."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    for resource, value in hard.items():
        field = f"spec.hard[{resource}]"
        if kind_counted(resource) is None:
            errors.invalid(field, resource, "must be a standard resource for quota")
            continue
        try:
            parse_count(value)
        except ValueError:
            negative = isinstance(value, str | int) and str(value).startswith("-")
            errors.invalid(field, value, "must be greater than or equal to 0" if negative else "must be an integer")
