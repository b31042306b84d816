"""The `default` ServiceAccount of every namespace, as kube-controller-manager's serviceaccounts controller
keeps it: created when a namespace becomes active, created again when deleted, never in a namespace that
is terminating (its create would be refused anyway)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .runner import Controller

DEFAULT_SERVICE_ACCOUNT = "default"


def missing(namespaces: Iterable[dict], service_accounts: Mapping[str, dict]) -> list[dict]:
    """The ServiceAccounts to create: `default` in each active namespace that lacks it. Pure."""
    wanted = []
    for namespace in namespaces:
        meta = namespace.get("metadata") or {}
        active = (namespace.get("status") or {}).get("phase", "Active") == "Active"
        if not active or meta.get("deletionTimestamp"):
            continue
        if f"{meta['name']}/{DEFAULT_SERVICE_ACCOUNT}" not in service_accounts:
            wanted.append({"apiVersion": "v1", "kind": "ServiceAccount",
                           "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": meta["name"]}})
    return wanted


class ServiceAccounts(Controller):
    name = "serviceaccounts"
    needs = ("namespaces", "serviceaccounts")

    async def reconcile(self) -> None:
        for account in missing(self.store("namespaces").values(), self.store("serviceaccounts")):
            namespace = account["metadata"]["namespace"]
            await self.write(f"create serviceaccount {namespace}/default", self.client.create(account))
