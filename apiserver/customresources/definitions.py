"""CustomResourceDefinitions themselves: their defaults and validation, the names and conditions the API
server's controllers give them, and the kinds an established one serves. Pure.

A CRD is served once its names are accepted (NamesAccepted: no other CRD of the group holds them) and
it is Established; its kinds are those of its served versions, each with that version's schema, printer
columns and subresources. A CRD being deleted carries the cleanup finalizer until its objects are gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from podnet.apiserver.customresources import columns
from podnet.apiserver.customresources.schema import structural_errors
from podnet.apiserver.status import Cause
from podnet.apiserver.validation import _DNS1035_LABEL, _DNS1123_SUBDOMAIN, Errors

from podnet.api.kinds import Kind

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
API_APPROVED = "api-approved.kubernetes.io"
SCOPES = ("Cluster", "Namespaced")
COLUMN_TYPES = ("integer", "number", "string", "boolean", "date")


@dataclass(frozen=True, slots=True)
class CustomResource:
    """What serving a custom resource needs from its CRD (carried by its `Kind` as `custom`)."""

    crd: str
    singular: str
    list_kind: str
    schema: dict
    storage_version: str
    scale: dict | None
    terminating: bool


def spec_of(crd: dict) -> dict:
    spec = crd.get("spec")
    return spec if isinstance(spec, dict) else {}


def _names(crd: dict) -> dict:
    names = spec_of(crd).get("names")
    return names if isinstance(names, dict) else {}


def _versions(crd: dict) -> list[dict]:
    versions = spec_of(crd).get("versions")
    return [v for v in versions if isinstance(v, dict)] if isinstance(versions, list) else []


def condition(crd: dict, condition_type: str) -> dict | None:
    for found in (crd.get("status") or {}).get("conditions") or []:
        if isinstance(found, dict) and found.get("type") == condition_type:
            return found
    return None


def is_true(crd: dict, condition_type: str) -> bool:
    found = condition(crd, condition_type)
    return found is not None and found.get("status") == "True"


# --- defaults and validation -----------------------------------------------------------------------------


def default(crd: dict) -> None:
    """SetDefaults of apiextensions/v1, and the status a CRD always has: its storage version among
    storedVersions, acceptedNames present."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("conversion", {"strategy": "None"})
    status = crd.setdefault("status", {})
    if not isinstance(status, dict):
        return
    status.setdefault("acceptedNames", {"kind": "", "plural": ""})
    stored = status.setdefault("storedVersions", [])
    storage = [v.get("name") for v in _versions(crd) if v.get("storage") is True]
    if isinstance(stored, list) and len(storage) == 1 and storage[0] not in stored:
        stored.append(storage[0])


def _dns1035(errors: Errors, field: str, value: object, *, mixed_case: bool = False) -> None:
    if not isinstance(value, str) or not value:
        return
    text = value.lower() if mixed_case else value
    if len(text) > 63 or not _DNS1035_LABEL.fullmatch(text):
        detail = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                  "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                  "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
        errors.invalid(field, value, ("may have mixed case, but should otherwise match: " + detail) if mixed_case else detail)


def validate(crd: dict) -> list[Cause]:
    """ValidateCustomResourceDefinition, on a defaulted CRD (metadata's generic rules aside)."""
    errors = Errors()
    spec, names = spec_of(crd), _names(crd)
    name = (crd.get("metadata") or {}).get("name")
    if isinstance(name, str) and name != f"{names.get('plural', '')}.{spec.get('group', '')}":
        errors.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    group = spec.get("group")
    if not group:
        errors.required("spec.group")
    elif not isinstance(group, str) or len(group) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(group):
        errors.invalid("spec.group", group, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                       "characters, '-' or '.', and must start and end with an alphanumeric character")
    elif "." not in group:
        errors.invalid("spec.group", group, "should be a domain with at least one dot")
    scope = spec.get("scope")
    if not scope:
        errors.required("spec.scope")
    elif scope not in SCOPES:
        errors.not_supported("spec.scope", scope, SCOPES)
    _validate_api_approval(errors, crd)
    if spec.get("preserveUnknownFields") is True:
        errors.invalid("spec.preserveUnknownFields", True,
                       "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead")
    _validate_versions(errors, crd)
    for field in ("plural", "singular", "kind", "listKind"):
        if not names.get(field):
            errors.required(f"spec.names.{field}")
    _validate_names(errors, names, "spec.names")
    return errors.causes


