"""The three PATCH bodies kube-apiserver accepts, applied to plain dicts.

- JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, `null` deletes, lists replace.
- Strategic merge patch (`application/strategic-merge-patch+json`): as merge patch, except that the lists
  Kubernetes marks `patchStrategy: merge` merge by their key (containers by name, ports by containerPort
  or port, conditions by type, ...); `$patch: delete|replace|merge`, `$deleteFromPrimitiveList/<field>`,
  `$setElementOrder/<field>` and `$retainKeys` are understood.
- JSON patch (RFC 6902, `application/json-patch+json`): add, remove, replace, move, copy, test.

Pure. A malformed patch raises `PatchError`; a well-formed one that cannot apply to this object (a
failed `test`, a missing path) raises `PatchConflict`.
"""

from __future__ import annotations

import copy
import json


class PatchError(ValueError):
    """The patch document itself is malformed (HTTP 400)."""


class PatchConflict(ValueError):
    """The patch cannot be applied to this object (HTTP 422)."""


class TooManyOperations(PatchError):
    """A JSON patch with more operations than kube-apiserver takes (HTTP 413)."""


# kube-apiserver's bounds on a JSON patch since CVE-2019-1002100: a `copy` of a field into itself doubles
# the object, so thirty operations in a few hundred bytes would build gigabytes. The operations are
# counted before any applies, and the bytes that copies add up are capped (--json-patch-max-copy-bytes).
MAX_JSON_PATCH_OPERATIONS = 10_000
MAX_JSON_PATCH_COPY_BYTES = 3 * 1024 * 1024


# --- merge patch --------------------------------------------------------------------------------------


def merge_patch(target: object, patch: object) -> object:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- strategic merge patch ----------------------------------------------------------------------------

# List fields that merge, by their path from the object root (list indices left out), and the key that
# identifies an item; None marks a list of scalars merged as a set. Paths not listed replace, as lists
# without a patchStrategy do in Kubernetes (NetworkPolicy rules, EndpointSlice endpoints, taints).
_POD_SPEC_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "containers.ports": "containerPort",
    "initContainers.ports": "containerPort",
    "containers.env": "name",
    "initContainers.env": "name",
    "containers.volumeMounts": "mountPath",
    "initContainers.volumeMounts": "mountPath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "ephemeralContainers": "name",
    "containers.volumeDevices": "devicePath",
    "initContainers.volumeDevices": "devicePath",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "schedulingGates": "name",
    "resourceClaims": "name",
}
_METADATA_KEYS: dict[str, str | None] = {"metadata.finalizers": None, "metadata.ownerReferences": "uid"}

# Kinds with a pod template (Deployments, ReplicaSets).
_WORKLOAD_KEYS: dict[str, str | None] = _METADATA_KEYS | {
    f"spec.template.spec.{path}": key for path, key in _POD_SPEC_KEYS.items()} | {"status.conditions": "type"}

MERGE_KEYS: dict[str, dict[str, str | None]] = {
    "Pod": _METADATA_KEYS
    | {f"spec.{path}": key for path, key in _POD_SPEC_KEYS.items()}
    | {"status.conditions": "type", "status.podIPs": "ip", "status.containerStatuses": "name"},
    "Deployment": _WORKLOAD_KEYS,
    "ReplicaSet": _WORKLOAD_KEYS,
    "StatefulSet": _WORKLOAD_KEYS,
    "DaemonSet": _WORKLOAD_KEYS,
    "Job": _WORKLOAD_KEYS,
    "CronJob": _METADATA_KEYS | {f"spec.jobTemplate.spec.template.spec.{path}": key
                                 for path, key in _POD_SPEC_KEYS.items()},
    "Service": _METADATA_KEYS | {"spec.ports": "port", "status.conditions": "type"},
    "Node": _METADATA_KEYS | {"status.conditions": "type", "status.addresses": "type"},
    "Namespace": _METADATA_KEYS | {"status.conditions": "type"},
}

_DIRECTIVE = "$patch"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"
_RETAIN_KEYS = "$retainKeys"


def strategic_merge_patch(target: object, patch: object, kind_name: str) -> object:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _merge_map(target if isinstance(target, dict) else {}, patch, MERGE_KEYS.get(kind_name, _METADATA_KEYS), "")


