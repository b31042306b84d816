"""The key of an API object in every cache and index: `namespace/name` for a namespaced object, the bare
name for a cluster-scoped one (a missing or empty namespace means cluster-scoped), as client-go's
`MetaNamespaceKeyFunc` makes it."""

from __future__ import annotations


def namespaced_key(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def namespace_and_name(obj: dict) -> tuple[str, str]:
    """The two parts of `object_key`, for an index that groups by namespace ("" for a cluster-scoped
    object)."""
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", str(meta.get("name"))


def object_key(obj: dict) -> str:
    return namespaced_key(*namespace_and_name(obj))
