"""The controller manager: one informer per kind, shared by every controller, and every controller run
in one task group until cancelled — as kube-controller-manager runs its controllers over shared
informers.
"""

from __future__ import annotations

import asyncio

from podnet.apiserver.config import ApiServerConfig

from podnet.client import ApiClient, Informer

from .collector import add_informers as add_collector_informers
from .loops import CONTROLLERS
from .nodelifecycle import NODE_LEASE_NAMESPACE
from .runner import Settings


def _informers(client: ApiClient) -> dict[str, Informer]:
    """One informer per kind, shared by every controller that reads it."""
    informers = {plural: Informer(client, plural) for plural in (
        "namespaces", "nodes", "pods", "services", "endpoints", "endpointslices", "deployments",
        "replicasets", "statefulsets", "daemonsets", "serviceaccounts", "jobs", "resourcequotas", "configmaps",
        "secrets", "cronjobs", "controllerrevisions")}
    informers["leases"] = Informer(client, "leases", NODE_LEASE_NAMESPACE)
    add_collector_informers(client, informers)
    return informers


async def run_all(client: ApiClient, config: ApiServerConfig) -> None:
    """Runs every controller against the API server `client` talks to, until cancelled, with what
    `runner.Settings` reads of the API server's config."""
    settings = Settings.from_config(config, client.server)
    informers = _informers(client)
    controllers = [controller(client, informers, settings) for controller in CONTROLLERS]
    async with asyncio.TaskGroup() as group:
        for informer in informers.values():
            group.create_task(informer.run())
        for controller in controllers:
            group.create_task(controller.run())
