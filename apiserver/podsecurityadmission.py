"""The PodSecurity admission step of the write path: what `podsecurity` decides, applied to one request.

- a new Pod: refused (403 Forbidden, `pods "x" is forbidden: violates PodSecurity ...`) when it breaks its
  namespace's enforce level; `Warning` headers for the warn level;
- a Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob or ReplicationController whose pod
  template is new or changed: warnings only;
- a Namespace: its PodSecurity labels must be levels and versions (422 Invalid), an enforce label that
  becomes `privileged` takes cluster-admin-equivalent rights (403), and a new enforce level warns of the
  pods already there that it would refuse (what `kubectl label --dry-run=server` shows before enforcing).
Pod updates are not judged: a pod's spec is immutable but for fields no check reads, as PodSecurity
exempts them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from podnet.apiserver import fieldvalidation, podsecurity, status
from podnet.apiserver.audit.log import annotate
from podnet.apiserver.auth import User
from podnet.apiserver.rbac.authorizer import Attributes, Decision
from podnet.apiserver.status import ApiError, Cause

from podnet.api.kinds import Kind

# Every verb on every resource of every group, cluster-wide: what cluster-admin holds.
_CLUSTER_ADMIN = Attributes("*", "", "*", "*")


class PodSecurityAdmission:
    """`namespace_labels(name)` reads a namespace's labels (None: it does not exist); `namespace_pods(name)`
    its pods; `allowed(user, attrs)` is the authorizer."""

    def __init__(self, namespace_labels: Callable[[str], Awaitable[dict | None]],
                 namespace_pods: Callable[[str], Awaitable[list[dict]]],
                 allowed: Callable[[User, Attributes], Decision]):
        self._namespace_labels = namespace_labels
        self._namespace_pods = namespace_pods
        self._allowed = allowed

    async def admit(self, request: web.Request | None, user: User | None, kind: Kind, obj: dict, old: dict | None) -> None:
        """Raises the ApiError that refuses the write, or adds its warnings to `request`."""
        if kind.kind == "Namespace":
            self._admit_namespace(user, kind, obj, old)
            if old is not None and request is not None:
                await self._warn_of_existing_pods(request, obj, old)
            return
        if kind.kind == "Pod":
            if old is not None:
                return
            decision = podsecurity.admit_pod(await self._labels(obj), obj)
        elif podsecurity.pod_template(kind.kind, obj) is not None:
            if old is not None and podsecurity.pod_template(kind.kind, old) == podsecurity.pod_template(kind.kind, obj):
                return
            decision = podsecurity.admit_workload(await self._labels(obj), kind.kind, obj)
        else:
            return
        for key, value in decision.audit:
            annotate(key, value)
        if decision.forbidden is not None:
            name = str(obj["metadata"].get("name") or "")
            raise ApiError(status.status(403, "Forbidden", f'{kind.plural} "{name}" is forbidden: {decision.forbidden}',
                                         {"name": name, "kind": kind.plural}))
        if request is not None:
            for warning in decision.warnings:
                fieldvalidation.warn(request, warning)

    async def _labels(self, obj: dict) -> dict:
        return await self._namespace_labels(str(obj["metadata"].get("namespace") or "")) or {}

    async def _warn_of_existing_pods(self, request: web.Request, obj: dict, old: dict) -> None:
        labels, old_labels = obj["metadata"].get("labels"), (old.get("metadata") or {}).get("labels")
        if podsecurity.policy_of(labels).enforce == podsecurity.policy_of(old_labels).enforce:
            return
        name = str(obj["metadata"].get("name") or "")
        for warning in podsecurity.existing_pod_warnings(name, old_labels, labels, await self._namespace_pods(name)):
            fieldvalidation.warn(request, warning)

    def _admit_namespace(self, user: User | None, kind: Kind, obj: dict, old: dict | None) -> None:
        labels = obj["metadata"].get("labels") or {}
        name = str(obj["metadata"].get("name") or "")
        errors = podsecurity.label_errors(labels)
        if errors:
            raise status.invalid(kind, name, [
                Cause(f"metadata.labels[{e.label}]", "FieldValueInvalid", f'Invalid value: "{e.value}": {e.detail}')
                for e in errors])
        was_privileged = old is not None and podsecurity.sets_privileged_enforce((old.get("metadata") or {}).get("labels"))
        if not podsecurity.sets_privileged_enforce(labels) or was_privileged or user is None:
            return
        if not self._allowed(user, _CLUSTER_ADMIN).allowed:
            raise ApiError(status.status(
                403, "Forbidden",
                f'namespaces "{name}" is forbidden: User "{user.name}" cannot set label '
                f'{podsecurity.LABEL_PREFIX}enforce=privileged: it takes cluster-admin rights',
                {"name": name, "kind": "namespaces"}))
