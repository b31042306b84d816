"""Decoding a request body against a kind's schema, as kube-apiserver decodes it into its Go types.

kube-apiserver decodes JSON into typed structs: a value of the wrong type fails the request
(`json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of
type int32`), and fields the type does not have, or has twice, are dropped, each reported in document
order as `unknown field "spec.foo"` / `duplicate field "metadata.name"` for the fieldValidation
directive to turn into an error, a warning or nothing. `decode` does the same over the kind's OpenAPI
definition: every structural rule comes from the schema, none is written here per kind.

Pure. Duplicates are only visible in the raw JSON, so `parse_json` keeps every member of an object
(`Members`); a body decoded otherwise (YAML, msgpack) goes through `members` first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from podnet.api import base64data
from podnet.api.openapi import REF_PREFIX, definitions

_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_PACKAGES = {_QUANTITY: "resource", "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "intstr"}
# resource.Quantity's own decoding rule (k8s.io/apimachinery/pkg/api/resource, ErrFormatWrong).
_QUANTITY_TEXT = re.compile(r"([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)")
_QUANTITY_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_JSON_TYPES = {"string": str, "integer": int, "number": int | float, "boolean": bool}


class Members(list):
    """A JSON object as written: its (name, value) members in order, repeated names kept."""


def parse_json(body: bytes) -> object:
    return json.loads(body, object_pairs_hook=Members)


def members(value: object) -> object:
    """An already decoded value in `parse_json`'s form."""
    if isinstance(value, dict):
        return Members((k, members(v)) for k, v in value.items())
    if isinstance(value, list):
        return [members(item) for item in value]
    return value


def plain(value: object) -> object:
    """`parse_json`'s form back to dicts (a repeated member: the last one wins, as in Go)."""
    if isinstance(value, Members):
        return {k: plain(v) for k, v in value}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


@dataclass(slots=True)
class Decoded:
    value: object = None
    problems: list[str] = field(default_factory=list)  # unknown and duplicate fields, in document order
    type_error: str | None = None  # the first value of the wrong type, in Go's words


def _go_package(definition: str) -> str:
    return _PACKAGES.get(definition, definition.split(".")[-2])


def _go_type(schema: dict) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref[len(REF_PREFIX):]
        return f"{_go_package(name)}.{name.rsplit('.', 1)[1]}"
    schema_type = schema.get("type")
    if schema_type == "array":
        return "[]" + _go_type(schema.get("items") or {})
    if schema_type == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map[string]" + _go_type(schema["additionalProperties"])
    if schema_type == "integer":
        return schema.get("format") or "int"
    return {"string": "string", "boolean": "bool", "number": "float64"}.get(str(schema_type), "interface {}")


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) and not isinstance(value, Members) else "object"


class _Decoder:
    def __init__(self) -> None:
        self.result = Decoded()
        self._unknown: set[str] = set()

    def mismatch(self, value: object, schema: dict, struct: str, field_path: str) -> None:
        if self.result.type_error is None:
            what = _json_kind(value)
            if what == "number" and isinstance(value, float) and schema.get("type") == "integer":
                what = f"number {value:g}"
            self.result.type_error = (
                f"json: cannot unmarshal {what} into Go struct field {struct}.{field_path} of type {_go_type(schema)}"
            )

    def value(self, value: object, schema: dict, struct: str, field_path: str, path: str) -> object:
        if value is None:
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref[len(REF_PREFIX):]
            target = definitions()[name]
            if name == _QUANTITY and isinstance(value, str) and not _QUANTITY_TEXT.fullmatch(value):
                self.result.type_error = self.result.type_error or _QUANTITY_ERROR
            inner = name.rsplit(".", 1)[1] if "properties" in target else struct
            return self._typed(value, target, schema, struct, field_path, path, inner)
        return self._typed(value, schema, schema, struct, field_path, path, struct)

    def _typed(
        self, value: object, schema: dict, named: dict, struct: str, field_path: str, path: str, inner: str
    ) -> object:
        """`schema` is what the value must be; `named` is how Go names its type (the reference, if any);
        `struct` is the Go struct holding the field, `inner` the one the value itself is."""
        schema_type = schema.get("type")
        if "properties" in schema or schema_type == "object":
            if not isinstance(value, Members):
                self.mismatch(value, named, struct, field_path)
                return value
            return self._object(value, schema, inner, field_path, path)
        if schema_type == "array":
            if not isinstance(value, list) or isinstance(value, Members):
                self.mismatch(value, named, struct, field_path)
                return value
            items = schema.get("items") or {}
            return [self.value(item, items, struct, field_path, f"{path}[{i}]") for i, item in enumerate(value)]
        choices = [choice.get("type") for choice in schema.get("oneOf", [])] or [schema_type]
        if not all(choice in _JSON_TYPES for choice in choices):
            return plain(value)  # no type given (RawExtension and the like): anything goes
        ok = not isinstance(value, bool) or "boolean" in choices
        ok = ok and any(isinstance(value, _JSON_TYPES[choice]) for choice in choices)  # type: ignore[arg-type]
        if not ok:
            self.mismatch(value, named, struct, field_path)
        elif schema.get("format") == "byte" and self.result.type_error is None:
            self.result.type_error = base64data.error(value)  # type: ignore[arg-type]
        return value

    def _object(self, value: Members, schema: dict, struct: str, field_path: str, path: str) -> dict:
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is None and not isinstance(additional, dict):
            return plain(value)  # a free-form object (FieldsV1): kept as it is
        decoded: dict = {}
        seen: set[str] = set()
        for name, member in value:
            member_path = f"{path}.{name}" if path else name
            member_field = f"{field_path}.{name}" if field_path else name
            if properties is not None and name in properties:
                if name in seen:
                    self.result.problems.append(f'duplicate field "{member_path}"')
                seen.add(name)
                decoded[name] = self.value(member, properties[name], struct, member_field, member_path)
            elif isinstance(additional, dict):
                if name in seen:
                    self.result.problems.append(f'duplicate field "{member_path}"')
                seen.add(name)
                decoded[name] = self.value(member, additional, struct, field_path, member_path)
            elif member_path not in self._unknown:
                self._unknown.add(member_path)
                self.result.problems.append(f'unknown field "{member_path}"')
        # A null field is the Go zero value, which Kubernetes' types leave out when they encode.
        return {name: member for name, member in decoded.items() if member is not None}


def decode(body: object, definition: str) -> Decoded:
    """Decodes a body (in `parse_json`'s form) as the named definition: the value with unknown fields
    dropped, the unknown and duplicate fields found, and the first type error."""
    decoder = _Decoder()
    struct = definition.rsplit(".", 1)[1]
    decoder.result.value = decoder.value(body, {"$ref": REF_PREFIX + definition}, struct, "", "")
    return decoder.result


def duplicates(value: object, path: str = "") -> list[str]:
    """The repeated members of a document with no schema (a patch), as `duplicate field "a.b"`."""
    found: list[str] = []
    if isinstance(value, Members):
        seen: set[str] = set()
        for name, member in value:
            member_path = f"{path}.{name}" if path else name
            if name in seen:
                found.append(f'duplicate field "{member_path}"')
            seen.add(name)
            found += duplicates(member, member_path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += duplicates(item, f"{path}[{i}]")
    return found


def go_format(value: object) -> str:
    """A decoded JSON value as Go's fmt prints it with %+v (kube-apiserver quotes patches so)."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_format(item) for item in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
