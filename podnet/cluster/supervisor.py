"""Starts a topology's processes in order, records them, and stops them in reverse.

Each process runs detached in its own session with its log in `<home>/logs/`, so `podnet up` can return and
leave the cluster running; `<home>/cluster.json` records what was started (argv, PID and the PID's start time,
so a reused PID is never killed by mistake) for status, kill, start, down and clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from podnet.cluster.topology import ComponentSpec
from podnet.netns.names import enter_command
from podnet.pids import start_time
from podnet.rpc.session import RpcClient

STATE_FILE = "cluster.json"


class SupervisorError(RuntimeError):
    pass


@dataclass
class Process:
    name: str
    argv: list[str]
    health: dict
    external: bool = False
    netns: str | None = None  # run in this network namespace
    pid: int | None = None
    pid_start: str | None = None
    restarts: int = 0
    starts: int = 0

    @property
    def alive(self) -> bool:
        return self.pid is not None and start_time(self.pid) == self.pid_start and self.pid_start is not None


@dataclass
class ClusterState:
    home: Path
    topology: dict
    processes: list[Process] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.home / STATE_FILE

    def save(self) -> None:
        data = {"topology": self.topology, "processes": [asdict(p) for p in self.processes]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, home: Path) -> ClusterState:
        try:
            data = json.loads((home / STATE_FILE).read_text())
        except FileNotFoundError:
            raise SupervisorError(f"no cluster in {home} (start one with `podnet up`)") from None
        except ValueError as exc:
            raise SupervisorError(f"{home / STATE_FILE} is damaged ({exc}); run `podnet clean`") from None
        return cls(home, data["topology"], [Process(**p) for p in data["processes"]])

    def process(self, name: str) -> Process:
        for p in self.processes:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.processes)
        raise SupervisorError(f"no component {name!r} (components: {names})")

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / (name.replace("/", "_") + ".log")


def new_state(home: Path, topology: dict, specs: list[ComponentSpec]) -> ClusterState:
    processes = [Process(s.name, list(s.argv), asdict(s.health), s.external, s.netns) for s in specs]
    return ClusterState(home, topology, processes)


def launch(state: ClusterState, proc: Process) -> None:
    """Starts one process detached, its output appended to its log."""
    if proc.alive:
        raise SupervisorError(f"{proc.name} is already running (pid {proc.pid})")
    log_path = state.log_path(proc.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = proc.argv if proc.external else [sys.executable, "-m", "podnet", *proc.argv]
    if proc.netns:
        argv = [*enter_command(proc.netns), *argv]
    env = dict(os.environ, PODNET_HOME=str(state.home), PYTHONUNBUFFERED="1")
    with open(log_path, "ab") as log:
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                     start_new_session=True, cwd=state.home)
        except FileNotFoundError:
            raise SupervisorError(f"{proc.name}: {argv[0]} is not installed") from None
    proc.pid = child.pid
    proc.pid_start = start_time(child.pid)
    if proc.starts:
        proc.restarts += 1
    proc.starts += 1
    state.save()


async def healthy(health: dict, timeout: float = 2.0) -> bool:
    try:
        if health.get("http"):
            # An HTTPS health URL is checked as any client would: its certificate chains to the cluster CA.
            tls = ssl.create_default_context(cafile=health["ca"]) if health.get("ca") else True
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session, session.get(
                health["http"], timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                return response.status == 200
        if health.get("rpc"):
            async with RpcClient(health["rpc"]) as client:
                return await client.call("ping", timeout=timeout) == "pong"
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False
    return False


async def wait_healthy(state: ClusterState, proc: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive:
            tail = _tail(state.log_path(proc.name), 15)
            raise SupervisorError(f"{proc.name} exited while starting; last lines of its log:\n{tail}")
        if await healthy(proc.health):
            return
        await asyncio.sleep(0.1)
    raise SupervisorError(f"{proc.name} did not become healthy within {timeout:.0f}s "
                          f"(log: {state.log_path(proc.name)})")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def signal_process(proc: Process, sig: int) -> bool:
    if not proc.alive:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)  # type: ignore[arg-type]
    return True


async def stop(state: ClusterState, proc: Process, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL when it has not exited within `grace` seconds."""
    if signal_process(proc, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while proc.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        signal_process(proc, signal.SIGKILL)
        while proc.alive:
            await asyncio.sleep(0.02)
    state.save()


async def stop_all(state: ClusterState) -> None:
    for proc in reversed(state.processes):
        await stop(state, proc)
