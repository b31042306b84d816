"""The controllers that run inside the API server process (or beside it): they use only the API, through
`podnet.client`, exactly as a separate controller-manager would.

`run_all(client, config)` runs them all until cancelled. The pure decisions live in `allocators`,
`scheduling`, `endpointslices`, `nodelifecycle`, `replicasets`, `deployments`, `statefulsets`, `daemonsets`
and `garbagecollection`; the loops in `loops`, `workloads` and `podsets`, over `runner`.
"""

from __future__ import annotations

import asyncio

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


async def run_all(client: ApiClient, config: object) -> None:
    """Runs every controller against the API server `client` talks to, until cancelled. `config` is the
    API server's config; the names read from it (all optional) are listed in `runner.Settings`."""
    settings = Settings.from_config(config, client.server)
    informers = _informers(client)
    controllers = [controller(client, informers, settings) for controller in CONTROLLERS]
    async with asyncio.TaskGroup() as group:
        for informer in informers.values():
            group.create_task(informer.run())
        for controller in controllers:
            group.create_task(controller.run())
