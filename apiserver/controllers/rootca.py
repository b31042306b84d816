"""The `kube-root-ca.crt` ConfigMap of every namespace, as kube-controller-manager's root-ca-cert-publisher
keeps it: `ca.crt` holds the CA that signs the API server's serving certificate, so that a pod's projected
service-account volume (token, ca.crt, namespace) lets in-cluster clients verify the server they reach at
10.96.0.1. Created in each active namespace, put back when deleted or changed, never in a namespace
that is terminating. Without a CA (an API server on plain HTTP) there is nothing to publish."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from .runner import Controller

ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_KEY = "ca.crt"


def wanted(namespaces: Iterable[dict], configmaps: Mapping[str, dict], ca_pem: str) -> list[tuple[dict, dict | None]]:
    """(the ConfigMap to write, the one it replaces or None) for each active namespace whose ConfigMap is
    missing or says something else. Pure."""
    writes = []
    for namespace in namespaces:
        meta = namespace.get("metadata") or {}
        if (namespace.get("status") or {}).get("phase", "Active") != "Active" or meta.get("deletionTimestamp"):
            continue
        current = configmaps.get(f"{meta['name']}/{ROOT_CA_CONFIGMAP}")
        if current is not None and (current.get("data") or {}) == {ROOT_CA_KEY: ca_pem}:
            continue
        configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": meta["name"],
                                  "annotations": {"kubernetes.io/description": (
                                      "Contains a CA bundle that can be used to verify the kube-apiserver when using "
                                      "internal endpoints such as the internal service IP or kubernetes.default.svc. "
                                      "No other usage is guaranteed across distributions of Kubernetes clusters.")}},
                     "data": {ROOT_CA_KEY: ca_pem}}
        writes.append((configmap, current))
    return writes


class RootCaPublisher(Controller):
    name = "root-ca-cert-publisher"
    needs = ("namespaces", "configmaps")

    async def reconcile(self) -> None:
        ca_file = self.settings.root_ca_file
        if not ca_file:
            return
        ca_pem = Path(ca_file).read_text()
        for configmap, current in wanted(self.store("namespaces").values(), self.store("configmaps"), ca_pem):
            key = f"{configmap['metadata']['namespace']}/{ROOT_CA_CONFIGMAP}"
            if current is None:
                await self.write(f"create configmap {key}", self.client.create(configmap))
            else:
                await self.write(f"update configmap {key}", self.client.replace({**current, "data": configmap["data"]}))
