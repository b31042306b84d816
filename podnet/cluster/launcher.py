"""Runs one host's processes inside a container: in order, each healthy before the next, restarting none.

A container is a host, and a host whose process died should look dead: when any process exits, the others
are stopped and the launcher exits with that process's status, so `docker ps` and compose show it. SIGTERM
(`docker stop`) stops the processes in reverse start order within a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from podnet.cluster.supervisor import healthy
from podnet.cluster.topology import ComponentSpec, Health

log = logging.getLogger("podnet.launcher")


class LaunchError(RuntimeError):
    pass


# A flag whose name holds one of these carries its secret on the command line (which `ps` shows anyone on
# the host); a log is read by more people still, so it never repeats the value. `--token-file` and the
# like carry a path, which is no secret.
_SECRET_WORDS = ("token", "password", "secret")
_PATH_SUFFIXES = ("-file", "-dir", "-path")
REDACTED = "REDACTED"


def _carries_secret(flag: str) -> bool:
    name = flag.lstrip("-").lower()
    return any(word in name for word in _SECRET_WORDS) and not name.endswith(_PATH_SUFFIXES)


def loggable_argv(argv: Sequence[str]) -> str:
    """argv as a shell would read it, the value of every secret-carrying flag replaced by REDACTED."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append(REDACTED)
            hide_next = False
            continue
        name, equals, _ = arg.partition("=")
        if arg.startswith("-") and _carries_secret(name):
            if equals:
                arg = f"{name}={REDACTED}"
            else:
                hide_next = True
        shown.append(arg)
    return shlex.join(shown)


def parse_process(text: str) -> ComponentSpec:
    """A process as `compose.process_arg` writes it: {"name", "argv", "health", "external"?}."""
    try:
        data = json.loads(text)
        return ComponentSpec(data["name"], tuple(data["argv"]), Health(**data.get("health", {})),
                             bool(data.get("external", False)))
    except (ValueError, TypeError, KeyError) as exc:
        raise LaunchError(f"not a process description ({exc})") from None  # the text may hold a secret


async def wait_for(url: str, timeout: float, ca_file: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not await healthy({"http": url, "ca": ca_file}):
        if time.monotonic() > deadline:
            raise LaunchError(f"{url} did not answer within {timeout:.0f}s")
        await asyncio.sleep(0.5)


class _Shutdown(Exception):
    """A stop signal came while starting."""


async def _stop(children: list[tuple[ComponentSpec, asyncio.subprocess.Process]], grace: float) -> None:
    for spec, child in reversed(children):
        if child.returncode is not None:
            continue
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            await asyncio.wait_for(child.wait(), grace)
        except TimeoutError:
            log.warning("%s did not stop within %.0fs; killing it", spec.name, grace)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


async def launch(processes: Sequence[ComponentSpec], *, wait_urls: Sequence[str] = (), ca_file: str | None = None,
                 timeout: float = 120.0, grace: float = 8.0) -> int:
    """Starts `processes` in order and returns when one exits (its status) or on SIGTERM/SIGINT (0)."""
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown.set)
    children: list[tuple[ComponentSpec, asyncio.subprocess.Process]] = []
    try:
        for url in wait_urls:
            log.info("waiting for %s", url)
            await _until_shutdown(wait_for(url, timeout, ca_file), shutdown)
        for spec in processes:
            argv = list(spec.argv) if spec.external else [sys.executable, "-m", "podnet", *spec.argv]
            log.info("starting %s: %s", spec.name, loggable_argv(argv))
            child = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
            children.append((spec, child))
            await _until_shutdown(_until_healthy(spec, child, timeout), shutdown)
            log.info("%s is healthy (pid %d)", spec.name, child.pid)
        exits = {asyncio.ensure_future(child.wait()): (spec, child) for spec, child in children}
        stop = asyncio.ensure_future(shutdown.wait())
        done, _ = await asyncio.wait([*exits, stop], return_when=asyncio.FIRST_COMPLETED)
        for task in [*exits, stop]:
            task.cancel()
        if stop in done:
            log.info("stopping")
            return 0
        spec, child = next(exits[t] for t in done if t in exits)
        code = child.returncode
        if code < 0:  # killed by a signal: report it the way a shell does
            log.error("%s was killed by signal %d; stopping this host", spec.name, -code)
            return 128 - code
        log.error("%s exited with status %d; stopping this host", spec.name, code)
        return code or 1
    except _Shutdown:
        log.info("stopping")
        return 0
    finally:
        await _stop(children, grace)


async def _until_shutdown(coro, shutdown: asyncio.Event) -> None:
    """Runs `coro`, or raises _Shutdown when a stop signal comes first."""
    work = asyncio.ensure_future(coro)
    stop = asyncio.ensure_future(shutdown.wait())
    try:
        await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not work.done():
        work.cancel()
        raise _Shutdown
    work.result()


async def _until_healthy(spec: ComponentSpec, child: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await healthy(asdict(spec.health)):
        if child.returncode is not None:
            raise LaunchError(f"{spec.name} exited with status {child.returncode} while starting")
        if time.monotonic() > deadline:
            raise LaunchError(f"{spec.name} did not become healthy within {timeout:.0f}s")
        await asyncio.sleep(0.2)
