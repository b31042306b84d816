"""How objects are stored and sent: JSON in storage, JSON or msgpack on the wire.

Stored values carry no `metadata.resourceVersion`: as in kube-apiserver, it is the storage revision
that last wrote the key, and it is set on every object read back (`from_storage`).
"""

from __future__ import annotations

import json

import msgpack

JSON = "application/json"
MSGPACK = "application/msgpack"

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# Far deeper than any Kubernetes object nests; deeper bodies are refused before anything recurses on them.
MAX_DEPTH = 100


class DecodeError(ValueError):
    """A request body that is not a JSON or msgpack object."""


def to_storage(obj: dict) -> bytes:
    metadata = obj.get("metadata") or {}
    if "resourceVersion" in metadata:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in metadata.items() if k != "resourceVersion"}
    return _dumps(obj).encode()


def from_storage(value: bytes, revision: int) -> dict:
    obj = json.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def encode(obj: object, media_type: str) -> bytes:
    if media_type == MSGPACK:
        return msgpack.packb(obj, use_bin_type=True)
    return _dumps(obj).encode()


def decode(body: bytes, media_type: str) -> object:
    try:
        if media_type == MSGPACK:
            value = msgpack.unpackb(body, raw=False, strict_map_key=True)
        else:
            value = json.loads(body)
    except (ValueError, TypeError, RecursionError) as e:
        raise DecodeError(f"couldn't decode the body as {media_type}: {e}") from None
    if len(body) > MAX_DEPTH:  # every level costs at least a byte: a shorter body cannot be too deep
        check_depth(value)
    return value


def check_depth(value: object) -> None:
    """Refuses (DecodeError) a decoded body nested deeper than MAX_DEPTH: the handlers walk bodies recursively."""
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise DecodeError(f"the body nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            pending.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            pending.extend((child, depth + 1) for child in node)