def _merge_map(target: dict, patch: dict, keys: dict[str, str | None], path: str) -> dict:
    directive = patch.get(_DIRECTIVE)
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != _DIRECTIVE}
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive!r} in map at {path or '.'}")
    result = dict(target)
    retain = patch.get(_RETAIN_KEYS)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError(f"{_RETAIN_KEYS} must be a list")
        result = {k: v for k, v in result.items() if k in retain}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS) or key.startswith(_SET_ORDER):
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            if not isinstance(value, list):
                raise PatchError(f"{key} must be a list")
            current = result.get(field)
            if isinstance(current, list):
                result[field] = [item for item in current if item not in value]
            continue
        child_path = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and value.get(_DIRECTIVE) == "delete":
            result.pop(key, None)  # the map goes, as a null would take it
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = _merge_map(current if isinstance(current, dict) else {}, value, keys, child_path)
        elif isinstance(value, list) and child_path in keys:
            current = result.get(key)
            result[key] = _merge_list(current if isinstance(current, list) else [], value, keys, child_path)
        else:
            result[key] = copy.deepcopy(value)
    for key, order in patch.items():
        if key.startswith(_SET_ORDER):
            field = key[len(_SET_ORDER) :]
            child_path = f"{path}.{field}" if path else field
            if not isinstance(order, list):
                raise PatchError(f"{key} must be a list")
            if isinstance(result.get(field), list) and child_path in keys:
                result[field] = _set_element_order(result[field], order, keys[child_path])
    return result


def _set_element_order(items: list, order: list, merge_key: str | None) -> list:
    """`$setElementOrder`: the items it names take, among the places they hold, the order it gives;
    items it does not name (the server's own) keep their places."""

    def identity(item: object) -> object:
        return item.get(merge_key) if merge_key is not None and isinstance(item, dict) else item

    rank = {}
    for position, entry in enumerate(order):
        rank.setdefault(json.dumps(identity(entry), sort_keys=True), position)
    named = [(rank[k], i) for i, item in enumerate(items) if (k := json.dumps(identity(item), sort_keys=True)) in rank]
    result = list(items)
    for slot, (_, source) in zip(sorted(i for _, i in named), sorted(named), strict=True):
        result[slot] = items[source]
    return result


def _merge_list(target: list, patch: list, keys: dict[str, str | None], path: str) -> list:
    merge_key = keys[path]
    if merge_key is None:  # a set of scalars: union, keeping the existing order
        if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
            return [item for item in patch if not isinstance(item, dict)]
        result = list(target)
        result.extend(item for item in patch if item not in result)
        return result
    for item in patch:
        if isinstance(item, dict) and item.get(_DIRECTIVE) == "replace":
            return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get(_DIRECTIVE) == "replace")]
    result = [copy.deepcopy(item) for item in target]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"{path}: items must be objects with the merge key {merge_key!r}")
        if merge_key not in item:
            raise PatchError(f"{path}: an item has no merge key {merge_key!r}")
        position = next(
            (i for i, existing in enumerate(result) if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]),
            None,
        )
        if item.get(_DIRECTIVE) == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(_merge_map({}, item, keys, path))
        else:
            result[position] = _merge_map(result[position], item, keys, path)
    return result


# --- JSON patch ---------------------------------------------------------------------------------------


def _pointer(path: object) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _index(container: list, token: str, *, for_insert: bool) -> int:
    if for_insert and token == "-":
        return len(container)
    if not (token.isascii() and token.isdigit()) or (len(token) > 1 and token.startswith("0")):
        raise PatchConflict(f"invalid array index {token!r}")
    index = int(token)
    limit = len(container) if for_insert else len(container) - 1
    if index > limit:
        raise PatchConflict(f"array index {index} out of bounds")
    return index


def _parent(doc: object, tokens: list[str], path: str, shared: set[int] | None = None) -> object:
    """The container that holds the last token. Given `shared`, the containers passed on the way that
    a `copy` left in two places are copied first (shallowly), so that writing below one changes only it."""
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchConflict(f"path {path!r} does not exist")
            position: str | int = token
        elif isinstance(node, list):
            position = _index(node, token, for_insert=False)
        else:
            raise PatchConflict(f"path {path!r} does not exist")
        child = node[position]  # type: ignore[index]
        if shared is not None and id(child) in shared:
            child = node[position] = _unshare(child, shared)  # type: ignore[index]
        node = child
    return node


def _unshare(container: object, shared: set[int]) -> object:
    """A shallow copy of a container that is in two places; its own containers are then in two."""
    items = container.values() if isinstance(container, dict) else container
    shared.update(id(item) for item in items if isinstance(item, (dict, list)))  # type: ignore[union-attr]
    return dict(container) if isinstance(container, dict) else list(container)  # type: ignore[call-overload]


