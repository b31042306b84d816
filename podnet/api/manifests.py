"""Reading manifests: multi-document YAML or JSON, with `List` objects flattened, as kubectl reads them."""

from __future__ import annotations

import json

import yaml

from podnet.api import kinds


class ManifestError(ValueError):
    pass


def load(text: str, source: str = "-") -> list[dict]:
    """Every object in `text`, in order. Raises ManifestError naming the source and the problem."""
    try:
        if text.lstrip().startswith("{"):
            documents = [json.loads(text)]
        else:
            documents = list(yaml.safe_load_all(text))
    except (yaml.YAMLError, ValueError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ManifestError(f"{source}: not valid YAML or JSON{where}: {problem}") from None
    objects: list[dict] = []
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: document {index + 1} is not an object")
        if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List") and "items" in doc:
            items = doc.get("items") or []
        else:
            items = [doc]
        for obj in items:
            if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
                raise ManifestError(f"{source}: document {index + 1}: an object needs apiVersion and kind")
            try:
                kinds.for_object(obj)
            except kinds.UnknownKind as exc:
                raise ManifestError(f"{source}: {exc}") from None
            if not isinstance(obj.get("metadata"), dict) or not (
                obj["metadata"].get("name") or obj["metadata"].get("generateName")
            ):
                raise ManifestError(f"{source}: {obj['kind']}: metadata.name is required")
            objects.append(obj)
    return objects
