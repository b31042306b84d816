"""The audit log of the API server: kube-apiserver's `--audit-policy-file` and `--audit-log-path` (`-` for
standard output), one JSON event a line.

Each request is recorded in the stages its policy rule keeps: `RequestReceived` once the requester is
known (authentication runs first, as kube-apiserver's filters do; the policy judges the authenticated
user, before impersonation), `ResponseStarted` when a long-running response (a watch, exec, logs) sends
its headers, `ResponseComplete` when it ends. A request that fails authentication is recorded once, at
`ResponseStarted` with its 401, as kube-apiserver's failed-authentication audit does. Every response
carries the `Audit-Id` header naming its events (the client's own `Audit-ID`, if it sent one). The RBAC
decision of the request — the first one its handling asks for — becomes the events' annotations
(`note_authorization`, called by the authorizer's one entry point).

Writes are blocking appends, flushed per event: an event is on disk before the response is complete, as
with kube-apiserver's default blocking mode. The decisions are the pure cores': policy.py, requestinfo.py,
event.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import json
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiohttp import web
from podnet.apiserver.auth import User
from podnet.apiserver.config import read_flag_file

from . import event as events
from .policy import NOT_RECORDED, Attributes, Decision, Policy, evaluate, parse_policy
from .requestinfo import RequestInfo, request_info

log = logging.getLogger(__name__)

AUDIT_ID_HEADER = "Audit-Id"
ANONYMOUS = User("system:anonymous", "", ("system:unauthenticated",))


@dataclass(slots=True)
class _Record:
    audit_id: str
    received: datetime.datetime
    info: RequestInfo
    user: User | None = None
    acting: User | None = None
    decision: Decision = NOT_RECORDED
    authorization: events.Authorization | None = None
    started_code: int | None = None  # the status a long-running response started with
    annotations: dict[str, str] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)


_CURRENT: contextvars.ContextVar[_Record | None] = contextvars.ContextVar("audit_record", default=None)
_RECORD_KEY = web.RequestKey("audit_record", _Record)


def note_authorization(user: User, allowed: bool, reason: str) -> None:
    """Records the request's authorization decision, and the user it was made for (the impersonated one,
    if any), for its events. The first one only: later checks, such as RBAC's escalation check, are about
    other things."""
    record = _CURRENT.get()
    if record is not None and record.authorization is None:
        record.authorization = events.Authorization(allowed, reason)
        record.acting = user


def annotate(key: str, value: str) -> None:
    """Adds an annotation to the events of the request being served (as kube-apiserver's
    audit.AddAuditAnnotation: the credential a TokenRequest issued, say)."""
    record = _CURRENT.get()
    if record is not None:
        record.annotations[key] = value


def load_policy(path: str) -> Policy:
    """The policy file's policy; ValueError naming the flag and file."""
    return read_flag_file(path, "--audit-policy-file", lambda data: parse_policy(data.decode()))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class AuditLog:
    def __init__(self, policy: Policy, output: IO[str]):
        self.policy = policy
        self._output = output

    @classmethod
    @contextlib.contextmanager
    def open(cls, policy_file: str, log_path: str):  # type: ignore[no-untyped-def]
        policy = load_policy(policy_file)
        if log_path == "-":
            yield cls(policy, sys.stdout)
            return
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Who did what is for the cluster's owner only.
        with open(path, "a", opener=lambda p, flags: os.open(p, flags, 0o600)) as output:
            yield cls(policy, output)

    def install(self, app: web.Application) -> Callable:
        app.on_response_prepare.append(self._response_prepared)
        return self._middleware

    # --- stages ------------------------------------------------------------------------------------

    def authenticated(self, request: web.Request, user: User) -> None:
        """The requester is known: the policy decides, and RequestReceived is written if kept."""
        record = request.get(_RECORD_KEY)
        if record is None:
            return
        record.user = user
        record.decision = evaluate(self.policy, self._attributes(record.info, user))
        self._write(request, record, "RequestReceived")

    async def _response_prepared(self, request: web.Request, response: web.StreamResponse) -> None:
        record = request.get(_RECORD_KEY)
        if record is None:
            return
        response.headers[AUDIT_ID_HEADER] = record.audit_id
        if record.info.long_running and record.user is not None:
            record.started_code = response.status
            self._write(request, record, "ResponseStarted", response.status)

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        audit_id = request.headers.get("Audit-ID") or str(uuid.uuid4())
        record = _Record(audit_id, _now(), request_info(request.method, request.path, request.query))
        request[_RECORD_KEY] = record
        token = _CURRENT.set(record)
        try:
            response = await handler(request)
        except (asyncio.CancelledError, ConnectionError):
            # The client went away: a watch it was following still ends, as kube-apiserver records it.
            if record.started_code is not None:
                self._write(request, record, "ResponseComplete", record.started_code)
            raise
        finally:
            _CURRENT.reset(token)
        if record.user is None:
            self._unauthenticated(request, record, response)
        else:
            await self._complete(request, record, response)
        return response

    def _unauthenticated(self, request: web.Request, record: _Record, response: web.StreamResponse) -> None:
        if response.status != 401:  # a public path (healthz, version): anyone's, as system:anonymous
            record.user = record.acting = ANONYMOUS
            record.decision = evaluate(self.policy, self._attributes(record.info, ANONYMOUS))
            self._write(request, record, "ResponseComplete", response.status, _status_body(response))
            return
        record.decision = evaluate(self.policy, self._attributes(record.info, None))
        attempted = "certificate, token" if request.headers.get("Authorization") else "certificate"
        status = {"metadata": {}, "message": f"Authentication failed, attempted: {attempted}", "code": 401}
        self._write(request, record, "ResponseStarted", status=status)

    async def _complete(self, request: web.Request, record: _Record, response: web.StreamResponse) -> None:
        request_object = response_object = None
        if not record.info.long_running and events.at_least(record.decision.level, "Request"):
            request_object = await _request_body(request)
            if events.at_least(record.decision.level, "RequestResponse"):
                response_object = _status_body(response)
        self._write(request, record, "ResponseComplete", response.status, _status_body(response),
                    request_object=request_object, response_object=response_object)

    # --- writing -----------------------------------------------------------------------------------

    @staticmethod
    def _attributes(info: RequestInfo, user: User | None) -> Attributes:
        return Attributes(user.name if user else "", user.groups if user else (), info.verb, info.resource_request,
                          info.namespace, info.api_group, info.resource, info.subresource, info.name, info.path)

    def _write(self, request: web.Request, record: _Record, stage: str, code: int | None = None,
               body: object = None, *, status: dict | None = None, request_object: object = None,
               response_object: object = None) -> None:
        if not record.decision.recorded or stage in record.decision.omit_stages or stage in record.written:
            return
        record.written.add(stage)
        if status is None and code is not None:
            status = events.response_status(code, body)
        remote = request.remote or ""
        forwarded = [ip.strip() for ip in request.headers.get("X-Forwarded-For", "").split(",") if ip.strip()]
        line = events.event(
            audit_id=record.audit_id, stage=stage, level=record.decision.level, info=record.info,
            request_uri=request.path_qs, user=record.user, acting=record.acting,
            source_ips=[*forwarded, *([remote] if remote and remote not in forwarded else [])],
            user_agent=request.headers.get("User-Agent", ""), received=record.received, at=_now(), response=status,
            authorization=record.authorization, annotations=record.annotations, request_object=request_object,
            response_object=response_object)
        try:
            self._output.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._output.flush()
        except (OSError, ValueError) as exc:  # a full disk must not take the API down; the log says why
            log.error("audit event %s not written: %s", record.audit_id, exc)


def _status_body(response: web.StreamResponse) -> object:
    """A complete response's JSON body (a Status, an object), or None for streams and other encodings."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return None
    try:
        return json.loads(response.body) if isinstance(response.body, bytes | bytearray) else None
    except ValueError:
        return None


async def _request_body(request: web.Request) -> object:
    if not request.body_exists:
        return None
    try:
        return json.loads(await request.read())
    except (ValueError, web.HTTPException):
        return None