def _get(doc: object, path: str) -> object:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchConflict(f"path {path!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_insert=False)]
    raise PatchConflict(f"path {path!r} does not exist")


def _add(doc: object, path: str, value: object, shared: set[int]) -> object:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path, shared)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_insert=True), value)
    else:
        raise PatchConflict(f"path {path!r} does not exist")
    return doc


def _remove(doc: object, path: str, shared: set[int]) -> tuple[object, object]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchConflict("cannot remove the whole document")
    parent = _parent(doc, tokens, path, shared)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchConflict(f"path {path!r} does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, for_insert=False))
    raise PatchConflict(f"path {path!r} does not exist")


def json_patch(target: object, operations: object, *, max_copy_bytes: int = MAX_JSON_PATCH_COPY_BYTES) -> object:
    """Applies RFC 6902 operations to a copy of target.

    A `copy` puts the same value in a second place instead of duplicating it (the containers in two places
    are remembered in `shared` and copied only when a later operation writes below them), so that refusing
    a copy bomb costs as little as the bomb did; the sizes copies add are summed as their JSON would be."""
    if not isinstance(operations, list):
        raise PatchError("a json patch must be a JSON array of operations")
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise TooManyOperations(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(operations)}")
    copied_bytes = 0
    shared: set[int] = set()
    doc = copy.deepcopy(target)
    for number, operation in enumerate(operations):
        if not isinstance(operation, dict) or not isinstance(operation.get("op"), str):
            raise PatchError(f"operation {number} has no op")
        op = operation["op"]
        path = operation.get("path")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"operation {number} ({op}) has no value")
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(operation["value"]), shared)  # type: ignore[arg-type]
        elif op == "remove":
            doc, _ = _remove(doc, path, shared)  # type: ignore[arg-type]
        elif op == "replace":
            _get(doc, path)  # type: ignore[arg-type]  # must exist
            doc, _ = _remove(doc, path, shared) if _pointer(path) else (doc, None)  # type: ignore[arg-type]
            doc = _add(doc, path, copy.deepcopy(operation["value"]), shared)  # type: ignore[arg-type]
        elif op in ("move", "copy"):
            source = operation.get("from")
            if op == "move":
                if isinstance(source, str) and isinstance(path, str) and path.startswith(source + "/"):
                    raise PatchConflict(f"cannot move {source!r} into its own child {path!r}")
                doc, value = _remove(doc, source, shared)  # type: ignore[arg-type]
            else:
                value = _get(doc, source)  # type: ignore[arg-type]
                copied_bytes += _encoded_size(value)
                if copied_bytes > max_copy_bytes:
                    raise PatchConflict(f"Unable to complete the copy, the accumulated size increase of copy is "
                                        f"{copied_bytes}, exceeding the limit {max_copy_bytes}")
                if value is doc:  # the document into itself: a copy of the top, or it would contain itself
                    value = _unshare(doc, shared)
                elif isinstance(value, (dict, list)):
                    shared.add(id(value))
            doc = _add(doc, path, value, shared)  # type: ignore[arg-type]
        elif op == "test":
            if _get(doc, path) != operation["value"]:  # type: ignore[arg-type]
                raise PatchConflict(f"test failed: {path!r} is not {operation['value']!r}")
        else:
            raise PatchError(f"operation {number}: unknown op {op!r}")
    # The caller owns the result: nothing in it may stand in two places any more.
    return json.loads(_compact(doc)) if shared else doc


def _encoded_size(value: object) -> int:
    """The length of value's compact JSON, each container in several places measured once."""
    sizes: dict[int, int] = {}
    stack: list[tuple[object, bool]] = [(value, False)]
    while stack:
        node, measured_children = stack.pop()
        if not isinstance(node, (dict, list)) or id(node) in sizes:
            continue
        items = list(node.values()) if isinstance(node, dict) else node
        if not measured_children:
            stack.append((node, True))
            stack.extend((item, False) for item in items)
            continue
        size = 2 + max(len(items) - 1, 0)
        size += sum(sizes[id(item)] if isinstance(item, (dict, list)) else len(_compact(item)) for item in items)
        if isinstance(node, dict):
            size += sum(len(_compact(key)) + 1 for key in node)
        sizes[id(node)] = size
    return sizes[id(value)] if isinstance(value, (dict, list)) else len(_compact(value))


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
