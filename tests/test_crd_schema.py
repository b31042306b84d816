"""The pure cores of CustomResourceDefinitions: structural-schema checks, CRD validation, names and
conditions, and a custom object's pruning, defaulting and validation, with kube-apiserver's wording."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from podnet.apiserver.customresources import columns, definitions, schema
from podnet.apiserver.customresources.rules import field_schema_of, served_form, spec_changed, stored_form

DATA = Path(__file__).parent / "data" / "crds"
CRONTAB_CRD = yaml.safe_load((DATA / "crontab-crd.yaml").read_text())
CRONTAB_SCHEMA = CRONTAB_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
CILIUM_CRD = yaml.safe_load((DATA / "ciliumnetworkpolicies-crd.yaml").read_text())
CILIUM_SCHEMA = CILIUM_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
CILIUM_POLICY = yaml.safe_load((DATA / "cilium-l7-policy.yaml").read_text())
ROOT = "spec.versions[0].schema.openAPIV3Schema"


def _messages(causes: list) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


# --- structural schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, expected", [
    ({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}},
     [f"{ROOT}.properties[spec].type: Required value: must not be empty for specified object fields"]),
    ({"type": "object", "properties": {"items": {"type": "array", "items": {}}}},
     [f"{ROOT}.properties[items].items.type: Required value: must not be empty for specified array items"]),
    ({"properties": {"a": {"type": "string"}}},
     [f"{ROOT}.type: Required value: must not be empty at the root"]),
    ({"type": "string"}, [f'{ROOT}.type: Invalid value: "string": must be object at the root']),
    ({"type": "object", "properties": {"list": {"type": "array"}}},
     [f"{ROOT}.properties[list].items: Required value: must be specified"]),
    ({"type": "object", "additionalProperties": {"type": "string"}},
     [f"{ROOT}.additionalProperties: Forbidden: must not be used at the root"]),
    ({"type": "object", "properties": {"a": {"type": "object", "$ref": "#/definitions/x"}}},
     [f"{ROOT}.properties[a].$ref: Forbidden: $ref is not supported"]),
    ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}}},
     [f"{ROOT}.properties[a].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime "
      "complexity becomes quadratic"]),
    ({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}},
                                             "additionalProperties": {"type": "string"}}}},
     [f"{ROOT}.properties[a].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"]),
    ({"type": "object", "properties": {"a": {"type": "string", "anyOf": [{"type": "string", "description": "x"}]}}},
     [f"{ROOT}.properties[a].anyOf[0].description: Forbidden: must be empty to be structural",
      f"{ROOT}.properties[a].anyOf[0].type: Forbidden: must be empty to be structural"]),
    ({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}},
     [f"{ROOT}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but "
      "metadata is implicitly specified"]),
    ({"type": "object", "properties": {"a": {"type": "null"}}},
     [f"{ROOT}.properties[a].type: Forbidden: type cannot be set to null, use nullable as an alternative",
      f'{ROOT}.properties[a].type: Unsupported value: "null": supported values: "array", "boolean", "integer", '
      '"number", "object", "string"']),
    ({"type": "object", "properties": {"p": {"x-kubernetes-int-or-string": True, "x-kubernetes-preserve-unknown-fields": True}}},
     [f"{ROOT}.properties[p].x-kubernetes-preserve-unknown-fields: Invalid value: true: must be false if "
      "x-kubernetes-int-or-string is true"]),
])
def test_structural_errors(bad: dict, expected: list[str]) -> None:
    assert _messages(schema.structural_errors(bad, ROOT)) == sorted(expected)


@pytest.mark.parametrize("good", [
    CRONTAB_SCHEMA,
    CILIUM_SCHEMA,  # anyOf/oneOf of bare properties, int-or-string anyOf, a metadata of type object
    {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    {"type": "object", "properties": {"port": {"x-kubernetes-int-or-string": True,
                                               "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}]}}},
    {"type": "object", "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}}}},
])
def test_structural_schemas_pass(good: dict) -> None:
    assert schema.structural_errors(good, ROOT) == []


# --- the CRD itself ---------------------------------------------------------------------------------------


def _crd(**changes: object) -> dict:
    crd = yaml.safe_load((DATA / "crontab-crd.yaml").read_text())
    for path, value in changes.items():
        target = crd
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    definitions.default(crd)
    return crd


def test_crd_defaults_names_and_status() -> None:
    crd = _crd()
    assert crd["spec"]["names"]["listKind"] == "CronTabList" and crd["spec"]["conversion"] == {"strategy": "None"}
    assert crd["status"] == {"acceptedNames": {"kind": "", "plural": ""}, "storedVersions": ["v1"]}
    assert definitions.validate(crd) == []
    assert definitions.validate(_defaulted(CILIUM_CRD)) == []


def _defaulted(crd: dict) -> dict:
    copied = yaml.safe_load(yaml.safe_dump(crd))
    definitions.default(copied)
    return copied


@pytest.mark.parametrize("changes, expected", [
    ({"metadata__name": "crontab.stable.example.com"},
     ['metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group']),
    ({"spec__scope": "Global"},
     ['spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"']),
    ({"spec__group": "example", "metadata__name": "crontabs.example"},
     ['spec.group: Invalid value: "example": should be a domain with at least one dot']),
    ({"spec__names__kind": "Cron_Tab", "spec__names__listKind": "CronTabList"},
     ['spec.names.kind: Invalid value: "Cron_Tab": may have mixed case, but should otherwise match: a DNS-1035 label '
      "must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an "
      "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"]),
    ({"spec__group": "stable.k8s.io", "metadata__name": "crontabs.stable.k8s.io"},
     ['metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval '
      'annotation "api-approved.kubernetes.io", see https://github.com/kubernetes/enhancements/pull/1111']),
    ({"spec__group": "stable.k8s.io", "metadata__name": "crontabs.stable.k8s.io",
      "metadata__annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes/enhancements/pull/1111"}}, []),
    ({"spec__preserveUnknownFields": True},
     ["spec.preserveUnknownFields: Invalid value: true: cannot set to true, set x-kubernetes-preserve-unknown-fields to "
      "true in spec.versions[*].schema instead"]),
    ({"spec__versions__0__schema": {}},
     ["spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"]),
    ({"spec__versions__0__additionalPrinterColumns": [{"name": "X", "type": "time", "jsonPath": ".spec.x"}]},
     ['spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: "time": supported values: "integer", '
      '"number", "string", "boolean", "date"']),
])
def test_crd_validation(changes: dict, expected: list[str]) -> None:
    assert _messages(definitions.validate(_crd(**changes))) == expected


def test_crd_needs_exactly_one_storage_version() -> None:
    crd = _crd()
    crd["spec"]["versions"].append(dict(crd["spec"]["versions"][0], name="v2"))
    messages = _messages(definitions.validate(crd))
    assert len(messages) == 1 and messages[0].startswith("spec.versions: Invalid value: ")
    assert messages[0].endswith(": must have exactly one version marked as storage version")


def test_crd_schema_errors_are_reported_at_their_version() -> None:
    crd = _crd()
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].pop("type")
    assert _messages(definitions.validate(crd)) == [
        f"{ROOT}.properties[spec].type: Required value: must not be empty for specified object fields"]


def test_crd_update_keeps_group_and_plural_and_once_established_scope_and_kind() -> None:
    old = _crd()
    old["status"]["conditions"] = [{"type": "Established", "status": "True"}]
    new = _crd(spec__scope="Cluster", spec__group="other.example.com")
    assert _messages(definitions.validate_update(old, new)) == [
        'spec.group: Invalid value: "other.example.com": field is immutable',
        'spec.scope: Invalid value: "Cluster": field is immutable',
    ]


def test_names_accepted_then_established_and_conflicts_refused() -> None:
    first = _crd()
    status = definitions.accepted_status(first, [], "2024-01-01T00:00:00Z")
    assert status["acceptedNames"]["plural"] == "crontabs"
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("NamesAccepted", "True", "NoConflicts"), ("Established", "True", "InitialNamesAccepted")]
    first["status"] = status
    second = _crd(metadata__name="crontabs2.stable.example.com", spec__names__plural="crontabs2")
    refused = definitions.accepted_status(second, [first], "2024-01-01T00:00:00Z")
    assert refused["acceptedNames"] == {"kind": "", "plural": ""}
    assert refused["conditions"] == [{"type": "NamesAccepted", "status": "False", "lastTransitionTime": "2024-01-01T00:00:00Z",
                                      "reason": "NameConflict", "message": '"crontab" is already in use'}]
    assert definitions.served_kinds(second | {"status": refused}) == []


def test_served_kinds_of_an_established_crd() -> None:
    crd = _crd()
    crd["status"] = definitions.accepted_status(crd, [], "2024-01-01T00:00:00Z")
    (kind,) = definitions.served_kinds(crd)
    assert (kind.kind, kind.group, kind.version, kind.plural, kind.namespaced, kind.short_names) == (
        "CronTab", "stable.example.com", "v1", "crontabs", True, ("ct",))
    assert kind.singular == "crontab" and kind.storage_resource == "stable.example.com/crontabs"
    assert kind.definition == "com.example.stable.v1.CronTab" and not kind.has_status


# --- custom objects -----------------------------------------------------------------------------------------


def test_pruning_drops_unknown_fields_and_keeps_preserved_ones() -> None:
    widget_schema = {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "size": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }}}}
    obj = {"apiVersion": "a/v1", "kind": "W", "metadata": {"name": "w", "labels": {"x": "y"}}, "other": 1,
           "spec": {"size": "s", "color": "red", "items": [{"name": "a", "age": 3}], "labels": {"k": "v"},
                    "extra": {"anything": {"deep": [1]}}}}
    pruned, dropped = schema.prune(widget_schema, obj)
    assert dropped == ["other", "spec.color", "spec.items[0].age"]
    assert pruned == {"apiVersion": "a/v1", "kind": "W", "metadata": {"name": "w", "labels": {"x": "y"}},
                      "spec": {"size": "s", "items": [{"name": "a"}], "labels": {"k": "v"},
                               "extra": {"anything": {"deep": [1]}}}}


def test_defaulting_fills_absent_fields_and_drops_nulls() -> None:
    defaulting = {"type": "object", "properties": {"spec": {"type": "object", "default": {}, "properties": {
        "replicas": {"type": "integer", "default": 1},
        "mode": {"type": "string", "default": "fast"},
        "owner": {"type": "string"},
        "note": {"type": "string", "nullable": True},
        "ports": {"type": "array", "items": {"type": "object", "properties": {
            "protocol": {"type": "string", "default": "TCP"}, "port": {"type": "integer"}}}},
    }}}}
    assert schema.default(defaulting, {"metadata": {}}) == {"metadata": {}, "spec": {"replicas": 1, "mode": "fast"}}
    given = {"spec": {"replicas": 3, "mode": None, "owner": None, "note": None, "ports": [{"port": 80}]}}
    assert schema.default(defaulting, given) == {"spec": {"replicas": 3, "mode": "fast", "note": None,
                                                          "ports": [{"port": 80, "protocol": "TCP"}]}}
    assert given["spec"]["mode"] is None  # the object given is left as it was


@pytest.mark.parametrize("spec, expected", [
    ({"cronSpec": "* * * * */5", "replicas": 3}, []),
    ({"cronSpec": "* * * *"},
     ["spec.cronSpec: Invalid value: \"* * * *\": spec.cronSpec in body should match "
      "'^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'"]),
    ({"replicas": 15}, ["spec.replicas: Invalid value: 15: spec.replicas in body should be less than or equal to 10"]),
    ({"replicas": 0}, ["spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"]),
    ({"replicas": "three"},
     ['spec.replicas: Invalid value: "three": spec.replicas in body must be of type integer: "three"']),
    ({"image": 5}, ['spec.image: Invalid value: 5: spec.image in body must be of type string: "5"']),
])
def test_crontab_validation(spec: dict, expected: list[str]) -> None:
    obj = {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "c"}, "spec": spec}
    assert _messages(schema.validate(CRONTAB_SCHEMA, obj)) == expected


@pytest.mark.parametrize("value, expected", [
    ({"size": "small", "port": 8080, "tags": ["a", "b"], "ratio": 0.5}, []),
    ({"size": "small", "port": "http"}, []),
    ({"port": 1}, ["spec.size: Required value"]),
    ({"size": "medium"}, ['spec.size: Unsupported value: "medium": supported values: "small", "large"']),
    ({"size": "small", "port": True},
     ["spec.port: Invalid value: true: spec.port in body must be of type integer,string: \"true\""]),
    ({"size": "small", "tags": ["a", "a"]}, ['spec.tags[1]: Duplicate value: "a"']),
    ({"size": "small", "tags": ["a", "b", "c", "d"]}, ["spec.tags: Too many: 4: must have at most 3 items"]),
    ({"size": "small", "name": "waytoolongname"}, ["spec.name: Too long: may not be longer than 8"]),
    ({"size": "small", "ratio": "half"},
     ['spec.ratio: Invalid value: "half": spec.ratio in body must be of type number: "half"']),
])
def test_validation_keywords(value: dict, expected: list[str]) -> None:
    keywords = {"type": "object", "properties": {"spec": {"type": "object", "required": ["size"], "properties": {
        "size": {"type": "string", "enum": ["small", "large"]},
        "port": {"x-kubernetes-int-or-string": True},
        "tags": {"type": "array", "maxItems": 3, "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "name": {"type": "string", "maxLength": 8},
        "ratio": {"type": "number"},
    }}}}
    assert _messages(schema.validate(keywords, {"spec": value})) == expected


@pytest.mark.parametrize("value, ok", [
    ({"cidr": "10.0.0.0/8", "since": "2024-01-01T00:00:00Z", "id": "0f8fad5b-d9cb-469f-a165-70867728950e"}, True),
    ({"cidr": "10.0.0.1/24", "since": "2024-01-01T10:20:30.5+02:00"}, True),
    ({"cidr": "10.0.0.0"}, False),
    ({"since": "yesterday"}, False),
    ({"id": "not-a-uuid"}, False),
    ({"size": "huge"}, True),  # a format kube-apiserver does not check
])
def test_formats(value: dict, ok: bool) -> None:
    formats = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "cidr": {"type": "string", "format": "cidr"}, "since": {"type": "string", "format": "date-time"},
        "id": {"type": "string", "format": "uuid"}, "size": {"type": "string", "format": "idn-hostname"}}}}}
    causes = schema.validate(formats, {"spec": value})
    assert (causes == []) is ok
    if not ok:
        (field, found), = value.items()
        kind = {"cidr": "cidr", "since": "date-time", "id": "uuid"}[field]
        assert _messages(causes) == [
            f'spec.{field}: Invalid value: "{found}": spec.{field} in body must be of type {kind}: "{found}"']


def test_the_cilium_l7_policy_is_valid_and_one_of_its_selectors_is_required() -> None:
    pruned, dropped = schema.prune(CILIUM_SCHEMA, CILIUM_POLICY)
    assert dropped == [] and pruned == CILIUM_POLICY
    assert schema.validate(CILIUM_SCHEMA, schema.default(CILIUM_SCHEMA, pruned)) == []
    without_selector = {**CILIUM_POLICY, "spec": {k: v for k, v in CILIUM_POLICY["spec"].items() if k != "endpointSelector"}}
    (refused,) = schema.validate(CILIUM_SCHEMA, without_selector)
    assert refused.field == "spec" and refused.message.endswith("spec in body must validate one and only one schema (oneOf)")


def test_field_ownership_follows_list_and_map_types() -> None:
    crd = _defaulted(CILIUM_CRD)
    crd["status"] = definitions.accepted_status(crd, [], "2024-01-01T00:00:00Z")
    (kind,) = definitions.served_kinds(crd)
    fields = field_schema_of(kind)
    assert fields.is_atomic("spec.endpointSelector")  # x-kubernetes-map-type: atomic
    assert fields.keys_of("spec.ingress") is None and not fields.is_set("spec.ingress")  # a list without a type: atomic
    keyed = _crd()
    keyed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"] |= {
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "properties": {"name": {"type": "string"},
                            "hosts": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}}}
    keyed["status"] = definitions.accepted_status(keyed, [], "2024-01-01T00:00:00Z")
    (kind,) = definitions.served_kinds(keyed)
    assert field_schema_of(kind).keys_of("spec.ports") == ("name",) and field_schema_of(kind).is_set("spec.ports.hosts")


# --- printer columns ----------------------------------------------------------------------------------------


def test_printer_columns_and_json_paths() -> None:
    cilium = columns.printer(CILIUM_CRD["spec"]["versions"][0]["additionalPrinterColumns"])
    policy = {"metadata": {"name": "rule1", "creationTimestamp": "2024-01-01T00:00:00Z"},
              "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Valid", "status": "True"}]}}
    assert [c.name for c in cilium.columns] == ["Name", "Age", "Valid"]
    assert cilium.row(policy, 1704067200 + 90) == ["rule1", "90s", "True"]
    assert cilium.row({"metadata": {"name": "r"}}, 0) == ["r", None, None]  # nothing found: a null cell
    bare = columns.printer([])
    assert [(c.name, c.type) for c in bare.columns] == [("Name", "string"), ("Age", "date")]
    find = columns.compile_path(".spec.items[*].name")
    assert find({"spec": {"items": [{"name": "a"}, {"name": "b"}]}}) == ["a", "b"]
    assert columns.compile_path(".metadata.labels['app.kubernetes.io/name']")(
        {"metadata": {"labels": {"app.kubernetes.io/name": "x"}}}) == ["x"]
    with pytest.raises(columns.PathError):
        columns.compile_path(".spec..x")


def test_a_new_generation_is_any_change_but_metadata_and_a_separate_status() -> None:
    crontab = _crd()
    crontab["status"] = definitions.accepted_status(crontab, [], "2024-01-01T00:00:00Z")
    (plain,) = definitions.served_kinds(crontab)
    cilium = _defaulted(CILIUM_CRD)
    cilium["status"] = definitions.accepted_status(cilium, [], "2024-01-01T00:00:00Z")
    (with_status,) = definitions.served_kinds(cilium)
    old = {"metadata": {"labels": {}}, "spec": {"a": 1}, "status": {"b": 1}}
    assert spec_changed(plain, old, old | {"status": {"b": 2}})  # no status subresource: status is content
    assert not spec_changed(with_status, old, old | {"status": {"b": 2}})
    assert spec_changed(with_status, old, old | {"extra": 1})
    assert not spec_changed(plain, old, old | {"metadata": {"labels": {"x": "y"}}})
    assert with_status.list_kind == "CiliumNetworkPolicyList"


def test_objects_are_stored_in_the_storage_version_and_served_in_each() -> None:
    crd = _crd()
    crd["spec"]["versions"] = [dict(crd["spec"]["versions"][0], name="v1beta1", storage=False),
                               dict(crd["spec"]["versions"][0], name="v1", storage=True)]
    crd["status"] = definitions.accepted_status(crd, [], "2024-01-01T00:00:00Z")
    beta, ga = definitions.served_kinds(crd)
    written = {"apiVersion": "stable.example.com/v1beta1", "kind": "CronTab", "spec": {}}
    assert stored_form(beta, written)["apiVersion"] == "stable.example.com/v1"
    assert served_form(ga, stored_form(beta, written))["apiVersion"] == "stable.example.com/v1"
    assert served_form(beta, stored_form(beta, written)) == written
    assert served_form(beta, written) is written  # nothing to change: the same object
