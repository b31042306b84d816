"""kube-apiserver's audit policy (`audit.k8s.io/v1` Policy, `--audit-policy-file`): which requests are
recorded, and how much of each.

A policy is a list of rules; the first rule that matches a request gives its level — `None` (not
recorded), `Metadata` (who, what, when, the answer's code), `Request` (also the request's body) or
`RequestResponse` (also the response's) — and the stages not to record: the policy's `omitStages` and the
rule's. A request that no rule matches is not recorded. A rule matches when each thing it names matches:
`users`, `userGroups` (any of the user's groups), `verbs`; for resource requests only, `namespaces` (`""`
is a cluster-scoped object) and `resources` (a group with resources: `pods`, `pods/log`, `*`,
`*/status`, `deployments/*`, optionally narrowed by `resourceNames`); for other paths only,
`nonResourceURLs` (exact, or a prefix ending in `*`). As k8s.io/apiserver/pkg/audit/policy/checker.go.

`parse_policy(text)` reads a file's YAML (or JSON), refusing what kube-apiserver refuses, each as a
PolicyError naming the field; `evaluate(policy, attributes)` is the decision. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

API_VERSIONS = ("audit.k8s.io/v1",)
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")


class PolicyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class GroupResources:
    group: str
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]
    omit_stages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attributes:
    """What the policy is asked about one request: the user (after impersonation) and the request's info."""

    user: str
    groups: tuple[str, ...]
    verb: str
    resource_request: bool
    namespace: str = ""
    group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    level: str
    omit_stages: frozenset[str]

    @property
    def recorded(self) -> bool:
        return self.level != "None"


NOT_RECORDED = Decision("None", frozenset())


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: must be a list of strings")
    return tuple(value)


def _stages(value: object, where: str) -> tuple[str, ...]:
    stages = _strings(value, where)
    for index, stage in enumerate(stages):
        if stage not in STAGES:
            raise PolicyError(f'{where}[{index}]: Unsupported value: "{stage}": supported values: '
                              + ", ".join(f'"{s}"' for s in STAGES))
    return stages


def _group_resources(value: object, where: str) -> tuple[GroupResources, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PolicyError(f"{where}: must be a list")
    parsed = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise PolicyError(f"{where}[{index}]: must be an object")
        group = entry.get("group", "")
        if not isinstance(group, str):
            raise PolicyError(f"{where}[{index}].group: must be a string")
        resources = _strings(entry.get("resources"), f"{where}[{index}].resources")
        names = _strings(entry.get("resourceNames"), f"{where}[{index}].resourceNames")
        for resource in resources:
            if resource.count("/") > 1:
                raise PolicyError(f'{where}[{index}].resources: Invalid value: "{resource}": '
                                  "resource and subresource only")
        parsed.append(GroupResources(group, resources, names))
    return tuple(parsed)


def _rule(entry: object, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where}: must be an object")
    level = entry.get("level")
    if level not in LEVELS:
        raise PolicyError(f'{where}.level: Unsupported value: "{level or ""}": supported values: '
                          + ", ".join(f'"{v}"' for v in LEVELS))
    rule = Rule(
        level=level,
        users=_strings(entry.get("users"), f"{where}.users"),
        user_groups=_strings(entry.get("userGroups"), f"{where}.userGroups"),
        verbs=_strings(entry.get("verbs"), f"{where}.verbs"),
        resources=_group_resources(entry.get("resources"), f"{where}.resources"),
        namespaces=_strings(entry.get("namespaces"), f"{where}.namespaces"),
        non_resource_urls=_strings(entry.get("nonResourceURLs"), f"{where}.nonResourceURLs"),
        omit_stages=_stages(entry.get("omitStages"), f"{where}.omitStages"),
    )
    if rule.non_resource_urls and (rule.resources or rule.namespaces):
        raise PolicyError(f"{where}.nonResourceURLs: Invalid value: rules cannot apply to both regular resources "
                          "and non-resource URLs")
    return rule


def parse_policy(text: str) -> Policy:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"not YAML: {exc}") from None
    if not isinstance(document, dict):
        raise PolicyError("not an audit Policy object")
    if document.get("kind") != "Policy" or document.get("apiVersion") not in API_VERSIONS:
        raise PolicyError(f"want kind Policy of apiVersion {API_VERSIONS[0]}, not {document.get('kind')} of "
                          f"{document.get('apiVersion')}")
    rules = document.get("rules")
    if not isinstance(rules, list) or not rules:
        raise PolicyError("loaded illegal policy with 0 rules")
    return Policy(tuple(_rule(entry, f"rules[{i}]") for i, entry in enumerate(rules)),
                  _stages(document.get("omitStages"), "omitStages"))


def _resource_matches(rule: Rule, request: Attributes) -> bool:
    if not request.resource_request:
        return False
    if rule.namespaces and request.namespace not in rule.namespaces:
        return False
    if not rule.resources:
        return True
    combined = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    for entry in rule.resources:
        if entry.group != request.group:
            continue
        if not entry.resources:
            return True
        if entry.resource_names and request.name not in entry.resource_names:
            continue
        for resource in entry.resources:
            if resource in (combined, "*"):
                return True
            if request.subresource and resource.startswith("*/") and resource[2:] == request.subresource:
                return True
            if resource.endswith("/*") and resource[:-2] == request.resource:
                return True
    return False


def _url_matches(urls: Sequence[str], path: str) -> bool:
    return any(url == path or (url.endswith("*") and path.startswith(url[:-1])) for url in urls)


def _matches(rule: Rule, request: Attributes) -> bool:
    if rule.users and request.user not in rule.users:
        return False
    if rule.user_groups and not set(rule.user_groups) & set(request.groups):
        return False
    if rule.verbs and request.verb not in rule.verbs:
        return False
    if rule.namespaces or rule.resources:
        return _resource_matches(rule, request)
    if rule.non_resource_urls:
        return not request.resource_request and _url_matches(rule.non_resource_urls, request.path)
    return True


def evaluate(policy: Policy, request: Attributes) -> Decision:
    for rule in policy.rules:
        if _matches(rule, request):
            return Decision(rule.level, frozenset(policy.omit_stages) | frozenset(rule.omit_stages))
    return NOT_RECORDED
