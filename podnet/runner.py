"""The bounded-frequency runner every controller loop shares (the API server's controllers and
kube-proxy): as Kubernetes' `pkg/util/async/bounded_frequency_runner.go`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class BoundedFrequencyRunner:
    """Runs `fn` after `trigger()`, never sooner than `min_interval` after its previous run (a burst of
    triggers costs one run), and at least every `max_interval` (a periodic resync). A run that raises one
    of `retry_on` is retried after `retry` seconds, the wait doubling up to `max_retry`; any other
    exception ends `run`."""

    def __init__(
        self,
        name: str,
        fn: Callable[[], Awaitable[None]],
        *,
        min_interval: float,
        max_interval: float,
        retry: float,
        max_retry: float,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
    ):
        self.name = name
        self.fn = fn
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.retry = retry
        self.max_retry = max_retry
        self.retry_on = retry_on
        self._wake = asyncio.Event()
        self.runs = 0

    def trigger(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = float("-inf")
        retry = self.retry
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.max_interval)
            delay = last + self.min_interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._wake.clear()
            last = loop.time()
            self.runs += 1
            try:
                await self.fn()
                retry = self.retry
            except self.retry_on as exc:
                # An I/O failure is expected while a peer is away; anything else is a bug worth its traceback.
                log.warning("%s: run failed: %s; retrying in %.2fs", self.name, exc, retry,
                            exc_info=not isinstance(exc, OSError | TimeoutError))
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.max_retry)
                self._wake.set()
