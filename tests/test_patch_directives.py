"""Strategic merge patches as kubectl sends them (client-side apply, edit, patch), without a server:
the three-way patch kubectl computes from `last-applied-configuration` uses `$setElementOrder`,
`$patch: delete|replace`, `$retainKeys` and `$deleteFromPrimitiveList`."""

from __future__ import annotations

import copy

import pytest
from podnet.apiserver.patch import PatchError, strategic_merge_patch

LIVE = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d", "labels": {"app": "d", "tier": "x"}, "finalizers": ["a/b", "c/d"]},
    "spec": {
        "replicas": 2,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        "template": {"spec": {"containers": [
            {"name": "a", "image": "x:1", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81, "protocol": "TCP"}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "imagePullPolicy": "IfNotPresent"},
            {"name": "b", "image": "y:1"},
        ]}},
    },
}

# What kubectl 1.31 sends when the manifest drops finalizer a/b, env A and port 80, swaps the
# containers, switches to the Recreate strategy and drops the tier label (captured with -v=8).
KUBECTL_APPLY = {
    "metadata": {"$deleteFromPrimitiveList/finalizers": ["a/b"], "$setElementOrder/finalizers": ["c/d"], "labels": {"tier": None}},
    "spec": {
        "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
        "template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "B"}], "$setElementOrder/ports": [{"containerPort": 81}],
                "env": [{"$patch": "delete", "name": "A"}], "name": "a", "ports": [{"$patch": "delete", "containerPort": 80}],
            }],
        }},
    },
}


def test_kubectls_three_way_patch_applies_every_directive():
    original = copy.deepcopy(LIVE)
    patched = strategic_merge_patch(LIVE, KUBECTL_APPLY, "Deployment")
    assert LIVE == original
    assert patched["metadata"]["finalizers"] == ["c/d"]
    assert patched["metadata"]["labels"] == {"app": "d"}
    assert patched["spec"]["strategy"] == {"type": "Recreate"}  # $retainKeys drops rollingUpdate
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["b", "a"]
    assert containers[1] == {"name": "a", "image": "x:1", "ports": [{"containerPort": 81, "protocol": "TCP"}],
                             "env": [{"name": "B", "value": "2"}], "imagePullPolicy": "IfNotPresent"}


@pytest.mark.parametrize(
    "order, expected",
    [
        ([{"name": "b"}, {"name": "a"}], ["b", "side", "a"]),  # the server's own item keeps its place
        ([{"name": "a"}, {"name": "b"}], ["a", "side", "b"]),
        ([{"name": "b"}], ["a", "side", "b"]),  # only named items move, among their own places
    ],
)
def test_set_element_order_orders_the_named_items_in_their_places(order, expected):
    live = {"spec": {"containers": [{"name": "a"}, {"name": "side"}, {"name": "b"}]}}
    patched = strategic_merge_patch(live, {"spec": {"$setElementOrder/containers": order}}, "Pod")
    assert [c["name"] for c in patched["spec"]["containers"]] == expected


def test_set_element_order_puts_new_items_where_the_order_says():
    live = {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "new"}, {"name": "b"}],
                      "containers": [{"name": "new", "image": "n"}]}}
    assert [c["name"] for c in strategic_merge_patch(live, patch, "Pod")["spec"]["containers"]] == ["a", "new", "b"]


def test_replace_directive_in_a_map_replaces_it_whole():
    patched = strategic_merge_patch(LIVE, {"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}, "Deployment")
    assert patched["spec"]["strategy"] == {"type": "Recreate"}


def test_delete_directive_in_a_map_removes_the_map():
    assert "labels" not in strategic_merge_patch(LIVE, {"metadata": {"labels": {"$patch": "delete"}}}, "Deployment")["metadata"]


@pytest.mark.parametrize(
    "patch",
    [
        {"metadata": {"$setElementOrder/finalizers": "c/d"}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": "a/b"}},
        {"spec": {"strategy": {"$retainKeys": "type"}}},
    ],
)
def test_malformed_directives_are_errors(patch):
    with pytest.raises(PatchError):
        strategic_merge_patch(LIVE, patch, "Deployment")