def _validate_api_approval(errors: Errors, crd: dict) -> None:
    """Groups under k8s.io and kubernetes.io are Kubernetes' own: a CRD there names its API review."""
    group = str(spec_of(crd).get("group") or "")
    if not any(group == domain or group.endswith("." + domain) for domain in ("k8s.io", "kubernetes.io")):
        return
    field = f"metadata.annotations[{API_APPROVED}]"
    approval = ((crd.get("metadata") or {}).get("annotations") or {}).get(API_APPROVED)
    rule = f'protected groups must have approval annotation "{API_APPROVED}"'
    if approval is None:
        errors.required(field, f"{rule}, see https://github.com/kubernetes/enhancements/pull/1111")
    elif not (str(approval).startswith("unapproved") or urlsplit(str(approval)).scheme in ("http", "https")):
        errors.invalid(field, approval, f'{rule} with either a URL or a reason starting with "unapproved", see '
                       "https://github.com/kubernetes/enhancements/pull/1111")


def _validate_versions(errors: Errors, crd: dict) -> None:
    versions = _versions(crd)
    if not versions:
        errors.required("spec.versions", "must have at least one version")
        return
    shown = json.dumps(versions, separators=(",", ":"))
    seen: set[str] = set()
    for i, version in enumerate(versions):
        path = f"spec.versions[{i}]"
        version_name = version.get("name")
        if not version_name:
            errors.required(f"{path}.name")
        _dns1035(errors, f"{path}.name", version_name)
        if version_name in seen:
            errors.invalid("spec.versions", shown, "must contain unique version names")
        seen.add(str(version_name))
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            errors.required(f"{path}.schema.openAPIV3Schema", "schemas are required")
        else:
            errors.causes.extend(structural_errors(schema, f"{path}.schema.openAPIV3Schema"))
        _validate_subresources(errors, version.get("subresources"), f"{path}.subresources")
        for j, column in enumerate(version.get("additionalPrinterColumns") or []):
            _validate_column(errors, column, f"{path}.additionalPrinterColumns[{j}]")
    if sum(1 for v in versions if v.get("storage") is True) != 1:
        errors.invalid("spec.versions", shown, "must have exactly one version marked as storage version")


def _validate_subresources(errors: Errors, subresources: object, path: str) -> None:
    if not isinstance(subresources, dict):
        return
    scale = subresources.get("scale")
    if not isinstance(scale, dict):
        return
    for field, under in (("specReplicasPath", ".spec"), ("statusReplicasPath", ".status")):
        value = scale.get(field)
        if not value:
            errors.required(f"{path}.scale.{field}")
        elif not str(value).startswith(under + "."):
            errors.invalid(f"{path}.scale.{field}", value, f"should be a json path under {under}")
    selector = scale.get("labelSelectorPath")
    if selector and not (str(selector).startswith(".spec.") or str(selector).startswith(".status.")):
        errors.invalid(f"{path}.scale.labelSelectorPath", selector, "should be a json path under either .spec or .status")


def _validate_column(errors: Errors, column: object, path: str) -> None:
    if not isinstance(column, dict):
        return
    if not column.get("name"):
        errors.required(f"{path}.name")
    if not column.get("type"):
        errors.required(f"{path}.type")
    elif column["type"] not in COLUMN_TYPES:
        errors.not_supported(f"{path}.type", column["type"], COLUMN_TYPES)
    if not column.get("jsonPath"):
        errors.required(f"{path}.jsonPath")
    else:
        try:
            columns.compile_path(str(column["jsonPath"]))
        except columns.PathError as e:
            errors.invalid(f"{path}.jsonPath", column["jsonPath"], f"must be a simple json path: {e}")


def _validate_names(errors: Errors, names: dict, path: str) -> None:
    _dns1035(errors, f"{path}.plural", names.get("plural"))
    _dns1035(errors, f"{path}.singular", names.get("singular"))
    _dns1035(errors, f"{path}.kind", names.get("kind"), mixed_case=True)
    _dns1035(errors, f"{path}.listKind", names.get("listKind"), mixed_case=True)
    for i, short in enumerate(names.get("shortNames") or []):
        _dns1035(errors, f"{path}.shortNames[{i}]", short)
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errors.invalid(f"{path}.listKind", names["listKind"], "kind and listKind may not be the same")
    for i, category in enumerate(names.get("categories") or []):
        _dns1035(errors, f"{path}.categories[{i}]", category)


