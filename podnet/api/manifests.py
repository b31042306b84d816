"""Reading manifests: multi-document YAML or JSON, with `List` objects flattened, as kubectl reads them.

`load` is all or nothing: the first problem raises ManifestError. `read` is what `apply` needs: a
document that cannot be applied (its kind is not served) is one error line in kubectl's words, and the
rest of the file still applies. Text that is not YAML or JSON at all is an error of the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import yaml

from podnet.api import kinds


class ManifestError(ValueError):
    pass


@dataclass(slots=True)
class Manifest:
    objects: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per document that cannot be applied
    # The objects of kinds podnet does not define, each with its line in `errors`: the server may still
    # serve them, from a CustomResourceDefinition.
    unknown: list[tuple[dict, str]] = field(default_factory=list)


def _documents(text: str, source: str) -> list[object]:
    try:
        if text.lstrip().startswith("{"):
            return [json.loads(text)]
        return list(yaml.safe_load_all(text))
    except (yaml.YAMLError, ValueError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ManifestError(f"{source}: not valid YAML or JSON{where}: {problem}") from None


def _objects(text: str, source: str) -> Iterator[tuple[dict, kinds.UnknownKind | None]]:
    """Every object with the reason its kind is not served (None when it is); malformed documents raise."""
    for index, doc in enumerate(_documents(text, source)):
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
                yield obj, exc
                continue
            if not isinstance(obj.get("metadata"), dict) or not (
                obj["metadata"].get("name") or obj["metadata"].get("generateName")
            ):
                raise ManifestError(f"{source}: {obj['kind']}: metadata.name is required")
            yield obj, None


def load(text: str, source: str = "-") -> list[dict]:
    """Every object in `text`, in order. Raises ManifestError naming the source and the problem."""
    objects = []
    for obj, unknown in _objects(text, source):
        if unknown is not None:
            raise ManifestError(f"{source}: {unknown}")
        objects.append(obj)
    return objects


def read(text: str, source: str = "-") -> Manifest:
    """The objects of `text` that podnet serves, and one line for each that it does not (kubectl's
    `resource mapping not found`). Raises ManifestError when the text itself is malformed."""
    manifest = Manifest()
    for obj, unknown in _objects(text, source):
        if unknown is None:
            manifest.objects.append(obj)
            continue
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        line = (
            f'resource mapping not found for name: "{meta.get("name", "")}" namespace: "{meta.get("namespace", "")}" '
            f'from "{source}": no matches for kind "{obj["kind"]}" in version "{obj["apiVersion"]}"'
        )
        manifest.errors.append(line)
        manifest.unknown.append((obj, line))
    return manifest
