"""Field ownership and server-side apply, as kube-apiserver's structured-merge-diff keeps them.

Every write records, in `metadata.managedFields`, which manager owns which fields:
- an `Update` (create, update, patch) gives its manager the fields it added or changed, and takes them
  from every other manager (`track_update`);
- an `Apply` (PATCH `application/apply-patch+yaml`) merges the applied configuration into the object,
  makes the applier the owner of exactly the fields it applied, removes the fields it applied last
  time and no longer applies (unless another manager owns them), and refuses to change a field another
  manager owns unless forced (`apply`, raising `ApplyConflicts`).

A field path is a tuple of elements in the `fieldsV1` spelling: `f:<field>`, `k:<key as JSON>` for an
item of a list keyed by some of its fields, `v:<value as JSON>` for an item of a set. Which lists are
keyed, sets or atomic comes from `fieldschema.field_schema`.

Pure: objects and entries in, objects and entries out; the caller supplies the time.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace

from podnet.apiserver.fieldschema import FieldSchema

FieldPath = tuple[str, ...]

APPLY = "Apply"
UPDATE = "Update"
# kube-apiserver's cap on Update entries, and the name of the entry the oldest are merged into.
MAX_UPDATE_MANAGERS = 10
ANCIENT_CHANGES = "ancient-changes"
_MISSING = object()
# Fields the server owns, never a manager (structured-merge-diff's strip set).
_SERVER_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "selfLink",
                    "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds")
_STRIPPED: frozenset[FieldPath] = frozenset(
    {("f:apiVersion",), ("f:kind",)} | {("f:metadata", f"f:{name}") for name in _SERVER_METADATA}
)


class FieldError(ValueError):
    """The object cannot be seen as fields (a keyed list item without its key, a duplicate key)."""


# --- walking an object as fields ----------------------------------------------------------------------


def _child_names(names: str, key: str) -> str:
    return f"{names}.{key}" if names else key


def _item_key(item: object, keys: tuple[str, ...], schema: FieldSchema, names: str) -> str:
    if not isinstance(item, dict):
        raise FieldError(f".{names}: an item of a list keyed by {', '.join(keys)} must be an object")
    fields = {}
    for key in keys:
        value = item.get(key, schema.key_default(key))
        if value is None:
            raise FieldError(f".{names}: an item has no key field {key!r}")
        fields[key] = value
    return "k:" + json.dumps(dict(sorted(fields.items())), separators=(",", ":"))


def _children(value: object, names: str, schema: FieldSchema) -> list[tuple[str, object, str]] | None:
    """The owned parts of a value, as (element, value, field names path); None for a value owned whole
    (a scalar, an atomic list or map)."""
    if isinstance(value, dict) and not schema.is_atomic(names):
        return [(f"f:{key}", child, _child_names(names, key)) for key, child in value.items()]
    if isinstance(value, list):
        keys = schema.keys_of(names)
        if keys:
            items = [(_item_key(item, keys, schema, names), item, names) for item in value]
        elif schema.is_set(names):
            items = [("v:" + json.dumps(item, separators=(",", ":")), item, "") for item in value]
        else:
            return None
        seen: set[str] = set()
        for element, _, _ in items:
            if element in seen:
                raise FieldError(f".{names}: duplicate entries for key {element[2:]}")
            seen.add(element)
        return items
    return None


def _is_item(element: str) -> bool:
    return element[0] in "kvi"


def field_set(obj: object, schema: FieldSchema, names: str = "", path: FieldPath = ()) -> set[FieldPath]:
    """The fields a value sets: its leaves (scalars, empty or atomic containers) and the items of its
    keyed lists and sets (structured-merge-diff's ToFieldSet)."""
    out: set[FieldPath] = set()
    parts = _children(obj, names, schema)
    if not parts:
        if path:
            out.add(path)
        return out
    for element, child, child_names in parts:
        child_path = (*path, element)
        if _is_item(element):
            out.add(child_path)
        out |= field_set(child, schema, child_names, child_path)
    return out


def _every_path(value: object, schema: FieldSchema, names: str, path: FieldPath) -> set[FieldPath]:
    """A value and everything inside it, containers included: what adding it adds."""
    out = {path}
    for element, child, child_names in _children(value, names, schema) or ():
        out |= _every_path(child, schema, child_names, (*path, element))
    return out


@dataclass(frozen=True, slots=True)
class Comparison:
    added: frozenset[FieldPath]
    modified: frozenset[FieldPath]
    removed: frozenset[FieldPath]

    @property
    def changed(self) -> frozenset[FieldPath]:
        return self.added | self.modified


def compare(old: object, new: object, schema: FieldSchema) -> Comparison:
    added: set[FieldPath] = set()
    modified: set[FieldPath] = set()
    removed: set[FieldPath] = set()

    def walk(before: object, after: object, names: str, path: FieldPath) -> None:
        after_parts = _children(after, names, schema)
        if before is _MISSING and path[-1].startswith("f:") and names in schema.present and after_parts is not None:
            before = type(after)()  # a container the empty object has: only its contents are added
        before_parts = _children(before, names, schema) if before is not _MISSING else None
        if before is _MISSING:
            added.update(_every_path(after, schema, names, path))
            return
        if before_parts is None or after_parts is None or type(before) is not type(after):
            if before != after:
                modified.add(path)
            return
        old_children = {element: (child, child_names) for element, child, child_names in before_parts}
        for element, child, child_names in after_parts:
            previous = old_children.pop(element, (_MISSING, child_names))[0]
            walk(previous, child, child_names, (*path, element))
        for element, (child, child_names) in old_children.items():
            removed.update(_every_path(child, schema, child_names, (*path, element)))

    walk(old, new, "", ())
    return Comparison(frozenset(added), frozenset(modified), frozenset(removed))


# --- merging and removing -----------------------------------------------------------------------------


def merge(live: object, config: object, schema: FieldSchema, names: str = "") -> object:
    """The applied configuration merged into the live object: maps merge key by key, keyed lists and
    sets item by item (the configuration's order winning), anything else is replaced."""
    config_parts = _children(config, names, schema)
    live_parts = _children(live, names, schema) if type(live) is type(config) else None
    if config_parts is None or live_parts is None:
        return copy.deepcopy(config)
    if isinstance(config, dict):
        result = dict(live)  # type: ignore[call-overload]
        for key, value in config.items():
            if value is None:
                result.pop(key, None)  # an applied null: the field is the applier's, and empty
            else:
                result[key] = merge(result.get(key, _MISSING), value, schema, _child_names(names, key))
        return result
    live_items = {element: child for element, child, _ in live_parts}
    config_items = {element: child for element, child, _ in config_parts}
    merged_items = {
        element: merge(live_items.get(element, _MISSING), child, schema, names) for element, child in config_items.items()
    }
    return [merged_items.get(element, live_items.get(element)) for element in _interleave(list(live_items), list(config_items))]


def _interleave(live: list[str], config: list[str]) -> list[str]:
    """One order for the items of two lists: each list's own order kept, the configuration's winning
    where the two disagree."""
    in_live, in_config = set(live), set(config)
    out: list[str] = []
    emitted: set[str] = set()
    i = j = 0
    while i < len(live) or j < len(config):
        if i < len(live) and live[i] in emitted:
            i += 1
        elif i < len(live) and (j == len(config) or live[i] not in in_config):
            out.append(live[i])
            i += 1
        elif i < len(live) and live[i] == config[j]:
            out.append(config[j])
            emitted.add(config[j])
            i, j = i + 1, j + 1
        elif i < len(live) and config[j] not in in_live:
            out.append(config[j])
            j += 1
        else:
            out.append(config[j])
            emitted.add(config[j])
            j += 1
    return out


def remove_fields(obj: object, paths: set[FieldPath], schema: FieldSchema, names: str = "", path: FieldPath = ()) -> object:
    """The object without the given fields; maps and lists emptied by the removal go with them."""
    parts = _children(obj, names, schema)
    if parts is None:
        return obj
    kept: list[tuple[str, object]] = []
    for element, child, child_names in parts:
        child_path = (*path, element)
        if child_path in paths:
            continue
        pruned = remove_fields(child, paths, schema, child_names, child_path)
        emptied = pruned is not child and isinstance(pruned, dict | list) and not pruned
        if not emptied:
            kept.append((element, pruned))
    if len(kept) == len(parts) and all(value is child for (_, value), (_, child, _) in zip(kept, parts, strict=True)):
        return obj
    if isinstance(obj, dict):
        return {element[2:]: value for element, value in kept}
    return [value for _, value in kept]


# --- managedFields ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagedEntry:
    manager: str
    operation: str
    api_version: str
    time: str
    fields: frozenset[FieldPath]
    subresource: str = ""

    def identity(self) -> tuple[str, str, str, str]:
        """Apply entries are one per manager; Update entries one per manager and API version."""
        return (self.manager, self.operation, "" if self.operation == APPLY else self.api_version, self.subresource)

    def describe(self) -> str:
        """The manager as kube-apiserver names it in a conflict."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        return text


def encode_fields(paths: set[FieldPath] | frozenset[FieldPath]) -> dict:
    """A set of field paths as `fieldsV1`: nested by element, `.` marking a path that is itself a
    member and has members below it."""
    root: dict = {}
    for path in paths:
        node = root
        for element in path:
            node = node.setdefault(element, {})
        node["."] = {}
    return _finish(root)


def _order(element: str) -> tuple[int, str]:
    return ("f:k:v:i:".find(element[:2]) if element != "." else -1, element)


def _finish(node: dict) -> dict:
    children = {element: _finish(child) for element, child in node.items() if element != "."}
    if "." in node and not children:
        return {}
    out = {".": {}} if "." in node else {}
    for element in sorted(children, key=_order):
        out[element] = children[element]
    return out


def decode_fields(fields: object, path: FieldPath = ()) -> set[FieldPath]:
    if not isinstance(fields, dict):
        raise FieldError("fieldsV1 must be an object")
    if not fields:
        return {path} if path else set()
    out: set[FieldPath] = set()
    for element, child in fields.items():
        if element == ".":
            out.add(path)
        elif isinstance(element, str) and element[:2] in ("f:", "k:", "v:", "i:"):
            out |= decode_fields(child, (*path, element))
        else:
            raise FieldError(f"fieldsV1: unknown path element {element!r}")
    return out


def read_managed(obj: dict) -> list[ManagedEntry]:
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    if not isinstance(entries, list):
        raise FieldError("metadata.managedFields must be a list")
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise FieldError("metadata.managedFields: every entry must be an object")
        operation = entry.get("operation", "")
        if operation not in (APPLY, UPDATE):
            raise FieldError(f"metadata.managedFields: operation must be Apply or Update, not {operation!r}")
        out.append(
            ManagedEntry(
                str(entry.get("manager", "")),
                operation,
                str(entry.get("apiVersion", "")),
                str(entry.get("time", "")),
                frozenset(decode_fields(entry.get("fieldsV1") or {})),
                str(entry.get("subresource", "")),
            )
        )
    return out


def write_managed(entries: list[ManagedEntry]) -> list[dict]:
    """Entries as kube-apiserver lists them: Apply before Update, then by time, manager, version."""
    ordered = sorted(entries, key=lambda e: (e.operation, e.time, e.manager, e.api_version, e.subresource))
    out = []
    for entry in ordered:
        encoded = {"manager": entry.manager, "operation": entry.operation, "apiVersion": entry.api_version, "time": entry.time,
                   "fieldsType": "FieldsV1", "fieldsV1": encode_fields(entry.fields)}
        if entry.subresource:
            encoded["subresource"] = entry.subresource
        out.append(encoded)
    return out


def _ownable(paths: frozenset[FieldPath] | set[FieldPath], subresource: str) -> frozenset[FieldPath]:
    """What a write through the main resource or a subresource may own: the main resource never owns
    status, the status subresource only status (the fields each one resets), the server's fields nobody."""
    if subresource == "status":
        return frozenset(p for p in paths if p[:1] == ("f:status",) and len(p) > 1)
    return frozenset(p for p in paths if p and p[:1] != ("f:status",) and p[:2] not in _STRIPPED and p[:1] not in _STRIPPED)


def _settle(entries: list[ManagedEntry], mine: ManagedEntry, taken: frozenset[FieldPath], removed: frozenset[FieldPath]) -> list[ManagedEntry]:
    """`mine` replaces its earlier entry; every other manager loses what was taken from it and what no
    longer exists; managers left owning nothing are dropped."""
    out = []
    for entry in entries:
        if entry.identity() == mine.identity():
            continue
        fields = entry.fields - taken - removed
        if fields:
            out.append(entry if fields == entry.fields else replace(entry, fields=fields))
    if mine.fields:
        out.append(mine)
    return _cap_updaters(out)


def _cap_updaters(entries: list[ManagedEntry]) -> list[ManagedEntry]:
    """At most MAX_UPDATE_MANAGERS Update entries, as kube-apiserver keeps them: past that, the oldest
    are merged, per API version, into one `ancient-changes` entry that takes the time of the newest it
    holds."""
    updaters = sorted((e for e in entries if e.operation == UPDATE), key=lambda e: e.time)
    excess = len(updaters) - MAX_UPDATE_MANAGERS
    if excess <= 0:
        return entries
    first: dict[str, ManagedEntry] = {}
    buckets: dict[str, ManagedEntry] = {}
    merged: set[tuple[str, str, str, str]] = set()
    for entry in updaters:
        if excess <= 0:
            break
        version = entry.api_version
        if version not in first:
            first[version] = entry
            continue
        bucket = buckets.get(version) or ManagedEntry(ANCIENT_CHANGES, UPDATE, version, "", first[version].fields)
        merged |= {entry.identity(), first[version].identity()}
        buckets[version] = replace(bucket, fields=bucket.fields | entry.fields, time=entry.time)
        excess -= 1
    return [e for e in entries if e.identity() not in merged] + list(buckets.values())


def track_update(
    entries: list[ManagedEntry], old: dict, new: dict, manager: str, api_version: str, now: str, schema: FieldSchema,
    subresource: str = "",
) -> list[ManagedEntry]:
    """The managedFields after an Update by `manager` that turned `old` ({} for a create) into `new`."""
    comparison = compare(old, new, schema)
    changed = _ownable(comparison.changed, subresource)
    if not changed and not comparison.removed:
        return entries
    previous = next((e for e in entries if e.identity() == (manager, UPDATE, api_version, subresource)), None)
    fields = (previous.fields if previous else frozenset()) | changed
    mine = ManagedEntry(manager, UPDATE, api_version, now, fields - comparison.removed, subresource)
    return _settle(entries, mine, changed, comparison.removed)


@dataclass(frozen=True, slots=True)
class Conflict:
    owner: ManagedEntry
    path: FieldPath


class ApplyConflicts(Exception):
    def __init__(self, conflicts: list[Conflict]):
        self.conflicts = conflicts
        super().__init__(conflict_message(conflicts))


def path_string(path: FieldPath) -> str:
    """A field path as kube-apiserver prints it: `.spec.containers[name="web"].image`."""
    out = []
    for element in path:
        kind, text = element[:2], element[2:]
        if kind == "f:":
            out.append(f".{text}")
        elif kind == "k:":
            fields = json.loads(text)
            out.append("[" + ",".join(f"{key}={json.dumps(value)}" for key, value in fields.items()) + "]")
        elif kind == "v:":
            out.append(f"[={text}]")
        else:
            out.append(f"[{text}]")
    return "".join(out)


def conflict_message(conflicts: list[Conflict]) -> str:
    if len(conflicts) == 1:
        only = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {only.owner.describe()}: {path_string(only.path)}"
    by_owner: dict[str, list[str]] = {}
    for conflict in conflicts:
        by_owner.setdefault(conflict.owner.describe(), []).append(path_string(conflict.path))
    lines = []
    for owner in sorted(by_owner):
        lines.append(f"conflicts with {owner}:")
        lines.extend(f"- {path}" for path in by_owner[owner])
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Applied:
    obj: dict
    managed: list[ManagedEntry]


def apply(
    live: dict | None, config: dict, entries: list[ManagedEntry], manager: str, api_version: str, now: str,
    schema: FieldSchema, *, force: bool, subresource: str = "",
) -> Applied:
    """Applies `config` for `manager` to `live` (None: the object does not exist yet). Raises
    `ApplyConflicts` when the apply would change fields other managers own and `force` is false, and
    `FieldError` when the configuration cannot be seen as fields."""
    base = live if live is not None else {}
    merged = merge(base, config, schema)
    assert isinstance(merged, dict)
    applied = _ownable(field_set(config, schema), subresource)
    comparison = compare(base, merged, schema)
    changed = comparison.changed | (comparison.removed & applied)  # an applied null changes its field too
    conflicts = sorted(
        (Conflict(entry, path) for entry in entries if entry.identity() != (manager, APPLY, "", subresource)
         for path in entry.fields & changed & applied),
        key=lambda c: (c.owner.manager, _path_order(c.path)),
    )
    if conflicts and not force:
        raise ApplyConflicts(conflicts)
    previous = next((e for e in entries if e.identity() == (manager, APPLY, "", subresource)), None)
    unchanged = previous is not None and previous.fields == applied and not changed
    mine = ManagedEntry(manager, APPLY, api_version, previous.time if unchanged and previous else now, applied, subresource)
    settled = _settle(entries, mine, changed & applied, comparison.removed)
    if previous is not None:
        owned = set().union(*(e.fields for e in settled))
        dropped = {p for p in previous.fields - applied if not any(o[: len(p)] == p for o in owned)}
        if dropped:
            merged = remove_fields(merged, dropped, schema)  # type: ignore[assignment]
    return Applied(merged, settled)  # type: ignore[arg-type]


def _path_order(path: FieldPath) -> tuple[tuple[int, str], ...]:
    return tuple(_order(element) for element in path)

