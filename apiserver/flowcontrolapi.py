"""`flowcontrol.apiserver.k8s.io/v1`, read-only: the FlowSchemas and PriorityLevelConfigurations that
API priority and fairness (fairness.py) classifies by, as kube-apiserver serves its own, so that `kubectl get
flowschemas` and `kubectl get prioritylevelconfigurations` show what a request's
`X-Kubernetes-PF-FlowSchema-UID` names. They are built from the fairness tables, not stored: get and list only.
"""

from __future__ import annotations

import time

from aiohttp import web
from podnet.apiserver import status, tables
from podnet.apiserver.fairness import CATCH_ALL, LEVELS, SCHEMAS, FlowSchema, PriorityLevel
from podnet.apiserver.handlers import RESOURCE_KEY, USER_KEY, VERB_KEY, Resources, respond
from podnet.apiserver.rbac.authorizer import Attributes

from podnet.api.kinds import Kind
from podnet.api.printers import Cell, Column, Printer, age

GROUP, VERSION = "flowcontrol.apiserver.k8s.io", "v1"
_NAME = Column("Name", "Name must be unique within a namespace.", format="name")
_AGE = Column("Age", "CreationTimestamp is a timestamp representing the server time when this object was created.")


def _flow_schema_row(obj: dict, now: float) -> list[Cell]:
    spec = obj["spec"]
    dangling = next((c["status"] for c in obj["status"]["conditions"] if c["type"] == "Dangling"), "?")
    method = (spec.get("distinguisherMethod") or {}).get("type", "<none>")
    return [obj["metadata"]["name"], spec["priorityLevelConfiguration"]["name"], spec["matchingPrecedence"], method,
            age(obj, now), dangling]


def _priority_level_row(obj: dict, now: float) -> list[Cell]:
    spec = obj["spec"]
    limited = spec.get("limited")
    queuing = ((limited or {}).get("limitResponse") or {}).get("queuing") or {}
    cells: list[Cell] = [limited["nominalConcurrencyShares"] if limited else "<none>"]
    cells += [queuing.get(field, "<none>") for field in ("queues", "handSize", "queueLengthLimit")]
    return [obj["metadata"]["name"], spec["type"], *cells, age(obj, now)]


FLOW_SCHEMAS = Kind("FlowSchema", GROUP, VERSION, "flowschemas", False, printer=Printer((
    _NAME, Column("PriorityLevel", "`name` is the name of the priority level configuration being referenced"),
    Column("MatchingPrecedence", "`matchingPrecedence` is used to choose among the FlowSchemas that match a request."),
    Column("DistinguisherMethod", "`distinguisherMethod` defines how to compute the flow distinguisher for requests."),
    _AGE, Column("MissingPL", "references a broken or non-existent PriorityLevelConfiguration"),
), _flow_schema_row))
PRIORITY_LEVELS = Kind("PriorityLevelConfiguration", GROUP, VERSION, "prioritylevelconfigurations", False,
                       printer=Printer((
                           _NAME, Column("Type", "`type` indicates whether this priority level is subject to limitation."),
                           Column("NominalConcurrencyShares", "`nominalConcurrencyShares` (NCS) contributes to the "
                                                              "computation of the NominalConcurrencyLimit (NominalCL)."),
                           Column("Queues", "`queues` is the number of queues for this priority level."),
                           Column("HandSize", "`handSize` is a small positive number that configures the shuffle "
                                              "sharding of requests into queues."),
                           Column("QueueLengthLimit", "`queueLengthLimit` is the maximum number of requests allowed "
                                                      "to be waiting in a given queue of this priority level at a time."),
                           _AGE,
                       ), _priority_level_row))

DISCOVERY: dict[tuple[str, str], list[dict]] = {(GROUP, VERSION): [
    {"name": kind.plural, "singularName": kind.singular, "namespaced": False, "kind": kind.kind, "verbs": ["get", "list"]}
    for kind in (FLOW_SCHEMAS, PRIORITY_LEVELS)
]}


def _metadata(name: str, uid: str, created: str) -> dict:
    return {"name": name, "uid": uid, "resourceVersion": "1", "generation": 1, "creationTimestamp": created,
            "annotations": {"apf.kubernetes.io/autoupdate-spec": "true"}}


def flow_schema(schema: FlowSchema, created: str) -> dict:
    spec: dict = {"priorityLevelConfiguration": {"name": schema.level}, "matchingPrecedence": schema.precedence,
                  "rules": [{"subjects": [{"kind": "Group", "group": {"name": group}} for group in schema.groups],
                             "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                "clusterScope": True, "namespaces": ["*"]}],
                             "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}
    if schema.distinguished_by_user:
        spec["distinguisherMethod"] = {"type": "ByUser"}
    condition = {"type": "Dangling", "status": "False", "lastTransitionTime": created, "reason": "Found",
                 "message": f'This FlowSchema references the PriorityLevelConfiguration object named "{schema.level}" '
                            "and it exists"}
    return {"kind": "FlowSchema", "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": _metadata(schema.name, schema.uid, created), "spec": spec,
            "status": {"conditions": [condition]}}


def priority_level(level: PriorityLevel, created: str) -> dict:
    if level.exempt:
        spec: dict = {"type": "Exempt", "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0}}
    else:
        queuing = {"queues": level.queues, "handSize": level.hand_size, "queueLengthLimit": level.queue_length}
        spec = {"type": "Limited", "limited": {"nominalConcurrencyShares": level.shares, "lendablePercent": 0,
                                               "limitResponse": {"type": "Queue", "queuing": queuing}}}
    return {"kind": "PriorityLevelConfiguration", "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": _metadata(level.name, level.uid, created), "spec": spec,
            "status": {}}


def add_routes(app: web.Application, resources: Resources) -> None:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    objects = {
        FLOW_SCHEMAS: {s.name: flow_schema(s, created) for s in sorted((*SCHEMAS, CATCH_ALL), key=lambda s: s.name)},
        PRIORITY_LEVELS: {level.name: priority_level(level, created) for level in sorted(LEVELS, key=lambda lv: lv.name)},
    }

    def authorize(request: web.Request, kind: Kind, verb: str, name: str = "") -> None:
        request[RESOURCE_KEY], request[VERB_KEY] = kind.plural, verb
        user = request[USER_KEY]
        if not resources.allowed(user, Attributes(verb, "", GROUP, kind.plural, "", name)).allowed:
            raise status.forbidden(user.name, verb, kind, None, request.path, name=name)

    for kind, items in objects.items():
        async def listing(request: web.Request, kind: Kind = kind, items: dict = items) -> web.Response:
            authorize(request, kind, "list")
            body = {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": {"resourceVersion": "1"},
                    "items": list(items.values())}
            return respond(request, tables.represent(request, kind, body))

        async def getting(request: web.Request, kind: Kind = kind, items: dict = items) -> web.Response:
            name = request.match_info["name"]
            authorize(request, kind, "get", name)
            if name not in items:
                raise status.not_found(kind, name)
            return respond(request, tables.represent(request, kind, items[name]))

        app.router.add_get(kind.path(), listing)
        app.router.add_get(kind.path(name="{name}"), getting)
