"""The key of an API object in every cache and index: `namespace/name` for a namespaced object, the bare
name for a cluster-scoped one (a missing or empty namespace means cluster-scoped), as client-go's
`MetaNamespaceKeyFunc` makes it."""

from __future__ import annotations


def namespaced_key(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def object_key(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return namespaced_key(meta.get("namespace"), str(meta.get("name")))
