"""managedFields on writes and server-side apply's answers (apiserver/managedfields.py), without a server."""

from __future__ import annotations

import copy

import pytest
from podnet.apiserver.defaults import apply_defaults
from podnet.apiserver.managedfields import manager_name, record_update, server_side_apply
from podnet.apiserver.status import ApiError

from podnet.api.kinds import lookup

DEPLOYMENTS = lookup("deployments")
PODS = lookup("pods")


def pod(**labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "labels": dict(labels)},
            "spec": {"containers": [{"name": "c", "image": "i:1"}]}}


def created(manager: str = "kubectl-run") -> dict:
    """A pod as the server stores it after its create: defaulted, with its creator's entry."""
    obj = pod(app="a")
    record_update(PODS, None, obj, manager, "T1")
    apply_defaults("Pod", obj)
    return obj


def managers(obj: dict) -> list[tuple[str, str]]:
    return [(e["manager"], e["operation"]) for e in obj["metadata"].get("managedFields", [])]


@pytest.mark.parametrize(
    "field_manager, agent, expected",
    [
        (None, "kubectl-edit/v1.31.0 (linux/amd64) kubernetes/abc", "kubectl-edit"),
        ("", "kube-controller-manager/v1.31.0", "kube-controller-manager"),
        ("mine", "kubectl/v1.31.0", "mine"),
        (None, None, "unknown"),
    ],
)
def test_the_manager_is_the_field_manager_or_the_user_agents_first_word(field_manager, agent, expected):
    assert manager_name(field_manager, agent, "Update") == expected


@pytest.mark.parametrize(
    "field_manager, applying, message",
    [
        (None, True, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'),
        ("x" * 129, False, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be more than 128 bytes'),
        ("a\nb", False, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Invalid value: must only contain printable characters'),
    ],
)
def test_a_bad_field_manager_is_422_in_kube_apiservers_words(field_manager, applying, message):
    with pytest.raises(ApiError) as raised:
        manager_name(field_manager, "kubectl/v1.31.0", "Patch", applying=applying)
    assert (raised.value.code, raised.value.status["message"]) == (422, message)


def test_a_write_adds_its_writers_entry_and_keeps_the_others():
    live = created()
    labeled = copy.deepcopy(live)
    labeled["metadata"]["labels"]["tier"] = "x"
    record_update(PODS, live, labeled, "kubectl-label", "T2")
    assert managers(labeled) == [("kubectl-run", "Update"), ("kubectl-label", "Update")]
    without = copy.deepcopy(labeled)
    del without["metadata"]["managedFields"]  # a client that never sends managedFields keeps them
    record_update(PODS, labeled, without, "kubectl-replace", "T3")
    assert managers(without) == managers(labeled)


def test_managed_fields_a_client_sends_replace_the_stored_ones_and_one_empty_entry_clears_them():
    live = created()
    rewritten = copy.deepcopy(live)
    rewritten["metadata"]["managedFields"][0]["manager"] = "renamed"
    record_update(PODS, live, rewritten, "kubectl-patch", "T2")
    assert managers(rewritten) == [("renamed", "Update")]
    cleared = copy.deepcopy(live)
    cleared["metadata"]["managedFields"] = [{}]
    record_update(PODS, live, cleared, "kubectl-patch", "T2")
    assert "managedFields" not in cleared["metadata"]


@pytest.mark.parametrize("sent", [[{"manager": "x", "operation": "Sideways"}], "nonsense", [{"fieldsV1": {"x:y": {}}, "operation": "Update"}]])
def test_managed_fields_that_cannot_be_read_are_ignored_for_the_stored_ones(sent):
    live = created()
    new = copy.deepcopy(live)
    new["metadata"]["managedFields"] = sent
    record_update(PODS, live, new, "kubectl-patch", "T2")
    assert new["metadata"]["managedFields"] == live["metadata"]["managedFields"]


def test_a_subresource_write_never_takes_managed_fields_from_the_request():
    live = created()
    new = copy.deepcopy(live) | {"status": {"phase": "Running"}}
    new["metadata"]["managedFields"] = [{}]
    record_update(PODS, live, new, "kubelet", "T2", "status")
    assert managers(new) == [("kubectl-run", "Update"), ("kubelet", "Update")]
    assert new["metadata"]["managedFields"][1]["subresource"] == "status"


def config(**spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i:1"}]} | spec}


def test_an_apply_conflict_is_a_409_status_with_field_manager_causes():
    live = created()
    with pytest.raises(ApiError) as raised:
        server_side_apply(PODS, live, config(containers=[{"name": "c", "image": "i:2"}]), "p", "me", "T2", force=False)
    body = raised.value.status
    assert (body["code"], body["reason"]) == (409, "Conflict")
    assert body["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-run" using v1: .spec.containers[name="c"].image'
    assert body["details"] == {"causes": [
        {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl-run" using v1', "field": '.spec.containers[name="c"].image'}
    ]}


def test_a_conflict_with_another_applier_names_no_version():
    first = server_side_apply(PODS, None, config(), "p", "one", "T1", force=False)
    with pytest.raises(ApiError) as raised:
        server_side_apply(PODS, first, config(containers=[{"name": "c", "image": "i:2"}]), "p", "two", "T2", force=False)
    assert raised.value.status["message"] == 'Apply failed with 1 conflict: conflict with "one": .spec.containers[name="c"].image'


@pytest.mark.parametrize(
    "body, code",
    [
        ([], 400),
        ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "p"}}, 400),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other"}}, 400),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "managedFields": [{"manager": "x"}]}}, 422),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "999"}}, 409),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"image": "no-name"}]}}, 400),
    ],
)
def test_an_apply_configuration_that_cannot_apply_is_refused(body, code):
    live = created()
    live["metadata"]["resourceVersion"] = "5"
    with pytest.raises(ApiError) as raised:
        server_side_apply(PODS, live, body, "p", "me", "T2", force=False)
    assert raised.value.code == code


def test_an_apply_configuration_is_held_to_the_kinds_schema_whatever_the_field_validation():
    body = config() | {"spec": {"containers": [{"name": "c", "image": "i:1", "bogus": 1}], "foo": 1}}
    with pytest.raises(ApiError) as raised:
        server_side_apply(PODS, None, body, "p", "me", "T1", force=False, namespace="ns")
    assert (raised.value.code, raised.value.status["message"]) == (400, (
        "failed to create typed patch object (ns/p; /v1, Kind=Pod): errors:\n"
        "  .spec.containers[0].bogus: field not declared in schema\n"
        "  .spec.foo: field not declared in schema"))