def validate_update(old: dict, new: dict) -> list[Cause]:
    """What a CRD may not change: its group and plural always, its scope and kind once established."""
    errors = Errors()
    immutable = [("spec.group", spec_of(old).get("group"), spec_of(new).get("group")),
                 ("spec.names.plural", _names(old).get("plural"), _names(new).get("plural"))]
    if is_true(old, "Established"):
        immutable += [("spec.scope", spec_of(old).get("scope"), spec_of(new).get("scope")),
                      ("spec.names.kind", _names(old).get("kind"), _names(new).get("kind"))]
    for field, before, after in immutable:
        if before != after:
            errors.invalid(field, after, "field is immutable")
    stored = (new.get("status") or {}).get("storedVersions") or []
    served = {v.get("name") for v in _versions(new)}
    for i, version in enumerate(stored):
        if version not in served:
            errors.invalid(f"status.storedVersions[{i}]", version, "must appear in spec.versions")
    return errors.causes


# --- names and conditions -------------------------------------------------------------------------------


def _held(names: dict) -> tuple[set[str], set[str]]:
    resource_names = {names.get("plural"), names.get("singular"), *(names.get("shortNames") or [])} - {None, ""}
    kinds = {names.get("kind"), names.get("listKind")} - {None, ""}
    return resource_names, kinds  # type: ignore[return-value]


def accepted_status(crd: dict, others: list[dict], now: str) -> dict:
    """The status the naming and establishing controllers give a CRD, the other CRDs as they are: its names
    accepted unless another CRD of its group holds one, then Established (kept once given)."""
    group = spec_of(crd).get("group")
    taken_names: set[str] = set()
    taken_kinds: set[str] = set()
    for other in others:
        if spec_of(other).get("group") != group or (other.get("metadata") or {}).get("name") == (crd.get("metadata") or {}).get("name"):
            continue
        held_names, held_kinds = _held((other.get("status") or {}).get("acceptedNames") or {})
        taken_names |= held_names
        taken_kinds |= held_kinds
    requested = dict(_names(crd))
    wanted_names, wanted_kinds = _held(requested)
    status = json.loads(json.dumps(crd.get("status") or {}))
    conflicts = sorted(wanted_names & taken_names)
    kind_conflicts = sorted(wanted_kinds & taken_kinds)
    if conflicts:
        names_accepted = ("False", "NameConflict", f'"{conflicts[0]}" is already in use')
    elif kind_conflicts:
        names_accepted = ("False", "KindConflict", f'"{kind_conflicts[0]}" is already in use')
    else:
        names_accepted = ("True", "NoConflicts", "no conflicts found")
        status["acceptedNames"] = requested
    _set_condition(status, "NamesAccepted", *names_accepted, now)
    if names_accepted[0] == "True" and not is_true(crd, "Established"):
        _set_condition(status, "Established", "True", "InitialNamesAccepted", "the initial names have been accepted", now)
    return status


def terminating_status(crd: dict, now: str) -> dict:
    status = json.loads(json.dumps(crd.get("status") or {}))
    _set_condition(status, "Terminating", "True", "InstanceDeletionInProgress", "CustomResource deletion is in progress", now)
    return status


def _set_condition(status: dict, condition_type: str, state: str, reason: str, message: str, now: str) -> None:
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    for existing in conditions:
        if existing.get("type") == condition_type:
            if (existing.get("status"), existing.get("reason"), existing.get("message")) != (state, reason, message):
                if existing.get("status") != state:
                    existing["lastTransitionTime"] = now
                existing.update(status=state, reason=reason, message=message)
            break
    else:
        conditions.append({"type": condition_type, "status": state, "lastTransitionTime": now, "reason": reason,
                           "message": message})
    status["conditions"] = conditions


# --- the kinds a CRD serves ------------------------------------------------------------------------------


def served_kinds(crd: dict) -> list[Kind]:
    """The kinds of an established CRD's served versions (none before it is established)."""
    if not is_true(crd, "Established"):
        return []
    spec, names = spec_of(crd), (crd.get("status") or {}).get("acceptedNames") or {}
    versions = _versions(crd)
    storage = next((v.get("name") for v in versions if v.get("storage") is True), "")
    kinds = []
    for version in versions:
        if version.get("served") is not True:
            continue
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        custom = CustomResource(
            crd=str((crd.get("metadata") or {}).get("name")), singular=str(names.get("singular") or ""),
            list_kind=str(names.get("listKind") or f"{names.get('kind')}List"), schema=schema,
            storage_version=str(storage), scale=subresources.get("scale"),
            terminating=bool((crd.get("metadata") or {}).get("deletionTimestamp")),
        )
        kinds.append(Kind(
            str(names.get("kind")), str(spec.get("group")), str(version.get("name")), str(names.get("plural")),
            spec.get("scope") == "Namespaced", tuple(names.get("shortNames") or ()),
            has_status="status" in subresources, printer=columns.printer(version.get("additionalPrinterColumns") or []),
            categories=tuple(names.get("categories") or ()), custom=custom,
        ))
    return kinds
