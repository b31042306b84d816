"""ResourceQuota counting and admission decisions (apiserver/quota.py), without a server."""

from __future__ import annotations

import pytest
from podnet.apiserver import quota
from podnet.apiserver.validation import Errors

from podnet.api.kinds import lookup

PODS, SERVICES, CONFIGMAPS = lookup("pods"), lookup("services"), lookup("configmaps")


def _quota(name: str, **hard: str) -> dict:
    return {"metadata": {"name": name, "namespace": "team-a"}, "spec": {"hard": hard}}


def _service(kind: str, ports: int = 1) -> dict:
    return {"spec": {"type": kind, "ports": [{"port": 80 + n} for n in range(ports)]}}


def test_what_objects_count_for():
    assert quota.uses(PODS, {"status": {"phase": "Running"}}) == {"pods": 1, "count/pods": 1}
    assert quota.uses(PODS, {"status": {"phase": "Succeeded"}}) == {}
    assert quota.uses(SERVICES, _service("LoadBalancer", 2)) == {
        "services": 1, "count/services": 1, "services.loadbalancers": 1, "services.nodeports": 2}
    assert quota.uses(SERVICES, _service("ClusterIP"))["services.nodeports"] == 0
    assert quota.uses(CONFIGMAPS, {}) == {"configmaps": 1, "count/configmaps": 1}
    assert quota.uses(lookup("deployments"), {}) == {"count/deployments.apps": 1}


def test_usage_and_refusal_in_kube_apiserver_words():
    objects = {"pods": [{"status": {"phase": "Running"}}] * 2 + [{"status": {"phase": "Failed"}}]}
    in_use = quota.used({"pods", "services"}, objects)
    assert in_use == {"pods": 2, "services": 0}
    quotas = [_quota("q", pods="2", services="10")]
    assert quota.refusal(quotas, {"pods": 1, "count/pods": 1}, in_use) == (
        "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2")
    assert quota.refusal(quotas, {"services": 1}, in_use) is None
    over_two = [_quota("lb", **{"services.loadbalancers": "0", "services.nodeports": "1"})]
    assert quota.refusal(over_two, quota.uses(SERVICES, _service("LoadBalancer", 2)), {}) == (
        "exceeded quota: lb, requested: services.loadbalancers=1,services.nodeports=2, "
        "used: services.loadbalancers=0,services.nodeports=0, limited: services.loadbalancers=0,services.nodeports=1")


def test_counts_and_status():
    assert [quota.parse_count(t) for t in ("0", "2", "1k", "1Ki", 5)] == [0, 2, 1000, 1024, 5]
    for bad in ("-1", "1.5", "1m", "x", True, None):
        with pytest.raises(ValueError):
            quota.parse_count(bad)
    assert [quota.format_count(n) for n in (0, 2, 1000, 1500, 2_000_000)] == ["0", "2", "1k", "1500", "2M"]
    assert quota.status_of(_quota("q", pods="2", secrets="1k"), {"pods": 1}) == {
        "hard": {"pods": "2", "secrets": "1k"}, "used": {"pods": "1", "secrets": "0"}}
    assert quota.kinds_to_count([_quota("q", pods="1", **{"count/deployments.apps": "1", "services.nodeports": "1"})]) == {
        "pods", "deployments", "services"}


def test_validation():
    errors = Errors()
    quota.validate_resource_quota(errors, _quota("q", pods="2", **{"requests.gpu": "1", "secrets": "-1"}), None)
    assert [(c.field, c.message) for c in errors.causes] == [
        ("spec.hard[requests.gpu]", 'Invalid value: "requests.gpu": must be a standard resource for quota'),
        ("spec.hard[secrets]", 'Invalid value: "-1": must be greater than or equal to 0')]


def test_an_update_counts_only_what_it_adds():
    assert quota.added(SERVICES, _service("LoadBalancer", 2), _service("ClusterIP")) == {
        "services.loadbalancers": 1, "services.nodeports": 2}
    assert quota.added(SERVICES, _service("ClusterIP"), _service("NodePort")) == {}
    assert quota.added(PODS, {}, None) == {"pods": 1, "count/pods": 1}
