"""The store side of Service allocation claims (decisions in `claims`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable

from podnet.apiserver import claims
from podnet.apiserver.claims import Claim
from podnet.apiserver.status import ApiError
from podnet.apiserver.storage.base import AlreadyExists, Conflict, NotFound, StorageError, Store

log = logging.getLogger(__name__)


class ClaimTaken(Exception):
    """Another API server claimed a value this one admitted: its view was stale."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class ClaimStore:
    def __init__(self, store: Store, guard: Callable[[Awaitable], Awaitable]):
        self.store = store
        self._guard = guard  # the API server's storage wrapper: timeouts and store errors as API Statuses

    async def list(self) -> list[Claim]:
        found: list[Claim] = []
        for prefix in (claims.IP_PREFIX, claims.PORT_PREFIX):
            kvs, _ = await self._guard(self.store.list(prefix))
            found.extend(Claim.decode(kv.key, kv.value, kv.mod_revision) for kv in kvs)
        return found

    async def take(self, keys: list[str], owner: str) -> None:
        """Claims `keys` for `owner`, all or none: raises ClaimTaken (having given back what it took) when
        another Service holds one. A claim the owner already has (a retried write) is kept."""
        taken: list[str] = []
        try:
            for key in keys:
                try:
                    await self._guard(self.store.create(key, claims.claim_value(owner, _now())))
                    taken.append(key)
                except AlreadyExists:
                    existing = await self._guard(self.store.get(key))
                    if existing is None or Claim.decode(key, existing.value, existing.mod_revision).owner != owner:
                        raise ClaimTaken(key) from None
        except BaseException:
            await self.give_back(taken, owner)
            raise

    async def give_back(self, keys: list[str], owner: str) -> None:
        """Removes `owner`'s claims on `keys`; another owner's claim on one of them is left alone."""
        for key in keys:
            with contextlib.suppress(NotFound, Conflict):
                existing = await self._guard(self.store.get(key))
                if existing is not None and Claim.decode(key, existing.value, existing.mod_revision).owner == owner:
                    await self._guard(self.store.delete(key, existing.mod_revision))

    async def repair(self, services: list[dict], *, service_cidr: str, node_port_range: tuple[int, int]) -> None:
        """Claims what stored Services hold without a claim, and removes claims nobody holds past the grace."""
        plan = claims.plan_repair(services, await self.list(), service_cidr=service_cidr,
                                  node_port_range=node_port_range, now=_now())
        for key, owner in plan.missing.items():
            with contextlib.suppress(AlreadyExists):
                await self._guard(self.store.create(key, claims.claim_value(owner, _now())))
        for claim in plan.leaked:
            with contextlib.suppress(NotFound, Conflict):
                await self._guard(self.store.delete(claim.key, claim.mod_revision))
        if plan.missing or plan.leaked:
            log.info("service allocation claims repaired",
                     extra={"fields": {"claimed": len(plan.missing), "released": len(plan.leaked)}})


async def repair_periodically(repair: Callable[[], Awaitable[None]], interval: float) -> None:
    """kube-apiserver's allocator repair loop: every `interval`, and once at start."""
    while True:
        try:
            await repair()
        except (ApiError, StorageError) as e:  # the store is away (a 503 from the storage guard) or raced
            log.warning("repairing service allocation claims failed: %s", e)
        await asyncio.sleep(interval)
