"""kube-proxy's bounded-frequency runner on a real event loop: bursts coalesce, runs keep their minimum
spacing, a periodic run comes without triggers, a failed sync is retried."""

import asyncio

from podnet.runner import BoundedFrequencyRunner


async def run_for(runner: BoundedFrequencyRunner, seconds: float) -> None:
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(seconds)
    finally:
        task.cancel()


async def test_a_burst_of_triggers_costs_one_run_and_runs_keep_their_spacing():
    loop = asyncio.get_running_loop()
    runs: list[float] = []

    async def sync() -> None:
        runs.append(loop.time())

    runner = BoundedFrequencyRunner("t", sync, min_interval=0.2, max_interval=60, retry=0.01, max_retry=0.1)
    for _ in range(50):
        runner.trigger()
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)
    assert len(runs) == 1
    for _ in range(10):  # a second burst right after the first run waits out the minimum interval
        runner.trigger()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    task.cancel()
    assert len(runs) == 2 and runs[1] - runs[0] >= 0.19


async def test_periodic_run_without_triggers_and_retry_after_failure():
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("agent not listening yet")

    runner = BoundedFrequencyRunner("t", flaky, min_interval=0.0, max_interval=0.1, retry=0.02, max_retry=0.1)
    runner.trigger()
    await run_for(runner, 0.35)
    assert calls >= 3  # the failed first run, its retry, and periodic runs after it
