"""The resourcequota controller, as kube-controller-manager's: every quota's status holds its hard limits
and what its namespace uses now, recounted whenever an object it counts comes or goes (so a deleted pod
gives its unit back at once) and every few seconds for the kinds no informer here follows. The counting
is quota.py's."""

from __future__ import annotations

from collections import defaultdict

from podnet.apiserver import quota

from .runner import Controller


def _namespace(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("namespace") or ""


class ResourceQuotas(Controller):
    name = "resourcequota"
    needs = ("resourcequotas", "pods", "services", "configmaps", "secrets")
    max_interval = 5.0

    async def reconcile(self) -> None:
        by_namespace: defaultdict[str, list[dict]] = defaultdict(list)
        for resource_quota in self.store("resourcequotas").values():
            by_namespace[_namespace(resource_quota)].append(resource_quota)
        for namespace, quotas in by_namespace.items():
            objects = {}
            for plural in quota.kinds_to_count(quotas):
                if plural in self.needs:
                    objects[plural] = [o for o in self.store(plural).values() if _namespace(o) == namespace]
                else:
                    objects[plural] = (await self.client.list(plural, namespace))["items"]
            in_use = quota.used({r for q in quotas for r in (q.get("spec") or {}).get("hard") or {}}, objects)
            for resource_quota in quotas:
                await self._write_status(resource_quota, quota.status_of(resource_quota, in_use))

    async def _write_status(self, resource_quota: dict, wanted: dict) -> None:
        current = resource_quota.get("status") or {}
        if current == wanted:
            return
        # A merge patch: what the status no longer names is set to null, which removes it.
        patch = {part: {**dict.fromkeys(current.get(part) or {}), **wanted[part]} for part in ("hard", "used")}
        meta = resource_quota["metadata"]
        await self.write(f"status of resourcequota {meta['namespace']}/{meta['name']}",
                         self.client.patch("resourcequotas", meta["name"], {"status": patch},
                                           namespace=meta["namespace"], subresource="status"))
