"""Real BGP peers for tests: podnet speaker processes, BIRD 2 daemons, and a node-agent RPC endpoint that
records the routes a speaker installs.

`bgp_speakers` (factory): `bgp_speakers(name, address, port, *args)` starts `python -m podnet bgp` with its
state under tmp_path and waits for its RPC socket; the object has `.rpc(method)` (`await .arpc(method)`
inside an event loop), `.signal(sig)`,
`.kill()`, `.start()` (again, same arguments), `.log()`. `birds` (factory): `birds(name, config)` starts
`bird -f` with that configuration and a control socket; `.birdc(command)` runs birdc against it.
`route_recorder` (factory): `await route_recorder(path)` serves the node agent's `routes.apply` and
`routes.list` on a Unix socket in the test's event loop, keeping every call.
Every process is killed at teardown (SIGCONT first, for the ones a test stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podnet.rpc.session import RpcServer, call_once
from support.processes import end, read_log, spawn, spawn_module, wait_ready


@dataclass
class SpeakerProcess:
    name: str
    address: str
    port: int
    args: tuple[str, ...]
    home: Path
    process: subprocess.Popen | None = None

    @property
    def state_dir(self) -> Path:
        return self.home / "nodes" / self.name

    @property
    def socket(self) -> str:
        return str(self.state_dir / "bgp.sock")

    @property
    def log_path(self) -> Path:
        return self.home / f"bgp-{self.name}.log"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        args = ["bgp", "--node", self.name, "--address", self.address,
                "--port", str(self.port), "--state-dir", str(self.state_dir), *self.args]
        self.process = spawn_module("podnet", args, self.log_path, self.home)
        wait_ready(self.process, self._answers, f"bgp speaker {self.name}", self.log)

    def _answers(self) -> bool:
        # A plain connect, not an RPC call: tests start speakers from inside a running event loop.
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(self.socket)
            except OSError:
                return False
        return True

    def rpc(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        return asyncio.run(call_once(self.socket, method, params, timeout=timeout))

    async def arpc(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        return await call_once(self.socket, method, params, timeout=timeout)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        end(self.process)
        self.process = None

    def log(self) -> str:
        return read_log(self.log_path)


@pytest.fixture
def bgp_speakers(tmp_path: Path) -> Iterator[Callable[..., SpeakerProcess]]:
    started: list[SpeakerProcess] = []

    def start(name: str, address: str, port: int, *args: str) -> SpeakerProcess:
        speaker = SpeakerProcess(name, address, port, args, tmp_path)
        started.append(speaker)
        speaker.start()
        return speaker

    try:
        yield start
    finally:
        for speaker in started:
            speaker.kill()


@dataclass
class BirdProcess:
    name: str
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def control_socket(self) -> str:
        return str(self.directory / "bird.ctl")

    def birdc(self, command: str) -> str:
        result = subprocess.run(["birdc", "-s", self.control_socket, *command.split()], capture_output=True,
                                text=True, timeout=10)
        return result.stdout

    def log(self) -> str:
        return read_log(self.directory / "bird.log")


@pytest.fixture
def birds(tmp_path: Path) -> Iterator[Callable[[str, str], BirdProcess]]:
    if shutil.which("bird") is None and os.environ.get("CI") != "true":
        pytest.skip("BIRD 2 (Debian bird2) is not installed")
    started: list[BirdProcess] = []

    def start(name: str, config: str) -> BirdProcess:
        directory = tmp_path / f"bird-{name}"
        directory.mkdir()
        (directory / "bird.conf").write_text(config)
        bird = BirdProcess(name, directory)
        started.append(bird)
        bird.process = spawn(["bird", "-c", str(directory / "bird.conf"), "-s", bird.control_socket, "-f"],
                             directory / "bird.log")
        wait_ready(bird.process, lambda: "BIRD" in bird.birdc("show status"), f"bird {name}", bird.log)
        return bird

    try:
        yield start
    finally:
        for bird in started:
            end(bird.process)


@dataclass
class RouteRecorder:
    """The node agent's side of `routes.apply`: what a speaker installed, and when."""

    path: str
    calls: list[tuple[float, dict]] = field(default_factory=list)
    server: RpcServer | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def routes(self) -> dict[str, str]:
        """prefix -> next hop, as last applied."""
        if not self.calls:
            return {}
        return {r["prefix"]: r["next_hop"] for r in self.calls[-1][1]["routes"]}

    async def start(self) -> None:
        async def apply(params: dict) -> dict:
            self.calls.append((time.monotonic(), params))
            self.changed.set()
            return {"routes": len(params["routes"])}

        async def listing(params: Any) -> list[dict]:
            return [{"prefix": p, "kind": "tunnel", "next_hop": h, "source": "bgp"} for p, h in self.routes.items()]

        self.server = RpcServer(self.path, {"routes.apply": apply, "routes.list": listing})
        await self.server.start()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float = 10.0) -> dict[str, str]:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.routes):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"routes at {self.path} never matched; last: {self.routes}")
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return self.routes


@pytest.fixture
async def route_recorder(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[RouteRecorder] = []

    async def start(name: str) -> RouteRecorder:
        recorder = RouteRecorder(str(tmp_path / f"agent-{name}.sock"))
        started.append(recorder)
        await recorder.start()
        return recorder

    try:
        yield start
    finally:
        for recorder in started:
            await recorder.close()
