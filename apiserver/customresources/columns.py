"""The table of a custom resource: NAME, then the version's additionalPrinterColumns (AGE alone when it has
none), each cell the value its JSONPath finds, as apiextensions-apiserver's tableconvertor fills them.
Pure: a column's path is the simple JSONPath CRDs allow (`.spec.cronSpec`, `.status.conditions[0].type`,
`.spec.items[*].name`, `.status.conditions[?(@.type=="Ready")].status`, `.metadata.labels['app.kubernetes.io/name']`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from podnet.api import printers
from podnet.api.printers import Column, Printer

_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_NAME = Column("Name", (_META, "name"), format="name")
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": ""}
_STEP = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_$-]+)"""
    r"""|\[(?P<index>-?\d+|\*)\]"""
    r"""|\[['"](?P<quoted>[^'"]*)['"]\]"""
    r"""|\[\?\(@\.(?P<filter>[A-Za-z0-9_.-]+)\s*(?P<op>==|!=)\s*(?P<literal>"[^"]*"|'[^']*'|-?[0-9.]+|true|false)\)\]"""
    r"""|\.\*"""
)


class PathError(ValueError):
    pass


def compile_path(path: str) -> Callable[[object], list[object]]:
    """A function from an object to what the JSONPath finds in it (an empty list: nothing)."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    steps = []
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise PathError(f"unrecognized character in JSONPath at {position}: {text[position:]!r}")
        steps.append(match)
        position = match.end()

    def find(obj: object) -> list[object]:
        current = [obj]
        for step in steps:
            current = [found for value in current for found in _apply(step, value)]
        return current

    return find


def _apply(step: re.Match, value: object) -> list[object]:
    name = step.group("field") or step.group("quoted")
    if name is not None:
        return [value[name]] if isinstance(value, dict) and name in value else []
    index = step.group("index")
    if index is not None:
        if not isinstance(value, list):
            return []
        if index == "*":
            return list(value)
        position = int(index)
        return [value[position]] if -len(value) <= position < len(value) else []
    if step.group("filter") is not None:
        if not isinstance(value, list):
            return []
        literal = step.group("literal")
        expected = literal[1:-1] if literal[0] in "'\"" else json.loads(literal)
        matching = []
        for item in value:
            found = item
            for part in step.group("filter").split("."):
                found = found.get(part) if isinstance(found, dict) else None
            if (found == expected) == (step.group("op") == "=="):
                matching.append(item)
        return matching
    if isinstance(value, dict):  # `.*`
        return list(value.values())
    return list(value) if isinstance(value, list) else []


def _cell(found: list[object], column_type: str, now: float) -> object:
    if not found:
        return None
    if column_type == "date":
        return printers.since(found[0], now)
    if len(found) == 1:
        value = found[0]
        return json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else value
    return ",".join(str(v) if not isinstance(v, dict | list) else json.dumps(v, separators=(",", ":")) for v in found)


def printer(columns: list[dict]) -> Printer:
    """The printer of a CRD version's additionalPrinterColumns."""
    columns = [c for c in columns if isinstance(c, dict)] or [_AGE]
    finders = []
    for column in columns:
        try:
            finders.append(compile_path(str(column.get("jsonPath", ""))))
        except PathError:
            finders.append(lambda obj: [])  # refused when the CRD was written; never fails a read
    types = [str(column.get("type", "string")) for column in columns]

    def row(obj: dict, now: float) -> list:
        name = (obj.get("metadata") or {}).get("name", "")
        return [name, *(_cell(find(obj), column_type, now) for find, column_type in zip(finders, types, strict=True))]

    definitions = tuple(
        Column(str(column.get("name", "")), str(column.get("description", "")), type=str(column.get("type", "string")),
               format=str(column.get("format", "")), priority=int(column.get("priority", 0) or 0))
        for column in columns
    )
    return Printer((_NAME, *definitions), row)
