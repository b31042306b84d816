"""What Cilium's agent checks in a CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy beyond its CRD's
schema, judged at the API server so that a bad rule is refused with a 422 instead of being reported on
the policy later: the regular expressions of HTTP rules (RE2), a `method` matching no HTTP method, label
selectors, ports, and layer 7 rules on deny rules. Pure.

The kinds are served from Cilium's CustomResourceDefinitions (deploy/crds/), as in a cluster running
Cilium; customresources.rules calls `validate` for objects of those kinds after their schema passed.
"""

from __future__ import annotations

from podnet.apiserver.status import Cause
from podnet.apiserver.validation import Errors

from podnet.api.ciliumpolicy import (
    CLUSTERWIDE_KIND,
    GROUP_VERSION,
    NAMESPACED_KIND,
    NotModelled,
    parse_cilium_policy,
)
from podnet.api.httprules import RuleError

GROUP = GROUP_VERSION.split("/")[0]
KINDS = frozenset({(GROUP, NAMESPACED_KIND), (GROUP, CLUSTERWIDE_KIND)})


def validate(group: str, kind: str, obj: dict) -> list[Cause]:
    """The field error of a Cilium policy Cilium would refuse; nothing for other kinds."""
    if (group, kind) not in KINDS:
        return []
    errors = Errors()
    try:
        parse_cilium_policy({**obj, "kind": kind})
    except RuleError as e:
        errors.invalid(e.field, e.value, e.detail)
    except NotModelled:
        pass  # valid for Cilium; the node agents report that they do not enforce it
    return errors.causes
