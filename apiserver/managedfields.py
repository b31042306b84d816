"""Between the REST handlers and apply.py: who the manager of a write is, keeping
`metadata.managedFields` on every write, and server-side apply with kube-apiserver's answers.

Pure: plain objects and strings in, objects out or `ApiError` raised.
"""

from __future__ import annotations

import copy

from podnet.apiserver import status
from podnet.apiserver.apply import (
    ApplyConflicts,
    FieldError,
    ManagedEntry,
    apply,
    path_string,
    read_managed,
    track_update,
    write_managed,
)
from podnet.apiserver.customresources.rules import custom_of, default_object, field_schema_of, prune_object
from podnet.apiserver.status import ApiError, Cause

from podnet.api.kinds import Kind
from podnet.api.openapi import structure

# kube-apiserver's limit on a fieldManager (validation.FieldManagerMaxLength).
MAX_MANAGER_LENGTH = 128
# What an apply configuration may not set, or sets only as a precondition.
_SERVER_METADATA = ("uid", "creationTimestamp", "generation", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")


def manager_name(field_manager: str | None, user_agent: str | None, options_kind: str, *, applying: bool = False) -> str:
    """`?fieldManager=`, or else the client's User-Agent up to its first `/`, as kube-apiserver names
    the managers of clients that name none (`kubectl-edit`, `kube-controller-manager`, ...).
    `options_kind` (Create, Update, Patch) names the request's options in errors."""
    if not field_manager:
        if applying:
            raise _invalid_options(options_kind, "FieldValueRequired", "Required value: is required for apply patch")
        return (user_agent or "").split("/", 1)[0].strip()[:MAX_MANAGER_LENGTH] or "unknown"
    if len(field_manager) > MAX_MANAGER_LENGTH:
        raise _invalid_options(options_kind, "FieldValueTooLong", f"Too long: may not be more than {MAX_MANAGER_LENGTH} bytes")
    if not field_manager.isprintable():
        raise _invalid_options(options_kind, "FieldValueInvalid", "Invalid value: must only contain printable characters")
    return field_manager


def _invalid_options(operation: str, reason: str, detail: str) -> ApiError:
    """A 422 about the request's fieldManager, worded as kube-apiserver's options validation words it."""
    message = f'{operation}Options.meta.k8s.io "" is invalid: fieldManager: {detail}'
    return ApiError(
        status.status(422, "Invalid", message, {"group": "meta.k8s.io", "kind": f"{operation}Options",
                                                "causes": [Cause("fieldManager", reason, detail).to_dict()]})
    )


def _entries(obj: dict) -> list[ManagedEntry]:
    try:
        return read_managed(obj)
    except FieldError as e:
        raise status.bad_request(f"metadata.managedFields: {e}") from None


def _sent_entries(new: dict, old: dict | None, subresource: str) -> list[ManagedEntry] | None:
    """The managedFields a write keeps, as kube-apiserver decides: those the client sent, unless it
    sent none, sent what cannot be read, or wrote through a subresource (then the stored ones); None
    when it sent the one empty entry that clears them."""
    stored = _entries(old) if old is not None else []
    if subresource:
        return stored
    if new["metadata"].get("managedFields") == [{}]:
        return None
    try:
        sent = read_managed(new)
    except FieldError:
        return stored  # a client that does not understand managedFields must not wipe them
    return sent or stored


def record_update(kind: Kind, old: dict | None, new: dict, manager: str, now: str, subresource: str = "") -> None:
    """Sets `new`'s managedFields after an Update by `manager` (old None: a create)."""
    entries = _sent_entries(new, old, subresource)
    if entries is None:
        new["metadata"].pop("managedFields", None)
        return
    default_object(kind, new)  # as the write will be stored: the defaults the server fills in are the writer's too
    try:
        entries = track_update(entries, old or {}, new, manager, kind.api_version, now, field_schema_of(kind), subresource)
    except FieldError:
        pass  # an object whose fields cannot be told apart: validation answers for it; ownership stays
    _store(new, entries)


def _store(obj: dict, entries: list[ManagedEntry]) -> None:
    if entries:
        obj["metadata"]["managedFields"] = write_managed(entries)
    else:
        obj["metadata"].pop("managedFields", None)


def _typed_patch_error(kind: Kind, namespace: str | None, name: str, problems: list[str]) -> ApiError:
    """kube-apiserver's answer to an apply configuration that does not fit the kind's schema."""
    detail = problems[0] if len(problems) == 1 else "errors:\n" + "\n".join(f"  {p}" for p in problems)
    return status.bad_request(
        f"failed to create typed patch object ({namespace or ''}/{name}; {kind.group}/{kind.version}, Kind={kind.kind}): {detail}"
    )


def _check_schema(kind: Kind, config: dict, namespace: str | None, name: str) -> None:
    """Apply configurations are strict whatever the fieldValidation directive: a field the kind does not
    have, or a value of the wrong type, fails the apply."""
    if custom_of(kind) is not None:
        decoded = structure.Decoded(None, [f'unknown field "{path}"' for path in prune_object(kind, config)[1]])
    else:
        decoded = structure.decode(structure.members(config), kind.definition)
    problems = [f".{p.removeprefix('unknown field ').strip(chr(34))}: field not declared in schema"
                for p in decoded.problems if p.startswith("unknown field ")]
    if decoded.type_error:
        problems.append(decoded.type_error)
    if problems:
        raise _typed_patch_error(kind, namespace, name, problems)


def server_side_apply(
    kind: Kind, live: dict | None, config: object, name: str, manager: str, now: str, *, force: bool, subresource: str = "",
    namespace: str | None = None,
) -> dict:
    """The object after `manager` applies `config` (a create when `live` is None), managedFields set;
    conflicts are 409 as kube-apiserver words them."""
    if not isinstance(config, dict):
        raise status.bad_request("an apply configuration must be an object")
    config = copy.deepcopy(config)
    if config.get("apiVersion") != kind.api_version or config.get("kind") != kind.kind:
        raise status.bad_request(
            f"the apply configuration must have apiVersion {kind.api_version!r} and kind {kind.kind!r}"
        )
    _check_schema(kind, config, namespace, name)
    metadata = config.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise status.bad_request("metadata must be an object")
    if metadata.get("managedFields") is not None:
        forbidden = Cause("metadata.managedFields", "FieldValueForbidden", "Forbidden: cannot be set in an apply configuration")
        raise status.invalid(kind, name, [forbidden])
    if metadata.setdefault("name", name) != name:
        raise status.bad_request(f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})")
    expected = metadata.pop("resourceVersion", None)
    if live is not None and expected not in (None, "") and expected != live["metadata"].get("resourceVersion"):
        raise status.conflict(kind, name)
    for server_set in _SERVER_METADATA:
        metadata.pop(server_set, None)
    base = None
    if live is not None:
        base = copy.deepcopy(live)
        base["metadata"].pop("managedFields", None)
    try:
        result = apply(base, config, _entries(live) if live is not None else [], manager, kind.api_version, now,
                       field_schema_of(kind), force=force, subresource=subresource)
    except ApplyConflicts as e:
        causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {c.owner.describe()}", "field": path_string(c.path)}
                  for c in e.conflicts]
        raise ApiError(status.status(409, "Conflict", str(e), {"causes": causes})) from None
    except FieldError as e:
        raise _typed_patch_error(kind, namespace, name, [str(e)]) from None
    _store(result.obj, result.managed)
    return result.obj
