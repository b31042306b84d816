"""`kube-root-ca.crt` in every namespace, as kube-controller-manager's root-ca-cert-publisher keeps it: a
ConfigMap whose `ca.crt` is the cluster CA, which the API access volume of every pod shows
(apiserver/serviceaccountadmission.py). Written again when changed or deleted; nothing without a CA."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from podnet.apiserver.serviceaccountadmission import ROOT_CA_CONFIGMAP

from .runner import Controller


def to_write(namespaces: Iterable[dict], configmaps: Mapping[str, dict], ca: str) -> list[tuple[str, dict]]:
    """("create" or "replace", ConfigMap) for each active namespace whose kube-root-ca.crt is missing or
    stale. Pure."""
    writes = []
    for namespace in namespaces:
        meta = namespace.get("metadata") or {}
        if meta.get("deletionTimestamp") or (namespace.get("status") or {}).get("phase", "Active") != "Active":
            continue
        current = configmaps.get(f"{meta['name']}/{ROOT_CA_CONFIGMAP}")
        wanted = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": meta["name"]}, "data": {"ca.crt": ca}}
        if current is None:
            writes.append(("create", wanted))
        elif (current.get("data") or {}) != wanted["data"]:
            wanted["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
            writes.append(("replace", {**current, "data": wanted["data"]}))
    return writes


class RootCaPublisher(Controller):
    name = "root-ca-cert-publisher"
    needs = ("namespaces", "configmaps")

    async def reconcile(self) -> None:
        if not self.settings.root_ca:
            return
        for action, configmap in to_write(self.store("namespaces").values(), self.store("configmaps"), self.settings.root_ca):
            where = f"{configmap['metadata']['namespace']}/{ROOT_CA_CONFIGMAP}"
            write = self.client.create(configmap) if action == "create" else self.client.replace(configmap)
            await self.write(f"{action} configmap {where}", write)
