"""ObjectMeta's `omitempty` fields, as kube-apiserver's encoding leaves them out.

kube-apiserver decodes every body into a typed object and encodes it again, so an empty `labels: {}` or
`finalizers: []` sent by a client is never stored or answered. kubectl relies on it: `kubectl diff` sends
`annotations: {}` for an object that has none, and against kube-apiserver that is no difference.
"""

from __future__ import annotations

# ObjectMeta's maps and lists, each `json:",omitempty"` in k8s.io/apimachinery's types.go.
OMITTED_WHEN_EMPTY = ("labels", "annotations", "ownerReferences", "finalizers", "managedFields")


def omit_empty_metadata(obj: dict) -> None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return
    for field in OMITTED_WHEN_EMPTY:
        if metadata.get(field) in ({}, []):
            del metadata[field]
