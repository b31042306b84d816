"""The etcd store rides out an election: the leader of three members SIGKILLed while writers create,
update and delete through one EtcdStore. The calls that meet the election ("leader changed", "no leader",
a dropped proposal, the lost leader's reset) are made again inside the store, so none of them fails, and
what each acknowledged write stored is what the keys hold afterwards."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from podnet.apiserver.storage.base import AlreadyExists, Conflict, NotFound, StorageError
from podnet.apiserver.storage.etcd import EtcdStore
from support.local_cluster import nth_after

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

WRITERS = 6


class Writers:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.expected: dict[str, bytes | None] = {}  # key -> what its last acknowledged write left
        self.failures: list[str] = []
        self.acks: list[float] = []
        self._stop = asyncio.Event()
        self._count = itertools.count()

    async def run(self, writer: int) -> None:
        """Each writer has keys of its own: create one, update it twice, delete every other one."""
        while not self._stop.is_set():
            n = next(self._count)
            key = f"/registry/elections/w{writer}-{n}"
            try:
                revision = await self.store.create(key, f"{n}-created".encode())
                self._ack(key, f"{n}-created".encode())
                for step in ("first", "second"):
                    value = f"{n}-{step}".encode()
                    revision = await self.store.update(key, value, revision)
                    self._ack(key, value)
                if n % 2:
                    _, deleted = await self.store.delete(key, revision)
                    assert deleted.value == f"{n}-second".encode()
                    self._ack(key, None)
            except (StorageError, AlreadyExists, Conflict, NotFound) as e:
                self.failures.append(f"{key}: {type(e).__name__}: {e}")

    def _ack(self, key: str, value: bytes | None) -> None:
        self.expected[key] = value
        self.acks.append(time.monotonic())

    def stop(self) -> None:
        self._stop.set()

    async def acks_after(self, moment: float, count: int, timeout: float) -> float:
        return await nth_after(self.acks, moment, count, timeout, f"{count} writes acknowledged")


async def test_writes_through_an_election_are_retried_not_failed(etcd_cluster):
    async with EtcdStore([m.endpoint for m in etcd_cluster.members]) as store:
        writers = Writers(store)
        tasks = [asyncio.create_task(writers.run(i)) for i in range(WRITERS)]
        try:
            await writers.acks_after(0, 100, 30)
            leader = etcd_cluster.leader()
            killed_at = time.monotonic()
            await asyncio.to_thread(leader.kill)
            resumed = await writers.acks_after(killed_at, 1, 20)
            await writers.acks_after(resumed, 100, 30)
        finally:
            writers.stop()
            await asyncio.gather(*tasks)
        gap = resumed - max((t for t in writers.acks if t <= killed_at), default=killed_at)
        print(f"write gap over the etcd leader's SIGKILL: {gap * 1000:.0f} ms; {store.election_retries} calls made "
              f"again; {len(writers.acks)} writes acknowledged")
        assert writers.failures == [], "\n".join(writers.failures)
        for key, value in writers.expected.items():
            found = await store.get(key)
            assert (found.value if found else None) == value, key
