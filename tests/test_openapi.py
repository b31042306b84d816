"""The schema side of one definition per kind, without a server: decoding bodies as kube-apiserver
decodes them, and the OpenAPI documents kubectl reads."""

from __future__ import annotations

import json

import pytest

from podnet.api.kinds import KINDS
from podnet.api.openapi import definitions, documents, field_description, structure

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
POD = "io.k8s.api.core.v1.Pod"


@pytest.mark.parametrize(
    ("body", "definition", "problems", "type_error"),
    [
        ('{"spec":{"replicas":2}}', DEPLOYMENT, [], None),
        ('{"spec":{"foo":1,"replicas":2,"replicas":3}}', DEPLOYMENT,
         ['unknown field "spec.foo"', 'duplicate field "spec.replicas"'], None),
        ('{"metadata":{"name":"a","name":"b","bogus":1},"spec":{"containers":[{"name":"c","imagee":"x"}]}}', POD,
         ['duplicate field "metadata.name"', 'unknown field "metadata.bogus"',
          'unknown field "spec.containers[0].imagee"'], None),
        ('{"spec":{"containers":[{"name":"c","ports":[{"containerPort":"80"}]}]}}', POD, [],
         "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32"),
        ('{"spec":"x"}', POD, [], "json: cannot unmarshal string into Go struct field Pod.spec of type v1.PodSpec"),
        ('{"spec":{"containers":["x"]}}', POD, [],
         "json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type v1.Container"),
        ('{"metadata":{"labels":{"a":1}}}', POD, [],
         "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"),
        ('{"spec":{"replicas":1.5}}', DEPLOYMENT, [],
         "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.replicas of type int32"),
        ('{"spec":{"paused":"yes"}}', DEPLOYMENT, [],
         "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.paused of type bool"),
        # Quantities and int-or-strings take either form; free-form objects and nulls take anything.
        ('{"spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":1,"memory":"1Gi"}},'
         '"livenessProbe":{"httpGet":{"port":"http"}},"readinessProbe":{"tcpSocket":{"port":80}}}]}}', POD, [], None),
        ('{"spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":"lots"}}}]}}', POD, [],
         "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
        ('{"metadata":{"managedFields":[{"fieldsV1":{"f:spec":{"x":{}}}}],"labels":null}}', POD, [], None),
    ],
)
def test_decode_reports_what_kube_apiserver_reports(body, definition, problems, type_error):
    decoded = structure.decode(structure.parse_json(body.encode()), definition)
    assert decoded.problems == problems
    assert decoded.type_error == type_error


def test_decode_drops_unknown_and_null_fields_and_keeps_the_last_duplicate():
    body = (b'{"spec":{"replicas":2,"replicas":3,"paused":null,"foo":{"bar":1},'
            b'"template":{"spec":{"containers":[{"name":"c","x":1}]}}}}')
    decoded = structure.decode(structure.parse_json(body), DEPLOYMENT)
    assert decoded.value == {"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c"}]}}}}


def test_decoded_values_without_the_raw_body_find_unknown_fields_too():
    decoded = structure.decode(structure.members({"spec": {"foo": 1}, "kind": "Pod"}), POD)
    assert decoded.problems == ['unknown field "spec.foo"']
    assert decoded.value == {"spec": {}, "kind": "Pod"}


def test_duplicates_of_a_schemaless_patch():
    patch = structure.parse_json(b'{"spec":{"a":1,"a":2,"list":[{"k":1,"k":2}]}}')
    assert structure.duplicates(patch) == ['duplicate field "spec.a"', 'duplicate field "spec.list[0].k"']


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        ({"spec": {"replicas": 3, "foo": "bar"}}, "map[spec:map[foo:bar replicas:3]]"),
        ({"a": [1, "x", None, True], "b": {}}, "map[a:[1 x <nil> true] b:map[]]"),
    ],
)
def test_go_format_prints_as_go_fmt(value, printed):
    assert structure.go_format(value) == printed


def test_every_kind_has_its_definition_with_its_group_version_kind():
    for kind in KINDS:
        gvks = definitions()[kind.definition]["x-kubernetes-group-version-kind"]
        assert {"group": kind.group, "kind": kind.kind, "version": kind.version} in gvks


def test_field_descriptions_follow_references():
    assert field_description("io.k8s.api.core.v1.PodSpec", "nodeName").startswith("NodeName indicates")
    assert field_description("io.k8s.api.apps.v1.Deployment", "spec", "replicas").startswith("Number of desired pods")


def _patch_operations(document: dict, kind) -> list[dict]:
    gvk = {"group": kind.group, "kind": kind.kind, "version": kind.version}
    return [path["patch"] for path in document["paths"].values()
            if "patch" in path and path["patch"]["x-kubernetes-group-version-kind"] == gvk]


def test_v3_patch_operations_carry_field_validation_for_every_kind():
    """What kubectl's QueryParamVerifierV3 looks for before it sends fieldValidation=Strict."""
    docs = documents.v3_documents()
    for kind in KINDS:
        operations = _patch_operations(docs[documents.group_version_key(kind)], kind)
        assert operations
        for operation in operations:
            names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
            assert {"fieldValidation", "dryRun", "fieldManager"} <= names


def test_v3_documents_resolve_every_reference_and_wrap_described_references_in_all_of():
    for key, document in documents.v3_documents().items():
        schemas = document["components"]["schemas"]
        text = json.dumps(document)
        for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
            assert ref in schemas, (key, ref)
    spec = documents.v3_documents()["api/v1"]["components"]["schemas"][POD]["properties"]["spec"]
    assert spec["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]
    assert spec["description"].startswith("Specification of the desired behavior of the pod")


def test_v3_index_links_each_document_by_its_hash():
    index = documents.v3_index()["paths"]
    assert set(index) == {documents.group_version_key(k) for k in KINDS}
    for key, (body, digest) in documents.v3_encoded().items():
        assert index[key]["serverRelativeURL"] == f"/openapi/v3/{key}?hash={digest}"
        assert json.loads(body) == documents.v3_documents()[key]


def test_v2_lists_every_operation_of_every_kind():
    document = documents.v2()
    assert document["swagger"] == "2.0"
    pod_item = document["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]
    assert set(pod_item) == {"get", "put", "patch", "delete"}
    assert pod_item["patch"]["operationId"] == "patchCoreV1NamespacedPod"
    assert pod_item["patch"]["consumes"] == ["application/json-patch+json", "application/merge-patch+json",
                                             "application/strategic-merge-patch+json"]
    assert document["paths"]["/apis/apps/v1/replicasets"]["get"]["operationId"] == "listAppsV1ReplicaSetForAllNamespaces"
    assert "/api/v1/namespaces/{name}/status" in document["paths"]
    assert "delete" not in document["paths"]["/api/v1/namespaces"]  # namespaces are deleted one by one
    assert {"io.k8s.api.apps.v1.ReplicaSet", "io.k8s.apimachinery.pkg.apis.meta.v1.Status"} <= set(document["definitions"])
    # v2 has no oneOf: IntOrString and Quantity are strings there, as kube-apiserver writes them.
    assert document["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {"type": "string", "format": "int-or-string"}
    assert document["definitions"]["io.k8s.apimachinery.pkg.api.resource.Quantity"] == {"type": "string"}
    assert "oneOf" in documents.v3_documents()["api/v1"]["components"]["schemas"]["io.k8s.apimachinery.pkg.api.resource.Quantity"]
