"""Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), for the kinds
whose typed clients send it (kubectl 1.32's `create rolebinding` and `create clusterrolebinding`).

A body is the magic `k8s\\x00` then a runtime.Unknown message: its TypeMeta (apiVersion, kind) and the
object's own message in `raw`. Decoding is pure and goes by each kind's field numbers from Kubernetes'
generated.proto; it gives the object as JSON would (empty strings, zero numbers and empty messages left
out, as Go's omitempty leaves them), or raises `ProtobufError` (ValueError). Answers stay JSON, which
those clients accept too.
"""

from __future__ import annotations

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


# A message's fields: number -> (JSON name, type, repeated). A type is "string", "int", "map" (string to
# string) or another message's fields.
Fields = dict[int, tuple[str, object, bool]]

_TYPE_META: Fields = {1: ("apiVersion", "string", False), 2: ("kind", "string", False)}
_UNKNOWN: Fields = {1: ("typeMeta", _TYPE_META, False), 2: ("raw", "bytes", False),
                    3: ("contentEncoding", "string", False), 4: ("contentType", "string", False)}
_OBJECT_META: Fields = {1: ("name", "string", False), 2: ("generateName", "string", False),
                        3: ("namespace", "string", False), 5: ("uid", "string", False),
                        6: ("resourceVersion", "string", False), 11: ("labels", "map", False),
                        12: ("annotations", "map", False), 14: ("finalizers", "string", True)}
_SUBJECT: Fields = {1: ("kind", "string", False), 2: ("apiGroup", "string", False), 3: ("name", "string", False),
                    4: ("namespace", "string", False)}
_ROLE_REF: Fields = {1: ("apiGroup", "string", False), 2: ("kind", "string", False), 3: ("name", "string", False)}
_POLICY_RULE: Fields = {1: ("verbs", "string", True), 2: ("apiGroups", "string", True),
                        3: ("resources", "string", True), 4: ("resourceNames", "string", True),
                        5: ("nonResourceURLs", "string", True)}
_REQUIREMENT: Fields = {1: ("key", "string", False), 2: ("operator", "string", False), 3: ("values", "string", True)}
_LABEL_SELECTOR: Fields = {1: ("matchLabels", "map", False), 2: ("matchExpressions", _REQUIREMENT, True)}
_BINDING: Fields = {1: ("metadata", _OBJECT_META, False), 2: ("subjects", _SUBJECT, True),
                    3: ("roleRef", _ROLE_REF, False)}
_ROLE: Fields = {1: ("metadata", _OBJECT_META, False), 2: ("rules", _POLICY_RULE, True),
                 3: ("aggregationRule", {1: ("clusterRoleSelectors", _LABEL_SELECTOR, True)}, False)}

KINDS: dict[str, Fields] = {"RoleBinding": _BINDING, "ClusterRoleBinding": _BINDING, "Role": _ROLE,
                            "ClusterRole": _ROLE}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ProtobufError("truncated or overlong varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (number, value) pairs of a message: ints for varints, bytes for length-delimited fields."""
    found: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            found.append((number, value))
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise ProtobufError("a field runs past the end of its message")
            found.append((number, data[at:at + length]))
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    if at != len(data):
        raise ProtobufError("truncated message")
    return found


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("a string field is not length-delimited")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ProtobufError("a string field is not UTF-8") from None


def _message(data: bytes, fields: Fields) -> dict:
    obj: dict = {}
    for number, value in _fields(data):
        if number not in fields:
            continue  # a field podnet does not keep (status, server-set timestamps)
        name, kind, repeated = fields[number]
        if kind == "map":
            entry = dict(_fields(value if isinstance(value, bytes) else b""))
            obj.setdefault(name, {})[_text(entry.get(1, b""))] = _text(entry.get(2, b""))
            continue
        if kind == "int":
            item: object = value if isinstance(value, int) else 0
        elif kind in ("string", "bytes"):
            item = _text(value) if kind == "string" else value
        else:
            if not isinstance(value, bytes):
                raise ProtobufError(f"{name} is not a message")
            item = _message(value, kind)  # type: ignore[arg-type]
        if repeated:
            obj.setdefault(name, []).append(item)
        elif item not in ("", 0, {}, b""):
            obj[name] = item
    return obj


def decode(body: bytes) -> dict:
    """The object a protobuf request body holds, with its apiVersion and kind."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with Kubernetes' protobuf magic")
    unknown = _message(body[len(MAGIC):], _UNKNOWN)
    type_meta = unknown.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in KINDS:
        raise ProtobufError(f'podnet does not decode protobuf for kind "{kind}"; send JSON')
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind} | _message(unknown.get("raw", b""), KINDS[kind])
