"""Keeps this API server's identity lease renewed and the `kubernetes` Service's endpoints listing every live
API server (decisions in `peerleases`). Every server runs it, leader or not."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable

from podnet.apiserver import peerleases
from podnet.apiserver.election import LEASE_NAMESPACE
from podnet.apiserver.peerleases import Peer

from podnet.client import ApiClient, ApiError

log = logging.getLogger(__name__)
FIRST_RETRY = 0.1  # seconds; doubled after each failed round, up to the renew interval


class EndpointReconciler:
    def __init__(self, client: ApiClient, peer: Peer, hostname: str, interval: float = peerleases.RENEW_INTERVAL):
        self.client = client
        self.peer = peer
        self.hostname = hostname
        self.interval = interval

    async def run(self) -> None:
        """Until cancelled; then takes this server out of the endpoints and deletes its lease."""
        # A failed round is retried soon, not a whole interval later: at start kube-system may not exist yet,
        # and until the first round succeeds pods that dial kubernetes.default are refused.
        retry = FIRST_RETRY
        try:
            while True:
                try:
                    await self._renew()
                    await self._reconcile()
                except ApiError as e:
                    log.debug("endpoint reconciliation: %s", e)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, self.interval)
                    continue
                retry = FIRST_RETRY
                await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            await asyncio.shield(self._leave())
            raise

    @staticmethod
    def _now() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    async def _renew(self) -> None:
        lease = peerleases.identity_lease(self.peer, self.hostname, self._now())
        try:
            current = await self.client.get("leases", lease["metadata"]["name"], LEASE_NAMESPACE)
        except ApiError as e:
            if e.code != 404:
                raise
            await self.client.create(lease, LEASE_NAMESPACE)
            return
        spec = {**lease["spec"], "acquireTime": (current.get("spec") or {}).get("acquireTime") or lease["spec"]["acquireTime"]}
        await self.client.replace({**current, "metadata": {**current["metadata"], **{
            k: lease["metadata"][k] for k in ("labels", "annotations")}}, "spec": spec})

    async def _live(self, *, without_self: bool = False) -> list[Peer]:
        listed = await self.client.list("leases", LEASE_NAMESPACE,
                                        label_selector=f"{peerleases.IDENTITY_LABEL}={peerleases.IDENTITY_VALUE}")
        peers = peerleases.live_peers(listed.get("items") or [], self._now(), self.peer.port)
        return [p for p in peers if p != self.peer] if without_self else peers

    async def _reconcile(self, *, without_self: bool = False) -> None:
        endpoints, endpoint_slice = peerleases.kubernetes_endpoints(await self._live(without_self=without_self),
                                                                    self.peer.port)
        await self._put("endpoints", endpoints, lambda current: current.get("subsets") != endpoints["subsets"],
                        lambda current: {**current, "subsets": endpoints["subsets"]})
        fields = ("addressType", "endpoints", "ports")
        await self._put("endpointslices", endpoint_slice, lambda current: any(current.get(k) != endpoint_slice[k] for k in fields),
                        lambda current: {**current, **{k: endpoint_slice[k] for k in fields}})

    async def _put(self, plural: str, wanted: dict, differs: Callable[[dict], bool],
                   updated: Callable[[dict], dict]) -> None:
        try:
            current = await self.client.get(plural, "kubernetes", "default")
        except ApiError as e:
            if e.code != 404:
                raise
            await self.client.create(wanted, "default")
            return
        if differs(current):
            await self.client.replace(updated(current))  # a 409 (another server's write won): next round

    async def _leave(self) -> None:
        """A graceful stop: out of the endpoints now, rather than when the lease would run out."""
        try:
            async with asyncio.timeout(2.0):
                await self.client.delete("leases", peerleases.lease_name(self.peer), LEASE_NAMESPACE)
                await self._reconcile(without_self=True)
        except (ApiError, TimeoutError) as e:
            log.debug("leaving the kubernetes endpoints: %s", e)
