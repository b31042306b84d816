"""Vendors Kubernetes' OpenAPI definitions of the kinds podnet serves into podnet/api/openapi/definitions.json.

The source is the JSON Schema form of Kubernetes 1.31's OpenAPI definitions that the PyPI package
`kubernetes-validate` ships (kubernetes_validate/kubernetes-json-schema/v1.31.0-local/_definitions.json).
Only the definitions reachable from podnet's kinds (and the meta types every API serves) are kept, put
back into OpenAPI shape: `#/definitions/...` references and no JSON Schema `null` types. The two types
that are one of several (IntOrString, Quantity) stay `oneOf`, as kube-apiserver's OpenAPI v3 has them;
its v2 document spells them as strings, which podnet/api/openapi/documents.py does when it builds v2.
podnet reads the vendored file at run time; it does not need kubernetes-validate.

Regenerate (after adding a kind to podnet/api/kinds.py):

    .venv/bin/pip install kubernetes-validate==1.37.0
    .venv/bin/python tools/vendor_openapi.py

or give the path of a kubernetes-validate wheel or of _definitions.json: `tools/vendor_openapi.py FILE`.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from podnet.api.kinds import KINDS

SOURCE = "kubernetes_validate/kubernetes-json-schema/v1.31.0-local/_definitions.json"
TARGET = Path(__file__).resolve().parent.parent / "podnet" / "api" / "openapi" / "definitions.json"
# Served by every group version besides the kinds themselves (errors, deletes, watch events, patches).
META = (
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
)


def read_source(argument: str | None) -> dict:
    if argument is None:
        import kubernetes_validate  # only the generator needs it

        path = Path(kubernetes_validate.__file__).parent.parent / SOURCE
        return json.loads(path.read_text())
    if argument.endswith(".whl"):
        with zipfile.ZipFile(argument) as wheel:
            return json.loads(wheel.read(SOURCE))
    return json.loads(Path(argument).read_text())


def to_openapi_v2(schema: object) -> object:
    """JSON Schema back to OpenAPI v2: one type per schema, `#/definitions/` references."""
    if isinstance(schema, list):
        return [to_openapi_v2(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str):
            converted[key] = value.replace("#/$defs/", "#/definitions/")
        elif key == "type" and isinstance(value, list):
            converted[key] = next(t for t in value if t != "null")
        else:
            converted[key] = to_openapi_v2(value)
    return converted


def strip_added_enums(definition: dict) -> dict:
    """kubernetes-validate pins apiVersion and kind to one value; Kubernetes' own schema does not."""
    for field in ("apiVersion", "kind"):
        prop = (definition.get("properties") or {}).get(field)
        if isinstance(prop, dict):
            prop.pop("enum", None)
    return definition


def references(schema: object) -> set[str]:
    found: set[str] = set()
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                found.add(ref.rsplit("/", 1)[1])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def vendor(source: dict) -> dict:
    definitions = source["$defs"]
    roots = [kind.definition for kind in KINDS] + [f"{kind.definition}List" for kind in KINDS] + list(META)
    kept: dict[str, dict] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in kept:
            continue
        definition = strip_added_enums(to_openapi_v2(definitions[name]))  # type: ignore[arg-type]
        kept[name] = definition
        pending.extend(references(definition))
    return dict(sorted(kept.items()))


def main() -> None:
    vendored = vendor(read_source(sys.argv[1] if len(sys.argv) > 1 else None))
    TARGET.write_text(json.dumps(vendored, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"wrote {len(vendored)} definitions to {TARGET}")


if __name__ == "__main__":
    main()
