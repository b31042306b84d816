"""Stopping tasks from cleanup code: the stopped task ends, and the caller still hears its own cancellation."""

from __future__ import annotations

import asyncio

import pytest
from podnet.apiserver.storage.sqlite import SqliteStore
from podnet.apiserver.watch import WatchHub

from podnet.tasks import cancel_and_wait


async def _slow_to_stop(release: asyncio.Event) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await release.wait()  # cleanup of its own that takes a while
        raise


async def test_the_stopped_task_has_ended_when_it_returns():
    release = asyncio.Event()
    task = asyncio.create_task(_slow_to_stop(release))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0.01)
    assert not stopping.done()
    release.set()
    await stopping
    assert task.cancelled()


async def test_a_cancellation_sent_to_the_caller_while_it_waits_reaches_the_caller():
    release = asyncio.Event()
    task = asyncio.create_task(_slow_to_stop(release))
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    await asyncio.sleep(0.01)
    assert task.cancelled()


async def test_a_task_that_failed_or_finished_is_stopped_without_raising():
    async def fail():
        raise RuntimeError("broken")

    failed = asyncio.create_task(fail())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait(failed, finished, None)
    assert failed.exception() is not None and not finished.cancelled()


async def test_closing_a_storage_watch_does_not_swallow_the_closers_cancellation(tmp_path):
    """The API server's shutdown hung here: a cache follower cancelled while closing its watch went on
    relisting for ever, and the server's cleanup waited for it."""
    store = SqliteStore(str(tmp_path / "store.db"))
    await store.open()
    hub = WatchHub(store, capacity=100)
    try:
        await store.create("/registry/configmaps/default/a", b"{}")
        first = await store.current_revision()
        subscription = await hub.subscribe("/registry/configmaps/", first - 1, {"apiVersion": "v1", "kind": "ConfigMap"})
        assert type(subscription).__name__ == "_StoreSubscription"  # older than the cache: a watch of its own
        closer = asyncio.create_task(subscription.close())
        await asyncio.sleep(0)
        closer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closer
    finally:
        await hub.close()
        await store.close()
