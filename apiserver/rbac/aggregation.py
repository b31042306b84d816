"""Cluster role aggregation, as kube-controller-manager's clusterrole-aggregation controller does it.

A ClusterRole with an `aggregationRule` has, as its rules, the rules of every other ClusterRole whose
labels one of its `clusterRoleSelectors` picks, in the order of the roles' names, each rule once. Pure:
`aggregated_rules(role, cluster_roles)` and `stale_aggregates(cluster_roles)` (the roles whose stored rules
differ from what aggregation gives, with the rules they should have).
"""

from __future__ import annotations

from collections.abc import Mapping

from podnet.api.selectors import SelectorError, from_label_selector


def aggregated_rules(role: dict, cluster_roles: Mapping[str, dict]) -> list[dict] | None:
    """The rules aggregation gives `role`, None when it has no aggregationRule."""
    aggregation = role.get("aggregationRule")
    if not isinstance(aggregation, dict):
        return None
    selectors = []
    for selector in aggregation.get("clusterRoleSelectors") or []:
        try:
            selectors.append(from_label_selector(selector))
        except SelectorError:
            continue
    own_name = (role.get("metadata") or {}).get("name")
    rules: list[dict] = []
    for name, other in sorted(cluster_roles.items()):
        labels = (other.get("metadata") or {}).get("labels") or {}
        if name == own_name or not any(s.matches(labels) for s in selectors):
            continue
        for rule in other.get("rules") or []:
            if rule not in rules:
                rules.append(rule)
    return rules


def stale_aggregates(cluster_roles: Mapping[str, dict]) -> dict[str, list[dict]]:
    stale = {}
    for name, role in cluster_roles.items():
        rules = aggregated_rules(role, cluster_roles)
        if rules is not None and rules != (role.get("rules") or []):
            stale[name] = rules
    return stale


def settle(cluster_roles: Mapping[str, dict]) -> dict[str, dict]:
    """The roles with every aggregate filled, aggregates of aggregates included (`admin` picks `edit`)."""
    settled = dict(cluster_roles)
    for _ in range(len(settled) + 1):
        stale = stale_aggregates(settled)
        if not stale:
            break
        for name, rules in stale.items():
            settled[name] = settled[name] | {"rules": rules}
    return settled
