"""Holds a Lease through the API and runs work only while holding it (decisions in `election`)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Awaitable, Callable

from podnet.apiserver import election
from podnet.apiserver.election import Observation, Record, Timings
from prometheus_client import Gauge

from podnet.client import ApiClient, ApiError
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LEADER = Gauge("leader_election_master_status", "1 while this process holds the named lease", ["name"])


class LeaderElector:
    def __init__(self, client: ApiClient, name: str, identity: str, timings: Timings,
                 namespace: str = election.LEASE_NAMESPACE, clock: Callable[[], float] = time.monotonic):
        timings.validate()
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.timings = timings
        self._clock = clock
        self._observation: Observation | None = None
        self._resource_version: str | None = None

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Runs `lead()` while this process holds the lease, until cancelled: waits to acquire it, runs
        the work, and cancels the work once renewals have failed for the renew deadline; then competes
        again. On cancellation the lease is given up, so that another candidate need not wait it out."""
        try:
            while True:
                await self._acquire()
                log.info("became leader", extra={"fields": {"lease": self.name, "identity": self.identity}})
                LEADER.labels(self.name).set(1)
                work = asyncio.create_task(lead(), name=f"leading {self.name}")
                try:
                    await self._renew_while(work)
                finally:
                    LEADER.labels(self.name).set(0)
                    await cancel_and_wait(work)
                if work.done() and not work.cancelled() and work.exception() is not None:
                    log.error("the work under lease %s failed: %r; giving the lease up", self.name, work.exception())
                    await self._release()
                await asyncio.sleep(self._jittered())
        except asyncio.CancelledError:
            await asyncio.shield(self._release())
            raise

    def _jittered(self) -> float:
        return self.timings.retry_period * (1 + random.random() * election.JITTER_FACTOR)

    async def _acquire(self) -> None:
        while not await self._try():
            await asyncio.sleep(self._jittered())

    async def _renew_while(self, work: asyncio.Task) -> None:
        """Renews every retry period while `work` runs; returns when the work ends or the lease is lost."""
        last_renewed = self._clock()
        while not work.done():
            await asyncio.wait({work}, timeout=self.timings.retry_period)
            if work.done():
                return
            remaining = last_renewed + self.timings.renew_deadline - self._clock()
            try:
                async with asyncio.timeout(max(remaining, 0.001)):
                    renewed = await self._try()
            except TimeoutError:
                renewed = False
            if renewed:
                last_renewed = self._clock()
            elif election.deposed(last_renewed, self._clock(), self.timings):
                log.warning("leadership lost: no renewal for %.1fs", self.timings.renew_deadline,
                            extra={"fields": {"lease": self.name, "identity": self.identity}})
                return

    async def _try(self) -> bool:
        """One attempt to acquire or renew; False when another holds the lease or the write lost a race."""
        try:
            lease = await self.client.get("leases", self.name, self.namespace)
        except ApiError as e:
            if e.code != 404:
                log.debug("reading lease %s failed: %s", self.name, e)
                return False
            lease = None
        now = self._clock()
        if lease is not None:
            self._observation = election.observe(self._observation, Record.of(lease), now)
            self._resource_version = lease["metadata"].get("resourceVersion")
        record = election.claim(self._observation if lease is not None else None, self.identity, now,
                                datetime.datetime.now(datetime.UTC), self.timings)
        if record is None:
            return False
        return await self._write(record, create=lease is None)

    async def _write(self, record: Record, *, create: bool) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.spec()}
        try:
            if create:
                written = await self._create(body)
            else:
                body["metadata"]["resourceVersion"] = self._resource_version
                written = await self.client.replace(body)
        except ApiError as e:
            if e.code not in (409, 0, 503, 504):
                log.warning("writing lease %s failed: %s", self.name, e)
            return False
        self._observation = Observation(Record.of(written), self._clock())
        self._resource_version = written["metadata"].get("resourceVersion")
        return True

    async def _create(self, body: dict) -> dict:
        try:
            return await self.client.create(body, self.namespace)
        except ApiError as e:
            if e.code != 404:
                raise
        # kube-apiserver makes kube-system itself; here the controllers that would make it wait for the lease.
        try:
            await self.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        except ApiError as e:
            if e.code != 409:
                raise
        return await self.client.create(body, self.namespace)

    async def _release(self) -> None:
        if self._observation is None:
            return
        record = election.release(self._observation, self.identity, datetime.datetime.now(datetime.UTC))
        if record is None:
            return
        try:
            async with asyncio.timeout(self.timings.retry_period):
                await self._write(record, create=False)
        except TimeoutError:
            log.debug("giving lease %s up timed out", self.name)
