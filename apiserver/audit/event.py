"""Audit events (`audit.k8s.io/v1` Event) as kube-apiserver writes them to `--audit-log-path`, one JSON
object a line: the request (`auditID`, `stage`, `requestURI`, `verb`, `objectRef`), who made it (`user`,
`impersonatedUser`, `sourceIPs`, `userAgent`), the answer (`responseStatus`, and at the Request and
RequestResponse levels the bodies), when (`requestReceivedTimestamp`, `stageTimestamp`, in microseconds)
and why it was allowed (`annotations`: `authorization.k8s.io/decision` allow|forbid and
`authorization.k8s.io/reason`). Pure: every value is given.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from podnet.apiserver.auth import User

from .requestinfo import RequestInfo

API_VERSION = "audit.k8s.io/v1"
DECISION_ANNOTATION = "authorization.k8s.io/decision"
REASON_ANNOTATION = "authorization.k8s.io/reason"
_LEVEL_ORDER = ("None", "Metadata", "Request", "RequestResponse")


def at_least(level: str, wanted: str) -> bool:
    return _LEVEL_ORDER.index(level) >= _LEVEL_ORDER.index(wanted)


def micro_time(moment: datetime.datetime) -> str:
    """metav1.MicroTime's RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def user_info(user: User | None) -> dict:
    if user is None:
        return {}
    info: dict = {"username": user.name}
    if user.uid:
        info["uid"] = user.uid
    if user.groups:
        info["groups"] = list(user.groups)
    if user.extra:
        info["extra"] = {key: list(values) for key, values in user.extra}
    return info


def object_ref(info: RequestInfo) -> dict | None:
    if not info.resource_request:
        return None
    ref = {"resource": info.resource, "namespace": info.namespace, "name": info.name,
           "apiGroup": info.api_group, "apiVersion": info.api_version, "subresource": info.subresource}
    return {k: v for k, v in ref.items() if v}


def response_status(code: int, status_body: object) -> dict:
    """What a response's status says: its code, and for a failure the Status's reason and message."""
    answered: dict = {"metadata": {}}
    if isinstance(status_body, dict) and status_body.get("kind") == "Status" and code >= 300:
        for key in ("status", "message", "reason", "details"):
            if status_body.get(key):
                answered[key] = status_body[key]
    answered["code"] = code
    return answered


@dataclass(frozen=True, slots=True)
class Authorization:
    allowed: bool
    reason: str

    def annotations(self) -> dict[str, str]:
        return {DECISION_ANNOTATION: "allow" if self.allowed else "forbid", REASON_ANNOTATION: self.reason}


def event(*, audit_id: str, stage: str, level: str, info: RequestInfo, request_uri: str, user: User | None,
          acting: User | None, source_ips: list[str], user_agent: str, received: datetime.datetime,
          at: datetime.datetime, response: dict | None = None, authorization: Authorization | None = None,
          annotations: dict[str, str] | None = None, request_object: object = None,
          response_object: object = None) -> dict:
    """One event; `response` is a response_status() (none before the response starts); `acting` the user
    the request impersonates, when it is another."""
    body: dict = {"kind": "Event", "apiVersion": API_VERSION, "level": level, "auditID": audit_id, "stage": stage,
                  "requestURI": request_uri, "verb": info.verb, "user": user_info(user)}
    if acting is not None and acting != user:
        body["impersonatedUser"] = user_info(acting)
    body["sourceIPs"] = source_ips
    if user_agent:
        body["userAgent"] = user_agent
    ref = object_ref(info)
    if ref is not None:
        body["objectRef"] = ref
    if response is not None:
        body["responseStatus"] = response
    if request_object is not None and at_least(level, "Request"):
        body["requestObject"] = request_object
    if response_object is not None and at_least(level, "RequestResponse"):
        body["responseObject"] = response_object
    body["requestReceivedTimestamp"] = micro_time(received)
    body["stageTimestamp"] = micro_time(at)
    written = (authorization.annotations() if authorization is not None else {}) | (annotations or {})
    if written:
        body["annotations"] = written
    return body
