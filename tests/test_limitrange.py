"""LimitRange defaulting and the LimitRanger's decision (apiserver/limitrange.py), without a server."""

from __future__ import annotations

from fractions import Fraction

import pytest
from podnet.apiserver import limitrange
from podnet.apiserver.validation import Errors


def _range(*items: dict) -> dict:
    return {"metadata": {"name": "limits"}, "spec": {"limits": list(items)}}


def _pod(*resources: dict) -> dict:
    return {"metadata": {"name": "web"},
            "spec": {"containers": [{"name": f"c{n}", "resources": r} for n, r in enumerate(resources)]}}


def test_quantities():
    cases = {"500m": Fraction(1, 2), "1": 1, "1.5": Fraction(3, 2), "128Mi": 128 * 2**20, "1G": 10**9,
             "1e3": 1000, "2k": 2000, ".5": Fraction(1, 2), 2: 2}
    for text, value in cases.items():
        assert limitrange.parse_quantity(text) == value, text
    for bad in ("", "1.2.3", "5 m", "abc", "1Kb", None):
        with pytest.raises(ValueError):
            limitrange.parse_quantity(bad)


def test_item_defaulting_as_the_api_does():
    item = limitrange.default_item({"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"}})
    assert item["default"] == {"cpu": "1"} and item["defaultRequest"] == {"cpu": "1", "memory": "64Mi"}
    assert limitrange.default_item({"type": "Pod", "max": {"cpu": "2"}}) == {"type": "Pod", "max": {"cpu": "2"}}


def test_defaults_fill_what_a_container_lacks_and_are_noted():
    ranges = [_range({"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}})]
    pod = _pod({}, {"limits": {"cpu": "200m"}})
    limitrange.apply_defaults(pod, ranges)
    first, second = (c["resources"] for c in pod["spec"]["containers"])
    assert first == {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}
    assert second == {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}
    assert pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu request for container c0; cpu limit for container c0; cpu request for container c1")
    assert limitrange.refusal(pod, ranges) is None


def test_refusals_in_kube_apiserver_words():
    container = [_range({"type": "Container", "max": {"cpu": "500m"}, "min": {"memory": "64Mi"}})]
    assert limitrange.refusal(_pod({"requests": {"memory": "128Mi"}, "limits": {"cpu": "1"}}), container) == (
        "maximum cpu usage per Container is 500m, but limit is 1")
    assert limitrange.refusal(_pod({"requests": {"memory": "1Mi"}, "limits": {"cpu": "1"}}), container) == (
        "[minimum memory usage per Container is 64Mi, but request is 1Mi, maximum cpu usage per Container is 500m, "
        "but limit is 1]")
    pod_max = [_range({"type": "Pod", "max": {"cpu": "1"}})]
    assert limitrange.refusal(_pod({"limits": {"cpu": "600m"}}, {"limits": {"cpu": "600m"}}), pod_max) == (
        "maximum cpu usage per Pod is 1, but limit is 1200m")
    ratio = [_range({"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}})]
    assert limitrange.refusal(_pod({"requests": {"cpu": "100m"}, "limits": {"cpu": "300m"}}), ratio) == (
        "cpu max limit to request ratio per Container is 2, but provided ratio is 3.000000")


def test_validation():
    errors = Errors()
    limitrange.validate_limit_range(errors, _range({"type": "Node"}, {"type": "Container", "min": {"cpu": "2"},
                                                                        "max": {"cpu": "1", "memory": "x"}}), None)
    assert [(c.field, c.message) for c in errors.causes] == [
        ("spec.limits[0].type", 'Unsupported value: "Node": supported values: "Container", "Pod", "PersistentVolumeClaim"'),
        ("spec.limits[1].max[memory]", 'Invalid value: "x": must be a quantity'),
        ("spec.limits[1].min[cpu]", 'Invalid value: "2": min value 2 is greater than max value 1')]
