"""The bounded-frequency runner the controllers use."""

import asyncio
import contextlib

from podnet.runner import BoundedFrequencyRunner


@contextlib.asynccontextmanager
async def running(runner):
    task = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_burst_of_triggers_costs_one_run_and_runs_are_spaced():
    times = []

    async def reconcile():
        times.append(asyncio.get_running_loop().time())

    runner = BoundedFrequencyRunner("t", reconcile, min_interval=0.1, max_interval=60, retry=0.1, max_retry=5.0)
    async with running(runner):
        for _ in range(50):
            runner.trigger()
        await asyncio.sleep(0.05)
        assert len(times) == 1
        runner.trigger()
        await asyncio.sleep(0.2)
    assert len(times) == 2
    assert times[1] - times[0] >= 0.099


async def test_runs_at_least_every_max_interval_without_triggers():
    count = 0

    async def reconcile():
        nonlocal count
        count += 1

    runner = BoundedFrequencyRunner("t", reconcile, min_interval=0.01, max_interval=0.05, retry=0.01, max_retry=5.0)
    async with running(runner):
        await asyncio.sleep(0.3)
    assert 3 <= count <= 8


async def test_a_failed_run_is_retried():
    attempts = 0
    done = asyncio.Event()

    async def reconcile():
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("API down")
        done.set()

    runner = BoundedFrequencyRunner("t", reconcile, min_interval=0.01, max_interval=60, retry=0.01, max_retry=5.0)
    async with running(runner):
        runner.trigger()
        await asyncio.wait_for(done.wait(), 2)
    assert attempts == 3
