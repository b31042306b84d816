"""Stopping tasks from cleanup code."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Future | None) -> None:
    """Cancels `tasks` and returns once each has ended, however it ended.

    A cancellation sent to the caller meanwhile still reaches it. The usual `task.cancel()` followed by
    `with suppress(CancelledError): await task` cannot tell the task's CancelledError from the caller's
    own, swallows the latter, and leaves a caller that was told to stop running on: a loop that retries
    after errors then never ends, and whoever waits for it (a server's cleanup) waits for ever."""
    stopping = {task for task in tasks if task is not None}
    if not stopping:
        return
    for task in stopping:
        task.cancel()
    await asyncio.wait(stopping)
    for task in stopping:
        if not task.cancelled() and task.exception() is not None:
            log.debug("%r ended with %r while being stopped", task, task.exception())
