"""Server-side Tables: what kube-apiserver answers to `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.

kubectl asks for a Table (v1, then v1beta1, then plain JSON) on every get, list and watch it prints, and
prints the columns the server chose. The columns and cells are each kind's printer (podnet/api/printers.py),
the one `podnet get` prints from. As kube-apiserver, every row carries all columns (clients hide priority
1 unless wide) and, by default, the object's metadata as a PartialObjectMetadata (`includeObject=Metadata`;
`Object` sends the whole object, `None` nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from podnet.apiserver import status

from podnet.api import printers
from podnet.api.kinds import Kind

TABLE_VERSIONS = ("v1", "v1beta1")
INCLUDE_OBJECT = ("Object", "None", "Metadata")


def requested_version(accept: str) -> str | None:
    """The Table version the first acceptable media range asks for, or None for the plain object."""
    for media_range in accept.split(","):
        media_type, *params = (part.strip() for part in media_range.split(";"))
        options = dict(p.split("=", 1) for p in params if "=" in p)
        if options.get("as") == "Table":
            if media_type == "application/json" and options.get("g") == "meta.k8s.io" and options.get("v") in TABLE_VERSIONS:
                return options["v"]
            continue  # a Table we cannot give (protobuf, another group): the next range may do
        if media_type:
            return None
    return None


def _row_object(obj: dict, include: str, api_version: str) -> dict | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": obj.get("metadata") or {}}


def _row(printer: printers.Printer, obj: dict, now: float, include: str, api_version: str) -> dict:
    row: dict = {"cells": printer.row(obj, now)}
    phase = (obj.get("status") or {}).get("phase")
    if printer is printers.POD and phase in ("Succeeded", "Failed"):
        message = "The pod has completed successfully." if phase == "Succeeded" else "The pod failed."
        row["conditions"] = [{"type": "Completed", "status": "True", "reason": phase, "message": message}]
    row["object"] = _row_object(obj, include, api_version)
    return row


def to_table(kind: Kind, body: dict, version: str, include: str, now: float) -> dict:
    """A Table of a list (`items`) or of one object, as kube-apiserver's TableConvertor builds it."""
    printer = kind.printer or printers.DEFAULT
    api_version = f"meta.k8s.io/{version}"
    is_list = isinstance(body.get("items"), list)
    objects = body["items"] if is_list else [body]
    metadata = body.get("metadata") or {}
    table_meta = {k: metadata[k] for k in ("resourceVersion", "continue") if metadata.get(k)}
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": table_meta,
        "columnDefinitions": printers.column_definitions(printer),
        "rows": [_row(printer, obj, now, include, api_version) for obj in objects],
    }


def _options(request: web.Request) -> tuple[str, str] | None:
    version = requested_version(request.headers.get("Accept", ""))
    if version is None:
        return None
    include = request.query.get("includeObject") or "Metadata"
    if include not in INCLUDE_OBJECT:
        raise status.bad_request(
            f'includeObject: Unsupported value: "{include}": supported values: "Metadata", "None", "Object"'
        )
    return version, include


def represent(request: web.Request, kind: Kind, body: dict) -> dict:
    """The body as the request asked for it: a Table when the Accept header says so, else unchanged."""
    options = _options(request)
    return body if options is None else to_table(kind, body, *options, time.time())


def event_transform(request: web.Request, kind: Kind) -> Callable[[dict], dict] | None:
    """For a watch that asked for Tables: turns each event's object into a one-row Table."""
    options = _options(request)
    if options is None:
        return None
    return lambda obj: to_table(kind, obj, *options, time.time())
