"""fieldValidation (Strict, Warn, Ignore) on create, update and patch, as kube-apiserver applies it.

A body is decoded against its kind's schema (podnet/api/openapi/structure.py). A value of the wrong type
always fails: 400 `Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal ...`. Unknown
and duplicate fields are dropped, and then, by the request's directive:
- Strict: the request fails. Create and update answer 400 BadRequest `<Kind> in version "v1" cannot be
  handled as a <Kind>: strict decoding error: unknown field "spec.foo"` (k8s.io/apiserver handlers
  create.go/update.go, transformDecodeError); a patch answers 422 Invalid on the field `patch`
  (patch.go). So an unknown field is a 422 only in a patch, as on kube-apiserver.
- Warn (the default, as in kube-apiserver): the request succeeds with one `Warning: 299 - "..."` header
  per field, which kubectl prints as `Warning: unknown field "spec.foo"`.
- Ignore: the request succeeds silently.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from podnet.apiserver import status
from podnet.apiserver.customresources.rules import custom_of, prune_object
from podnet.apiserver.status import Cause

from podnet.api.kinds import Kind
from podnet.api.openapi import structure

DIRECTIVES = ("Ignore", "Strict", "Warn")
WARNINGS_KEY = web.RequestKey("warnings", list)
_STRATEGIC_PATCH = "application/strategic-merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_JSON_BODIES = ("", "application/json", "*/*", "application/merge-patch+json", _STRATEGIC_PATCH, _JSON_PATCH)
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _directive(request: web.Request, options_kind: str) -> str:
    value = request.query.get("fieldValidation", "")
    if value and value not in DIRECTIVES:
        listed = ", ".join(json.dumps(v) for v in ("", *DIRECTIVES))
        cause = Cause("fieldValidation", "FieldValueNotSupported", f"Unsupported value: {json.dumps(value)}: supported values: {listed}")
        raise status.ApiError(status.status(
            422, "Invalid", f'{options_kind}.meta.k8s.io "" is invalid: fieldValidation: {cause.message}',
            {"group": "meta.k8s.io", "kind": options_kind, "causes": [cause.to_dict()]},
        ))
    return value or "Warn"


def warn(request: web.Request, message: str) -> None:
    request.setdefault(WARNINGS_KEY, []).append(message)


def _report(request: web.Request, directive: str, problems: list[str], fail: Callable[[str], status.ApiError]) -> None:
    if not problems or directive == "Ignore":
        return
    if directive == "Strict":
        raise fail("strict decoding error: " + ", ".join(problems))
    for problem in problems:
        warn(request, problem)


async def _raw_json(request: web.Request) -> object | None:
    """The body as written, duplicates kept; None when it is not JSON (YAML, msgpack)."""
    media_type = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if media_type not in _JSON_BODIES:
        return None
    try:
        return structure.parse_json(await request.read())  # aiohttp keeps the body read before
    except ValueError:
        return None


async def decode_object(request: web.Request, kind: Kind, obj: dict) -> dict:
    """A create's or update's object with unknown fields dropped; raises or warns as the directive says."""
    directive = _directive(request, "CreateOptions" if request.method == "POST" else "UpdateOptions")

    def fail(message: str) -> status.ApiError:
        return status.bad_request(f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: {message}')

    raw = await _raw_json(request)
    if custom_of(kind) is not None:
        pruned, problems = _custom(kind, obj)
        if problems.type_error:
            raise fail(problems.type_error)
        _report(request, directive, (structure.duplicates(raw) if raw is not None else []) + problems.problems, fail)
        return pruned
    decoded = structure.decode(structure.members(obj), kind.definition)
    written = decoded if raw is None else structure.decode(raw, kind.definition)
    if written.type_error:
        raise fail(written.type_error)
    _report(request, directive, written.problems, fail)
    return decoded.value  # type: ignore[return-value]


def _custom(kind: Kind, obj: dict) -> tuple[dict, structure.Decoded]:
    """A custom object pruned by its schema, its metadata decoded as ObjectMeta: the object and what was
    dropped (`unknown field "spec.foo"`), as kube-apiserver reports pruned fields."""
    metadata = structure.decode(structure.members(obj.get("metadata") or {}), _OBJECT_META)
    pruned, dropped = prune_object(kind, obj)
    if isinstance(metadata.value, dict):
        pruned["metadata"] = metadata.value
    problems = [p.replace('field "', 'field "metadata.', 1) for p in metadata.problems]
    problems += [f'unknown field "{path}"' for path in dropped]
    return pruned, structure.Decoded(None, problems, metadata.type_error)


async def decode_patched(request: web.Request, kind: Kind, patch: object, media_type: str, patched: dict) -> dict:
    """A patched object with unknown fields dropped; duplicates in the patch and unknown fields in the
    result raise or warn as the directive says."""
    directive = _directive(request, "PatchOptions")
    raw = await _raw_json(request)

    def fail(message: str) -> status.ApiError:
        # kube-apiserver quotes a strategic merge patch as Go prints the patch, other patches as the result.
        shown = (structure.go_format(patch) if media_type == _STRATEGIC_PATCH
                 else json.dumps(patched, separators=(",", ":"), sort_keys=True))
        cause = Cause("patch", "FieldValueInvalid", f"Invalid value: {json.dumps(shown, ensure_ascii=False)}: {message}")
        return status.ApiError(status.status(422, "Invalid", f' "" is invalid: patch: {cause.message}',
                                             {"causes": [cause.to_dict()]}))

    if custom_of(kind) is not None:
        value, decoded = _custom(kind, patched)
    else:
        decoded = structure.decode(structure.members(patched), kind.definition)
        value = decoded.value  # type: ignore[assignment]
    if decoded.type_error:
        raise fail(decoded.type_error)
    # A JSON patch is a list of operations, not a document: only merge patches can repeat a field.
    merging = raw is not None and media_type != _JSON_PATCH and directive != "Ignore"
    duplicated = structure.duplicates(raw) if merging else []
    _report(request, directive, duplicated + decoded.problems, fail)
    return value


@web.middleware
async def _warnings(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    response = await handler(request)
    for message in request.get(WARNINGS_KEY, ()):
        # A quoted-string with every control and non-ASCII character escaped, as Go's strconv.Quote would.
        response.headers.add("Warning", f"299 - {json.dumps(message)}")
    return response


def install(app: web.Application) -> None:
    """Sends the warnings that requests collected as `Warning` headers."""
    app.middlewares.append(_warnings)
