"""A custom resource's OpenAPI v3 schema, as apiextensions-apiserver applies it. Pure: dicts in, dicts and
causes out.

- `structural_errors(schema, path)`: why a CRD's schema is not structural, or uses what CRDs forbid, in
  kube-apiserver's words (`...properties[spec].type: Required value: must not be empty for specified object
  fields`).
- `prune(schema, obj)`: the object without the fields the schema does not specify (unless
  `x-kubernetes-preserve-unknown-fields` keeps them), and the paths of those dropped, for fieldValidation.
- `default(schema, obj)`: fills in `default`s of absent fields and drops nulls the schema does not allow
  (a null with a default takes the default), as v1 CRDs do before validation.
- `validate(schema, obj)`: the field errors of an object, worded as kube-openapi's validator words them
  (`spec.replicas: Invalid value: "x": spec.replicas in body must be of type integer: "x"`).

`apiVersion`, `kind` and `metadata` at the root, and in embedded resources, are the server's to check:
pruning keeps them and validation skips metadata (ObjectMeta's own validation judges it).
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import math
import re

from podnet.apiserver.status import Cause
from podnet.apiserver.validation import Errors

_TYPES = ("array", "boolean", "integer", "number", "object", "string")
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")
# What an anyOf may say when x-kubernetes-int-or-string allows a type-less schema.
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
# Keywords a v1 CRD schema may not use at all (specStandardValidatorV3), with kube-apiserver's reason.
_UNSUPPORTED = (
    ("id", "id is not supported"),
    ("additionalItems", "additionalItems is not supported"),
    ("patternProperties", "patternProperties is not supported"),
    ("definitions", "definitions is not supported"),
    ("dependencies", "dependencies is not supported"),
    ("$ref", "$ref is not supported"),
)
# Inside allOf/anyOf/oneOf/not: what only the structure itself may say (validateNestedValueValidation).
_NESTED_FORBIDDEN = (
    ("type", "must be empty to be structural"),
    ("additionalProperties", "must be undefined to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    ("externalDocs", "must be undefined to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
)
_JUNCTORS = ("allOf", "anyOf", "oneOf")


def _key(path: str, name: str) -> str:
    return f"{path}[{name}]"


def _schemas(value: object) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _additional(schema: dict) -> dict | None:
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


# --- structural ---------------------------------------------------------------------------------------


def structural_errors(schema: dict, path: str) -> list[Cause]:
    """Why `schema` (a CRD version's openAPIV3Schema, at `path`) cannot serve: sorted, as kube-apiserver
    sorts them."""
    errors = Errors()
    _check_keywords(errors, schema, path)
    _check_structure(errors, schema, path, "root")
    return sorted(errors.causes, key=lambda c: f"{c.field}: {c.message}")


def _check_keywords(errors: Errors, schema: dict, path: str) -> None:
    """What CRD schemas forbid anywhere (ValidateCustomResourceDefinitionOpenAPISchema)."""
    for keyword, reason in _UNSUPPORTED:
        if schema.get(keyword) not in (None, "", {}, []):
            errors.forbidden(f"{path}.{keyword}", reason)
    if schema.get("type") == "null":
        errors.forbidden(f"{path}.type", "type cannot be set to null, use nullable as an alternative")
    if schema.get("uniqueItems") is True:
        errors.forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to true since the runtime complexity becomes quadratic")
    if isinstance(schema.get("items"), list):
        errors.forbidden(f"{path}.items", "items must be a schema object and not an array")
    additional = schema.get("additionalProperties")
    if additional is not None and schema.get("properties") and (additional is False or isinstance(additional, dict)):
        errors.forbidden(f"{path}.additionalProperties", "additionalProperties and properties are mutual exclusive")
    if "pattern" in schema:
        try:
            re.compile(str(schema["pattern"]))
        except re.error as e:
            errors.invalid(f"{path}.pattern", schema["pattern"], f"must be a valid regular expression, but isn't: {e}")
    if schema.get("type") is not None and schema.get("type") not in _TYPES:
        errors.not_supported(f"{path}.type", schema["type"], _TYPES)
    children = [(f"{path}.properties", name, sub) for name, sub in (schema.get("properties") or {}).items()]
    for prefix, name, sub in children:
        if isinstance(sub, dict):
            _check_keywords(errors, sub, _key(prefix, name))
    if isinstance(schema.get("items"), dict):
        _check_keywords(errors, schema["items"], f"{path}.items")
    if (additional_schema := _additional(schema)) is not None:
        _check_keywords(errors, additional_schema, f"{path}.additionalProperties")
    for junctor in _JUNCTORS:
        for i, sub in enumerate(_schemas(schema.get(junctor))):
            _check_keywords(errors, sub, f"{path}.{junctor}[{i}]")
    if isinstance(schema.get("not"), dict):
        _check_keywords(errors, schema["not"], f"{path}.not")


def _check_structure(errors: Errors, schema: dict, path: str, level: str) -> None:
    """validateStructuralInvariants: a type everywhere, value validations that only restrict."""
    schema_type = schema.get("type")
    if schema_type == "array" and not isinstance(schema.get("items"), dict):
        errors.required(f"{path}.items", "must be specified")
    if isinstance(schema.get("items"), dict):
        _check_structure(errors, schema["items"], f"{path}.items", "item")
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            _check_structure(errors, sub, _key(f"{path}.properties", name), "field")
    if schema.get("additionalProperties") is not None:
        if level == "root":
            errors.forbidden(f"{path}.additionalProperties", "must not be used at the root")
        if (additional := _additional(schema)) is not None:
            _check_structure(errors, additional, f"{path}.additionalProperties", "field")
    int_or_string = schema.get("x-kubernetes-int-or-string") is True
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    embedded = schema.get("x-kubernetes-embedded-resource") is True
    if int_or_string and preserve:
        errors.invalid(f"{path}.x-kubernetes-preserve-unknown-fields", True, "must be false if x-kubernetes-int-or-string is true")
    if int_or_string and embedded:
        errors.invalid(f"{path}.x-kubernetes-embedded-resource", True, "must be false if x-kubernetes-int-or-string is true")
    _check_value_validation(errors, schema, path, int_or_string)
    if embedded and schema_type != "object":
        if not schema_type:
            errors.required(f"{path}.type", "must be object if x-kubernetes-embedded-resource is true")
        else:
            errors.invalid(f"{path}.type", schema_type, "must be object if x-kubernetes-embedded-resource is true")
    elif not schema_type and not int_or_string and not preserve:
        where = {"root": "at the root", "item": "for specified array items", "field": "for specified object fields"}[level]
        errors.required(f"{path}.type", f"must not be empty {where}")
    if embedded and schema.get("additionalProperties") is not None:
        errors.forbidden(f"{path}.additionalProperties", "must not be used if x-kubernetes-embedded-resource is set")
    if level == "root" and schema_type and schema_type != "object":
        errors.invalid(f"{path}.type", schema_type, "must be object at the root")
    properties = schema.get("properties") or {}
    if level == "root" or embedded:
        for name in ("kind", "apiVersion"):
            sub = properties.get(name)
            if isinstance(sub, dict) and sub.get("type") != "string":
                errors.invalid(f"{_key(f'{path}.properties', name)}.type", sub.get("type") or "", "must be string")
    metadata = properties.get("metadata")
    if isinstance(metadata, dict):
        _check_metadata(errors, metadata, _key(f"{path}.properties", "metadata"), level == "root" or embedded, level)
    if embedded and not preserve and not properties:
        errors.required(f"{path}.properties",
                        "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields")


def _check_metadata(errors: Errors, metadata: dict, path: str, check_type: bool, level: str) -> None:
    if check_type and metadata.get("type") != "object":
        errors.invalid(f"{path}.type", metadata.get("type") or "", "must be object")
    if level != "root":
        return
    rest = {k: v for k, v in metadata.items() if k not in ("type", "default", "description")}
    properties = rest.pop("properties", None) or {}
    if set(properties) - {"name", "generateName"} or rest:
        errors.forbidden(path, "must not specify anything other than name and generateName, but metadata is implicitly specified")


def _check_value_validation(errors: Errors, schema: dict, path: str, int_or_string: bool) -> None:
    any_of = schema.get("anyOf")
    skip_any_of = int_or_string and any_of == _INT_OR_STRING_ANY_OF
    all_of = _schemas(schema.get("allOf"))
    skip_first_all_of = int_or_string and bool(all_of) and all_of[0].get("anyOf") == _INT_OR_STRING_ANY_OF
    if not skip_any_of:
        for i, sub in enumerate(_schemas(any_of)):
            _check_nested(errors, sub, f"{path}.anyOf[{i}]", skip_any_of=False)
    for i, sub in enumerate(all_of):
        _check_nested(errors, sub, f"{path}.allOf[{i}]", skip_any_of=skip_first_all_of and i == 0)
    for i, sub in enumerate(_schemas(schema.get("oneOf"))):
        _check_nested(errors, sub, f"{path}.oneOf[{i}]", skip_any_of=False)
    if isinstance(schema.get("not"), dict):
        _check_nested(errors, schema["not"], f"{path}.not", skip_any_of=False)


def _check_nested(errors: Errors, schema: dict, path: str, *, skip_any_of: bool) -> None:
    _check_value_validation(errors, schema if not skip_any_of else {k: v for k, v in schema.items() if k != "anyOf"},
                            path, False)
    if isinstance(schema.get("items"), dict):
        _check_nested(errors, schema["items"], f"{path}.items", skip_any_of=False)
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            _check_nested(errors, sub, _key(f"{path}.properties", name), skip_any_of=False)
    for keyword, reason in _NESTED_FORBIDDEN:
        if schema.get(keyword) not in (None, False, "", [], {}) or (keyword == "default" and "default" in schema):
            errors.forbidden(f"{path}.{keyword}", reason)
    if "metadata" in (schema.get("properties") or {}):
        errors.forbidden(_key(f"{path}.properties", "metadata"), "must not be specified in a nested context")


# --- pruning ------------------------------------------------------------------------------------------


def prune(schema: dict, obj: dict) -> tuple[dict, list[str]]:
    """The object with unspecified fields dropped, and the dropped fields' paths in document order."""
    dropped: list[str] = []
    pruned = _prune(obj, schema, "", dropped, root=True)
    return pruned, dropped  # type: ignore[return-value]


def _prune(value: object, schema: dict, path: str, dropped: list[str], *, root: bool = False) -> object:
    if isinstance(value, list):
        items = schema.get("items")
        if not isinstance(items, dict):
            return value
        return [_prune(item, items, f"{path}[{i}]", dropped) for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    kept_as_is = _ROOT_FIELDS if root or schema.get("x-kubernetes-embedded-resource") is True else ()
    result = {}
    for name, member in value.items():
        member_path = f"{path}.{name}" if path else name
        if name in kept_as_is:  # the server's: metadata is decoded as ObjectMeta, whatever the schema says
            result[name] = member
        elif name in properties and isinstance(properties[name], dict):
            result[name] = _prune(member, properties[name], member_path, dropped)
        elif isinstance(additional, dict):
            result[name] = _prune(member, additional, member_path, dropped)
        elif preserve or additional is True:
            result[name] = member
        else:
            dropped.append(member_path)
    return result


# --- defaulting ---------------------------------------------------------------------------------------


def default(schema: dict, obj: dict) -> dict:
    """The object with the schema's defaults filled in and disallowed nulls gone (a new object)."""
    return _default(copy.deepcopy(obj), schema)  # type: ignore[return-value]


def _default(value: object, schema: dict) -> object:
    if isinstance(value, list):
        items = schema.get("items")
        return [_default(item, items) for item in value] if isinstance(items, dict) else value
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties") or {}
    additional = _additional(schema)
    for name in list(value):
        sub = properties.get(name) if name in properties else additional
        if not isinstance(sub, dict):
            continue
        if value[name] is None and not sub.get("nullable"):
            if "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            else:
                del value[name]
                continue
        value[name] = _default(value[name], sub)
    for name, sub in properties.items():
        if name not in value and isinstance(sub, dict) and "default" in sub:
            value[name] = _default(copy.deepcopy(sub["default"]), sub)
    return value


# --- validation ---------------------------------------------------------------------------------------


def validate(schema: dict, obj: dict) -> list[Cause]:
    """The field errors of a pruned, defaulted object (metadata aside)."""
    errors = Errors()
    _validate(errors, obj, schema, "", root=True)
    return errors.causes


def _show(value: object) -> str:
    """A value as kube-openapi's messages quote it (%q of its JSON form for what is not a string)."""
    return json.dumps(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _type_matches(value: object, schema_type: str) -> bool:
    if schema_type == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if schema_type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, {"string": str, "boolean": bool, "array": list, "object": dict}[schema_type])


def _fails(schema: dict, value: object) -> bool:
    errors = Errors()
    _validate(errors, value, schema, "")
    return bool(errors.causes)


def _validate(errors: Errors, value: object, schema: dict, path: str, *, root: bool = False) -> None:
    name = path or "."
    if value is None:
        if schema.get("nullable") or schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("type"):
            return
        if schema.get("type") or schema.get("x-kubernetes-int-or-string"):
            expected = "integer,string" if schema.get("x-kubernetes-int-or-string") else schema["type"]
            errors.invalid(path, None, f"{name} in body must be of type {expected}: \"null\"")
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _type_matches(value, "integer")):
            errors.invalid(path, value, f"{name} in body must be of type integer,string: {_show(value)}")
            return
    elif (schema_type := schema.get("type")) in _TYPES and not _type_matches(value, schema_type):
        errors.invalid(path, value, f"{name} in body must be of type {schema_type}: {_show(value)}")
        return
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        supported = tuple(v if isinstance(v, str) else json.dumps(v) for v in schema["enum"])
        errors.not_supported(path, value, supported)
    if isinstance(value, str):
        _validate_string(errors, value, schema, path, name)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(errors, value, schema, path, name)
    elif isinstance(value, list):
        _validate_array(errors, value, schema, path, name)
    elif isinstance(value, dict):
        _validate_object(errors, value, schema, path, name, root=root)
    _validate_junctors(errors, value, schema, path, name)


def _is_cidr(value: str) -> bool:
    address, slash, prefix = value.partition("/")
    if not slash or not prefix.isdigit():
        return False
    try:
        ipaddress.ip_network(value, strict=False)  # Go's ParseCIDR takes host bits too
    except ValueError:
        return False
    return bool(address)


def _is_datetime(value: str) -> bool:
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return "T" in value.upper()


def _is_ip(value: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(value).version == version
    except ValueError:
        return False


# The string formats kube-apiserver checks in custom resources (others, like int32 or idn-hostname, are not).
_FORMATS = {
    "ipv4": lambda v: _is_ip(v, 4),
    "ipv6": lambda v: _is_ip(v, 6),
    "cidr": _is_cidr,
    "date-time": _is_datetime,
    "datetime": _is_datetime,
    "date": lambda v: re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is not None and _is_datetime(v + "T00:00:00Z"),
    "uuid": lambda v: re.fullmatch(r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", v) is not None,
    "mac": lambda v: re.fullmatch(r"(?i)[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}", v) is not None,
    "hostname": lambda v: len(v) <= 255 and re.fullmatch(
        r"(?i)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*\.?", v) is not None,
    "byte": lambda v: re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", v) is not None and len(v) % 4 == 0,
}


def _validate_string(errors: Errors, value: str, schema: dict, path: str, name: str) -> None:
    check = _FORMATS.get(str(schema.get("format")))
    if check is not None and not check(value):
        errors.invalid(path, value, f"{name} in body must be of type {schema['format']}: {_show(value)}")
    max_length, min_length = schema.get("maxLength"), schema.get("minLength")
    if isinstance(max_length, int) and len(value) > max_length:
        errors.causes.append(Cause(path, "FieldValueTooLong", f"Too long: may not be longer than {max_length}"))
    if isinstance(min_length, int) and len(value) < min_length:
        errors.invalid(path, value, f"{name} in body should be at least {min_length} chars long")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, value) is not None
        except re.error:
            matched = True  # refused when the CRD was written
        if not matched:
            errors.invalid(path, value, f"{name} in body should match '{pattern}'")


def _validate_number(errors: Errors, value: float, schema: dict, path: str, name: str) -> None:
    maximum, minimum = schema.get("maximum"), schema.get("minimum")
    if isinstance(maximum, int | float):
        if schema.get("exclusiveMaximum") and value >= maximum:
            errors.invalid(path, value, f"{name} in body should be less than {_number(maximum)}")
        elif value > maximum:
            errors.invalid(path, value, f"{name} in body should be less than or equal to {_number(maximum)}")
    if isinstance(minimum, int | float):
        if schema.get("exclusiveMinimum") and value <= minimum:
            errors.invalid(path, value, f"{name} in body should be greater than {_number(minimum)}")
        elif value < minimum:
            errors.invalid(path, value, f"{name} in body should be greater than or equal to {_number(minimum)}")
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0 and not math.isclose(value / multiple, round(value / multiple)):
        errors.invalid(path, value, f"{name} in body should be a multiple of {_number(multiple)}")


def _validate_array(errors: Errors, value: list, schema: dict, path: str, name: str) -> None:
    max_items, min_items = schema.get("maxItems"), schema.get("minItems")
    if isinstance(max_items, int) and len(value) > max_items:
        errors.too_many(path, len(value), max_items)
    if isinstance(min_items, int) and len(value) < min_items:
        errors.invalid(path, value, f"{name} in body should have at least {min_items} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(errors, item, items, f"{path}[{i}]")
    if schema.get("x-kubernetes-list-type") in ("set", "map"):
        _validate_unique(errors, value, schema, path)


def _validate_unique(errors: Errors, value: list, schema: dict, path: str) -> None:
    keys = schema.get("x-kubernetes-list-map-keys") or []
    seen: list[object] = []
    for i, item in enumerate(value):
        identity = ({k: item.get(k) for k in keys} if schema.get("x-kubernetes-list-type") == "map" and isinstance(item, dict)
                    else item)
        if identity in seen:
            errors.duplicate(f"{path}[{i}]", identity)
        seen.append(identity)


def _validate_object(errors: Errors, value: dict, schema: dict, path: str, name: str, *, root: bool) -> None:
    for required in schema.get("required") or []:
        if required not in value:
            errors.required(f"{path}.{required}" if path else required)
    max_properties, min_properties = schema.get("maxProperties"), schema.get("minProperties")
    if isinstance(max_properties, int) and len(value) > max_properties:
        errors.too_many(path, len(value), max_properties)
    if isinstance(min_properties, int) and len(value) < min_properties:
        errors.invalid(path, value, f"{name} in body should have at least {min_properties} properties")
    properties = schema.get("properties") or {}
    additional = _additional(schema)
    for member, member_value in value.items():
        if root and member == "metadata":
            continue
        sub = properties.get(member, additional)
        if isinstance(sub, dict):
            _validate(errors, member_value, sub, f"{path}.{member}" if path else member)


def _validate_junctors(errors: Errors, value: object, schema: dict, path: str, name: str) -> None:
    for sub in _schemas(schema.get("allOf")):
        _validate(errors, value, sub, path)
    any_of = _schemas(schema.get("anyOf"))
    if any_of and not schema.get("x-kubernetes-int-or-string") and all(_fails(sub, value) for sub in any_of):
        errors.invalid(path, value, f"{name} in body must validate at least one schema (anyOf)")
    one_of = _schemas(schema.get("oneOf"))
    if one_of and sum(not _fails(sub, value) for sub in one_of) != 1:
        errors.invalid(path, value, f"{name} in body must validate one and only one schema (oneOf)")
    if isinstance(schema.get("not"), dict) and not _fails(schema["not"], value):
        errors.invalid(path, value, f"{name} in body must not validate the schema (not)")
