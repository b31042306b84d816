"""Field ownership and server-side apply (apiserver/apply.py), without a server."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from podnet.apiserver.apply import (
    APPLY,
    UPDATE,
    ApplyConflicts,
    FieldError,
    ManagedEntry,
    apply,
    compare,
    decode_fields,
    encode_fields,
    field_set,
    merge,
    path_string,
    read_managed,
    track_update,
    write_managed,
)
from podnet.apiserver.defaults import apply_defaults
from podnet.apiserver.fieldschema import field_schema

DEPLOYMENT = field_schema("Deployment")
SERVICE = field_schema("Service")


def deployment(replicas: int = 2, env: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict:
    container: dict = {"name": "web", "image": "agnhost:2.47", "ports": [{"containerPort": 8080}]}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels if labels is not None else {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
        },
    }


def stored(obj: dict) -> dict:
    """The object as the server keeps it: defaulted, with its server-set metadata."""
    obj = copy.deepcopy(obj)
    apply_defaults(obj["kind"], obj)
    obj["metadata"] |= {"namespace": "default", "uid": "u-1", "resourceVersion": "7", "creationTimestamp": "T0"}
    return obj


def paths(entry: ManagedEntry) -> set[str]:
    return {path_string(p) for p in entry.fields}


def created_by(manager: str, obj: dict) -> tuple[dict, list[ManagedEntry]]:
    live = stored(obj)
    return live, track_update([], {}, live, manager, "apps/v1", "T1", DEPLOYMENT)


# --- field sets and their spelling --------------------------------------------------------------------


def test_an_applied_configuration_sets_its_leaves_and_its_list_items():
    got = {path_string(p) for p in field_set(deployment(env={"A": "1"}), DEPLOYMENT)}
    container = '.spec.template.spec.containers[name="web"]'
    assert got == {
        ".apiVersion", ".kind", ".metadata.name", ".metadata.labels.app",
        ".spec.replicas", ".spec.selector",  # a label selector is atomic: owned whole
        ".spec.template.metadata.labels.app",
        container, f"{container}.name", f"{container}.image",
        f'{container}.ports[containerPort=8080,protocol="TCP"]',  # the key's protocol is defaulted
        f'{container}.ports[containerPort=8080,protocol="TCP"].containerPort',
        f'{container}.env[name="A"]', f'{container}.env[name="A"].name', f'{container}.env[name="A"].value',
    }


def test_fields_v1_marks_members_with_children_by_a_dot_and_orders_fields_first():
    fields = {("f:metadata", "f:labels"), ("f:metadata", "f:labels", "f:app"), ("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}'),
              ("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}', "f:port"), ("f:spec", "f:clusterIPs", 'v:"10.96.0.9"')}
    encoded = encode_fields(fields)
    assert encoded == {
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {"f:clusterIPs": {'v:"10.96.0.9"': {}}, "f:ports": {'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:port": {}}}},
    }
    assert list(encoded["f:spec"]) == ["f:clusterIPs", "f:ports"]
    assert decode_fields(encoded) == fields


@pytest.mark.parametrize("fields", [[], {"x:nope": {}}, {"f:a": "not a map"}])
def test_malformed_fields_v1_is_refused(fields):
    with pytest.raises(FieldError):
        decode_fields(fields)


def test_a_set_item_and_a_keyed_item_print_as_kube_apiserver_prints_them():
    assert path_string(("f:metadata", "f:finalizers", 'v:"kubernetes"')) == '.metadata.finalizers[="kubernetes"]'
    assert path_string(("f:spec", "f:ports", 'k:{"port":53,"protocol":"UDP"}', "f:name")) == '.spec.ports[port=53,protocol="UDP"].name'


@pytest.mark.parametrize(
    "ports, error",
    [([{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}], "duplicate entries"), ([{"name": "x"}], "no key field")],
)
def test_a_keyed_list_needs_distinct_keys(ports, error):
    config = deployment()
    config["spec"]["template"]["spec"]["containers"][0]["ports"] = ports
    with pytest.raises(FieldError, match=error):
        field_set(config, DEPLOYMENT)


# --- Update: what a writer owns ------------------------------------------------------------------------


def test_a_create_owns_everything_it_wrote_and_the_defaults_but_no_server_field():
    live, entries = created_by("kubectl-create", deployment())
    (entry,) = entries
    assert (entry.manager, entry.operation, entry.api_version, entry.time) == ("kubectl-create", UPDATE, "apps/v1", "T1")
    owned = paths(entry)
    assert {".spec.replicas", ".spec.revisionHistoryLimit", ".spec.strategy.rollingUpdate.maxSurge",
            '.spec.template.spec.containers[name="web"].imagePullPolicy', ".metadata.labels", ".metadata.labels.app"} <= owned
    assert not {".metadata.name", ".metadata.namespace", ".metadata.uid", ".metadata.resourceVersion",
                ".metadata.creationTimestamp", ".apiVersion", ".kind"} & owned
    fields = write_managed(entries)[0]["fieldsV1"]
    # Containers the empty object has are not owned themselves; those the write added are (".").
    assert "." not in fields["f:spec"] and "." not in fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert "." in fields["f:spec"]["f:strategy"]["f:rollingUpdate"]
    assert "." in fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']


def test_an_update_takes_the_fields_it_changes_from_their_owner():
    live, entries = created_by("kubectl-create", deployment())
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    entries = track_update(entries, live, scaled, "kubectl-scale", "apps/v1", "T2", DEPLOYMENT)
    by_manager = {e.manager: e for e in entries}
    assert paths(by_manager["kubectl-scale"]) == {".spec.replicas"}
    assert ".spec.replicas" not in paths(by_manager["kubectl-create"])


def test_an_update_that_changes_nothing_leaves_managed_fields_alone():
    live, entries = created_by("kubectl-create", deployment())
    assert track_update(entries, live, copy.deepcopy(live), "kubectl-edit", "apps/v1", "T9", DEPLOYMENT) == entries


def test_a_removed_field_leaves_every_owner():
    live, entries = created_by("kubectl-create", deployment(labels={"app": "web", "tier": "front"}))
    relabeled = copy.deepcopy(live)
    del relabeled["metadata"]["labels"]["tier"]
    entries = track_update(entries, live, relabeled, "kubectl-label", "apps/v1", "T2", DEPLOYMENT)
    assert [e.manager for e in entries] == ["kubectl-create"]
    assert ".metadata.labels.tier" not in paths(entries[0])


def test_the_status_subresource_owns_status_and_the_main_resource_never_does():
    live, entries = created_by("kubectl-create", deployment())
    with_status = copy.deepcopy(live) | {"status": {"replicas": 2}}
    entries = track_update(entries, live, with_status, "kube-controller-manager", "apps/v1", "T2", DEPLOYMENT, "status")
    controller = next(e for e in entries if e.manager == "kube-controller-manager")
    assert controller.subresource == "status" and paths(controller) == {".status.replicas"}
    assert write_managed(entries)[1]["subresource"] == "status"


def test_managed_fields_read_back_what_was_written():
    live, entries = created_by("kubectl-create", deployment())
    assert read_managed({"metadata": {"managedFields": write_managed(entries)}}) == entries


# --- Apply --------------------------------------------------------------------------------------------


def test_apply_creates_and_owns_exactly_what_it_applied():
    result = apply(None, deployment(), [], "kubectl", "apps/v1", "T1", DEPLOYMENT, force=False)
    (entry,) = result.managed
    assert (entry.manager, entry.operation) == ("kubectl", APPLY)
    assert paths(entry) == {p for p in (path_string(p) for p in field_set(deployment(), DEPLOYMENT))
                            if p not in (".apiVersion", ".kind", ".metadata.name")}
    assert result.obj["spec"]["replicas"] == 2


def test_apply_changing_a_field_another_manager_owns_is_a_conflict_kube_apiserver_words():
    live, entries = created_by("kubectl-client-side-apply", deployment(replicas=2))
    with pytest.raises(ApplyConflicts) as raised:
        apply(live, deployment(replicas=3), entries, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=False)
    assert str(raised.value) == 'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'
    (conflict,) = raised.value.conflicts
    assert conflict.owner.manager == "kubectl-client-side-apply" and path_string(conflict.path) == ".spec.replicas"


def test_several_conflicts_are_listed_by_manager():
    live, entries = created_by("kubectl-create", deployment(replicas=2))
    changed = deployment(replicas=3)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "agnhost:2.48"
    with pytest.raises(ApplyConflicts) as raised:
        apply(live, changed, entries, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=False)
    assert str(raised.value) == (
        'Apply failed with 2 conflicts: conflicts with "kubectl-create" using apps/v1:\n'
        "- .spec.replicas\n"
        '- .spec.template.spec.containers[name="web"].image'
    )


def test_forced_apply_takes_the_conflicting_fields():
    live, entries = created_by("kubectl-client-side-apply", deployment(replicas=2))
    result = apply(live, deployment(replicas=3), entries, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=True)
    by_manager = {e.manager: e for e in result.managed}
    assert ".spec.replicas" in paths(by_manager["kubectl"])
    assert ".spec.replicas" not in paths(by_manager["kubectl-client-side-apply"])
    assert result.obj["spec"]["replicas"] == 3


def test_applying_the_same_value_shares_ownership_without_conflict():
    live, entries = created_by("kubectl-client-side-apply", deployment(replicas=2))
    result = apply(live, deployment(replicas=2), entries, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=False)
    owners = [e.manager for e in result.managed if any(path_string(p) == ".spec.replicas" for p in e.fields)]
    assert sorted(owners) == ["kubectl", "kubectl-client-side-apply"]
    assert result.obj == live


def test_applying_again_changes_nothing_not_even_the_time():
    first = apply(None, deployment(), [], "kubectl", "apps/v1", "T1", DEPLOYMENT, force=False)
    again = apply(first.obj, deployment(), first.managed, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=False)
    assert again.obj == first.obj and again.managed == first.managed


def test_a_field_the_applier_no_longer_applies_is_removed():
    first = apply(None, deployment(env={"A": "1", "B": "2"}, labels={"app": "web", "tier": "x"}), [], "kubectl", "apps/v1", "T1",
                  DEPLOYMENT, force=False)
    second = apply(first.obj, deployment(env={"B": "2"}), first.managed, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=False)
    assert second.obj["metadata"]["labels"] == {"app": "web"}
    assert second.obj["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    assert not any("tier" in p or 'name="A"' in p for p in paths(second.managed[0]))


def test_a_field_another_manager_also_owns_stays_when_the_applier_drops_it():
    first = apply(None, deployment(labels={"app": "web", "tier": "x"}), [], "kubectl", "apps/v1", "T1", DEPLOYMENT, force=False)
    relabeled = copy.deepcopy(first.obj)
    relabeled["metadata"]["labels"]["tier"] = "y"
    entries = track_update(first.managed, first.obj, relabeled, "kubectl-label", "apps/v1", "T2", DEPLOYMENT)
    second = apply(relabeled, deployment(), entries, "kubectl", "apps/v1", "T3", DEPLOYMENT, force=False)
    assert second.obj["metadata"]["labels"] == {"app": "web", "tier": "y"}


def test_apply_merges_keyed_lists_item_by_item_and_keeps_the_live_items():
    live, entries = created_by("kubectl-create", deployment())
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    config = deployment()
    config["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]
    merged = apply(live, config, entries, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=False).obj
    containers = merged["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "sidecar"]
    assert containers[0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}]
    assert containers[0]["imagePullPolicy"] == "IfNotPresent"  # the live object's defaults stay


def test_an_atomic_selector_is_replaced_whole():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"app": "a", "tier": "b"}}}
    merged = apply(service, service | {"spec": {"selector": {"app": "c"}}}, [], "m", "v1", "T", SERVICE, force=False).obj
    assert merged["spec"]["selector"] == {"app": "c"}


def test_compare_reports_added_modified_and_removed_fields():
    before = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}}
    after = {"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"replicas": 2}}
    result = compare(before, after, DEPLOYMENT)
    assert {path_string(p) for p in result.added} == {".metadata.labels.c"}
    assert {path_string(p) for p in result.modified} == {".spec.replicas"}
    assert {path_string(p) for p in result.removed} == {".metadata.labels.b"}


def test_entries_are_listed_apply_first_then_by_time():
    entries = [ManagedEntry("b", UPDATE, "v1", "T1", frozenset({("f:x",)})), ManagedEntry("a", APPLY, "v1", "T3", frozenset({("f:y",)})),
               ManagedEntry("c", UPDATE, "v1", "T0", frozenset({("f:z",)}))]
    assert [e["manager"] for e in write_managed(entries)] == ["a", "c", "b"]


def test_an_applied_null_empties_the_field_and_owns_it():
    live, entries = created_by("kubectl-create", deployment(labels={"app": "web", "tier": "x"}))
    config = deployment()
    config["metadata"]["labels"] = {"app": "web", "tier": None}
    with pytest.raises(ApplyConflicts, match=r"conflict with \"kubectl-create\" using apps/v1: .metadata.labels.tier"):
        apply(live, config, entries, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=False)
    result = apply(live, config, entries, "kubectl", "apps/v1", "T2", DEPLOYMENT, force=True)
    assert result.obj["metadata"]["labels"] == {"app": "web"}
    assert ".metadata.labels.tier" in paths(next(e for e in result.managed if e.manager == "kubectl"))


# --- the schema, from Kubernetes' OpenAPI definitions ---------------------------------------------------


@pytest.mark.parametrize(
    "kind, path, keys",
    [
        ("Pod", "spec.containers", ("name",)),
        ("Pod", "spec.containers.ports", ("containerPort", "protocol")),
        ("Deployment", "spec.template.spec.containers.env", ("name",)),
        ("Deployment", "spec.template.spec.topologySpreadConstraints", ("topologyKey", "whenUnsatisfiable")),
        ("Service", "spec.ports", ("port", "protocol")),
        ("Node", "status.conditions", ("type",)),
        ("Pod", "spec.tolerations", None),  # atomic
        ("Pod", "spec.containers.args", None),
    ],
)
def test_keyed_lists_are_the_definitions_list_maps(kind, path, keys):
    assert field_schema(kind).keys_of(path) == keys


def test_sets_and_atomic_maps_are_the_definitions():
    assert field_schema("Pod").is_set("metadata.finalizers") and field_schema("Node").is_set("spec.podCIDRs")
    assert not field_schema("Service").is_set("spec.clusterIPs")  # an atomic list
    assert field_schema("Deployment").is_atomic("spec.selector") and field_schema("Service").is_atomic("spec.selector")
    assert field_schema("NetworkPolicy").is_atomic("spec.podSelector")
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u-9"}
    owned = {path_string(p) for p in field_set({"metadata": {"ownerReferences": [owner]}}, field_schema("Pod"))}
    assert owned == {'.metadata.ownerReferences[uid="u-9"]'}  # an owner reference is owned whole


@given(st.lists(st.sampled_from("abcdefg"), unique=True), st.lists(st.sampled_from("abcdefg"), unique=True))
def test_merging_keyed_lists_keeps_every_item_once_in_the_configurations_order(live_names, config_names):
    live = {"spec": {"containers": [{"name": n, "image": "live"} for n in live_names]}}
    config = {"spec": {"containers": [{"name": n, "image": "applied"} for n in config_names]}}
    merged = [(c["name"], c["image"]) for c in merge(live, config, field_schema("Pod"))["spec"]["containers"]]
    assert sorted(n for n, _ in merged) == sorted(set(live_names) | set(config_names))
    assert [n for n, image in merged if image == "applied"] == config_names
    assert [n for n, _ in merged if n not in config_names] == [n for n in live_names if n not in config_names]


def test_past_ten_update_managers_the_oldest_merge_into_ancient_changes():
    live, entries = created_by("m00", deployment())
    entries = [dataclasses.replace(e, time="T00") for e in entries]
    for number in range(1, 12):
        relabeled = copy.deepcopy(live)
        relabeled["metadata"]["labels"][f"l{number}"] = "x"
        entries = track_update(entries, live, relabeled, f"m{number:02}", "apps/v1", f"T{number:02}", DEPLOYMENT)
        live = relabeled
    updaters = [e for e in entries if e.operation == UPDATE]
    assert len(updaters) == 10
    ancient = next(e for e in entries if e.manager == "ancient-changes")
    # The three oldest (m00, m01, m02) were merged; the entry has the newest time of them.
    assert {e.manager for e in updaters} == {"ancient-changes", *(f"m{n:02}" for n in range(3, 12))}
    assert ancient.time == "T02" and {".metadata.labels.l1", ".metadata.labels.l2", ".spec.replicas"} <= paths(ancient)
