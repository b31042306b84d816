"""The API server on a three-member etcd: the etcd leader SIGKILLed under writes, then a second member; the
writes go on after the election, stop with 503s without a quorum, and once the members are back everything
acknowledged is there and the whole history of reads and writes is linearizable."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from support.registers import History, Op, violations

from podnet.client import ApiError

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

NAMESPACE = "registers"
KEYS = [f"r{i}" for i in range(6)]
WRITERS = 4


def _register(name: str, value: str, version: str | None = None) -> dict:
    metadata = {"name": name, "namespace": NAMESPACE}
    if version is not None:
        metadata["resourceVersion"] = version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"value": value}}


class Workload:
    """Writers doing read-then-compare-and-swap on the registers, recording every operation."""

    def __init__(self, client) -> None:
        self.client = client
        self.history = History()
        self.acks: list[float] = []  # when each acknowledged write came back
        self.unavailable = 0
        self._counter = itertools.count()
        self._stop = asyncio.Event()

    async def run(self, writer: int) -> None:
        keys = itertools.cycle(KEYS[writer % len(KEYS):] + KEYS[:writer % len(KEYS)])
        while not self._stop.is_set():
            key = next(keys)
            current = await self._read(key)
            if current is None:
                await asyncio.sleep(0.05)
                continue
            await self._write(key, current, f"w{writer}-{next(self._counter)}")

    async def _read(self, key: str) -> str | None:
        invoked = time.monotonic()
        try:
            obj = await self.client.get("configmaps", key, NAMESPACE)
        except ApiError:
            self.unavailable += 1
            return None
        version = obj["metadata"]["resourceVersion"]
        self.history.add(Op("read", key, obj["data"]["value"], int(version), invoked, time.monotonic()))
        return version

    async def _write(self, key: str, version: str, value: str) -> None:
        invoked = time.monotonic()
        try:
            written = await self.client.replace(_register(key, value, version))
        except ApiError as e:
            if e.code == 409:
                return  # refused: it did not happen
            self.unavailable += e.code in (0, 503, 504)
            self.history.add(Op("write", key, value, None, invoked, time.monotonic(), "unknown"))
            return
        self.acks.append(time.monotonic())
        self.history.add(Op("write", key, value, int(written["metadata"]["resourceVersion"]), invoked, time.monotonic()))

    def stop(self) -> None:
        self._stop.set()


async def _acks_after(workload: Workload, moment: float, count: int, timeout: float) -> float:
    """When the `count`-th write acknowledged after `moment` came back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [t for t in workload.acks if t > moment]
        if len(later) >= count:
            return later[count - 1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} writes acknowledged within {timeout}s after {moment:.2f}")


async def test_writes_outlive_the_etcd_leader_and_stop_cleanly_without_a_quorum(make_api_server, etcd_cluster):
    server = make_api_server(etcd_cluster.url)
    async with server.client() as client:
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        initial = {}
        for key in KEYS:
            created = await client.create(_register(key, "initial"))
            initial[key] = ("initial", int(created["metadata"]["resourceVersion"]))
        workload = Workload(client)
        writers = [asyncio.create_task(workload.run(i)) for i in range(WRITERS)]
        try:
            await _acks_after(workload, 0, 50, 20)

            leader = etcd_cluster.leader()
            killed_at = time.monotonic()
            await asyncio.to_thread(leader.kill)
            resumed = await _acks_after(workload, killed_at, 1, 20)
            gap = resumed - max((t for t in workload.acks if t <= killed_at), default=killed_at)
            print(f"write gap over the etcd leader's SIGKILL: {gap * 1000:.0f} ms")
            await _acks_after(workload, resumed, 30, 20)

            # Two of three down: no quorum, so every write is refused with a 503 Status.
            _, second = [m for m in etcd_cluster.members if m.process is not None]
            await asyncio.to_thread(second.kill)
            lost_at = time.monotonic()
            for attempt in range(2):  # past the dead members to the one without a quorum, which cannot commit
                with pytest.raises(ApiError) as refused:
                    await asyncio.wait_for(client.create(_register(f"during-outage-{attempt}", "x")), 15)
                assert refused.value.code == 503 and refused.value.status.get("kind") == "Status"
            print(f"without a quorum: {refused.value.code} after {time.monotonic() - lost_at:.1f}s: {refused.value}")
            assert "did not answer within" in str(refused.value)

            for member in (leader, second):
                await asyncio.to_thread(member.launch)
            for member in (leader, second):
                await asyncio.to_thread(member.wait_ready)
            back_at = time.monotonic()
            await _acks_after(workload, back_at, 30, 30)
        finally:
            workload.stop()
            await asyncio.gather(*writers)

        # Everything acknowledged is there: each register holds a version no older than its last acknowledged write.
        for key in KEYS:
            final = await client.get("configmaps", key, NAMESPACE)
            last = max((op.version for op in workload.history.acknowledged_writes() if op.key == key), default=0)
            assert int(final["metadata"]["resourceVersion"]) >= last
    acknowledged = len(workload.history.acknowledged_writes())
    assert acknowledged >= 110
    assert violations(workload.history, initial) == []
    print(f"{acknowledged} writes acknowledged, {len(workload.history.ops)} operations checked")


def test_the_check_finds_a_stale_read_and_a_lost_write():
    history = History([
        Op("write", "r0", "a", 10, invoked=1.0, completed=2.0),
        Op("read", "r0", "initial", 5, invoked=3.0, completed=4.0),  # after the write was acknowledged
        Op("write", "r0", "b", 9, invoked=5.0, completed=6.0),  # ordered before an earlier acknowledged write
        Op("read", "r0", "ghost", 12, invoked=7.0, completed=8.0),  # a value nobody wrote
    ])
    found = violations(history, {"r0": ("initial", 5)})
    assert any("began after the write @10 was acknowledged" in v for v in found)
    assert any("write b@9 began after a@10" in v for v in found)
    assert any("ghost@12, which no write stored" in v for v in found)
