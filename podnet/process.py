"""What every long-running podnet process shares: the event loop choice, SIGTERM handling, and a
small HTTP server for /healthz and /metrics."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from podnet.tasks import cancel_and_wait


def quiet_garbage_collector() -> None:
    """For a process that moves packets: what is loaded by now (modules, classes) is left out of every
    collection, and the youngest generation is collected after 50,000 allocations instead of 700. A busy
    datapath allocates a few tuples and lists per packet, almost none of them in cycles, so the default
    collected it every few hundred packets for nothing (about a tenth of an encrypted receiver's time)."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


# mallopt(3) parameters (malloc.h) and what a process that moves packets sets them to: the mapping
# threshold at the most glibc allows on 64-bit systems (its dynamic threshold's own ceiling).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_KEPT_FREE = 64 << 20
HEAP_BLOCK_LIMIT = 32 << 20


def keep_freed_heap() -> None:
    """For a process that moves packets: freed memory stays in the heap (up to HEAP_KEPT_FREE at its top),
    and blocks up to HEAP_BLOCK_LIMIT come from the heap rather than from a mapping of their own. A
    super-packet is a 64 KB buffer made and freed thousands of times a second; with glibc's defaults
    (trim past 128 KB) each free could give the pages back to the kernel and the next buffer faulted them
    in again, zeroed: that was more than half the cost of joining and handing on a super-packet. Setting
    the trim threshold stops glibc from moving its mapping threshold, so that is set as well: left at
    128 KB, every larger buffer (a virtual pod's send buffer) would be a fresh mapping, faulted in page by
    page. A C library without mallopt is left as it is."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # pragma: no cover - every glibc has it
        return
    mallopt(_M_TRIM_THRESHOLD, HEAP_KEPT_FREE)
    mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Runs `main(shutdown)` on uvloop when it is installed; SIGTERM and SIGINT set `shutdown`."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run

    async def wrapper() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        await main(shutdown)

    runner(wrapper())


async def serve_until_triggered(
    serve: Callable[[asyncio.Event], Awaitable[None]], shutdown_trigger: Callable[[], Awaitable[Any]] | None
) -> None:
    """Runs `serve(shutdown)`, setting `shutdown` when `shutdown_trigger()` completes (hypercorn's
    convention); without a trigger it runs until `serve` returns."""
    shutdown = asyncio.Event()
    trigger = None
    if shutdown_trigger is not None:
        trigger = asyncio.ensure_future(shutdown_trigger())
        trigger.add_done_callback(lambda _: shutdown.set())
    try:
        await serve(shutdown)
    finally:
        if trigger is not None:
            trigger.cancel()


async def wait_or_shutdown(shutdown: asyncio.Event, awaitable: Awaitable[Any]) -> bool:
    """Waits for `awaitable` until shutdown is set, then cancels it; True when it finished first."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(shutdown.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(task, stopper)
    return not task.cancelled()


def metrics_response(registry: CollectorRegistry = REGISTRY) -> web.Response:
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def start_status_server(
    host: str, port: int, healthy: Callable[[], bool], registry: CollectorRegistry = REGISTRY
) -> tuple[web.AppRunner, int]:
    """Serves /healthz (200 when `healthy()`, else 503) and /metrics; returns the runner and real port."""

    async def healthz(request: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(status=200 if ok else 503, text="ok" if ok else "unhealthy")

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response(registry)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    real_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, real_port
