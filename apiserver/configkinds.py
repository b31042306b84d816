"""ConfigMaps and Secrets as kube-apiserver writes and validates them (pkg/apis/core/v1/conversion.go,
defaults.go; pkg/apis/core/validation ValidateConfigMap, ValidateSecret and their updates).

- A Secret's `stringData` is merged into `data` on every write, its values winning, and is never
  stored: kube-apiserver's internal Secret has no such field. `type` defaults to `Opaque`.
- Keys of `data` (and a ConfigMap's `binaryData`) are file names (`[-._a-zA-Z0-9]+`, not `.`/`..`);
  together the values hold at most 1 MiB, as much as etcd takes in one object.
- The built-in Secret types require their keys; `immutable: true` freezes the data and itself.

Pure: functions on plain dicts, reporting through validation.Errors.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from podnet.apiserver.status import Cause

from podnet.api import base64data

if TYPE_CHECKING:
    from podnet.apiserver.validation import Errors

MAX_SIZE = 1024 * 1024  # core.MaxSecretSize, for ConfigMaps too
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_KEY_MAX = 253
_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
_IMMUTABLE = "field is immutable when `immutable` is set"

SERVICE_ACCOUNT_NAME_KEY = "kubernetes.io/service-account.name"
# The built-in types and the keys each must have (all of them, or any one for basic-auth).
_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}
_JSON_KEYS = {"kubernetes.io/dockercfg": ".dockercfg", "kubernetes.io/dockerconfigjson": ".dockerconfigjson"}


def key_errors(key: str) -> list[str]:
    """validation.IsConfigMapKey: why `key` cannot name a value (and a file in a volume)."""
    found = []
    if len(key) > _KEY_MAX:
        found.append(f"must be no more than {_KEY_MAX} characters")
    if not _KEY.match(key):
        found.append(_KEY_MESSAGE)
    if key == ".":
        found.append("must not be '.'")
    elif key == "..":
        found.append("must not be '..'")
    elif key.startswith(".."):
        found.append("must not start with '..'")
    return found


def default_secret(secret: dict) -> None:
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = secret.get("data")
        if not isinstance(data, dict):
            data = secret["data"] = {}
        for key, value in string_data.items():
            data[key] = base64data.encode(str(value).encode())
    secret.setdefault("type", "Opaque")


def _data_size(errors: Errors, field: str, values: dict, *, binary: bool) -> int:
    size = 0
    for key, value in values.items():
        for message in key_errors(str(key)):
            errors.invalid(f"{field}[{key}]", key, message)
        size += len(base64data.decode(value)) if binary else len(str(value).encode())
    return size


def validate_config_map(errors: Errors, obj: dict, limits: object) -> None:
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    size = _data_size(errors, "data", data, binary=False)
    for key in data:
        if key in binary:
            errors.invalid(f"data[{key}]", key, "duplicate of key present in binaryData")
    size += _data_size(errors, "binaryData", binary, binary=True)
    if size > MAX_SIZE:
        errors.causes.append(Cause("", "FieldValueTooLong", f"Too long: must have at most {MAX_SIZE} bytes"))


def _json_error(value: bytes) -> str | None:
    try:
        if isinstance(json.loads(value), dict):
            return None
        return "json: cannot unmarshal into Go value of type map[string]interface {}"
    except ValueError as exc:
        return str(exc)


def validate_secret(errors: Errors, obj: dict, limits: object) -> None:
    data = obj.get("data") or {}
    if _data_size(errors, "data", data, binary=True) > MAX_SIZE:
        errors.causes.append(Cause("data", "FieldValueTooLong", f"Too long: must have at most {MAX_SIZE} bytes"))
    secret_type = obj.get("type") or "Opaque"
    if secret_type == "kubernetes.io/service-account-token":
        if not ((obj["metadata"].get("annotations") or {}).get(SERVICE_ACCOUNT_NAME_KEY)):
            errors.required(f"metadata.annotations[{SERVICE_ACCOUNT_NAME_KEY}]")
    elif secret_type == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            errors.required("data[username]")
            errors.required("data[password]")
    elif secret_type == "kubernetes.io/ssh-auth":
        if not data.get("ssh-privatekey"):
            errors.required("data[ssh-privatekey]")
    elif secret_type in _REQUIRED_KEYS:
        missing = [key for key in _REQUIRED_KEYS[secret_type] if key not in data]
        for key in missing:
            errors.required(f"data[{key}]")
        json_key = _JSON_KEYS.get(secret_type)
        if json_key and not missing and (problem := _json_error(base64data.decode(data[json_key]))):
            errors.invalid(f"data[{json_key}]", "<secret contents redacted>", problem)


def _validate_immutable_data(errors: Errors, old: dict, new: dict, fields: tuple[str, ...]) -> None:
    if old.get("immutable") is not True:
        return
    if new.get("immutable") is not True:
        errors.forbidden("immutable", _IMMUTABLE)
    for field in fields:
        if (old.get(field) or {}) != (new.get(field) or {}):
            errors.forbidden(field, _IMMUTABLE)


def validate_config_map_update(errors: Errors, old: dict, new: dict) -> None:
    _validate_immutable_data(errors, old, new, ("data", "binaryData"))


def validate_secret_update(errors: Errors, old: dict, new: dict) -> None:
    if (old.get("type") or "Opaque") != (new.get("type") or "Opaque"):
        errors.invalid("type", new.get("type"), "field is immutable")
    _validate_immutable_data(errors, old, new, ("data",))
