"""`/exec/{namespace}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=`: runs a command in a pod
over a WebSocket speaking the remote command channel protocol (`channel.py`).

In a netns pod the real program runs in the container's sandbox (the namespaces of its process, or a
sandbox of its own when it has none; its user, capabilities and seccomp filter): with pipes, or with a pseudo-terminal when `tty` is asked for, whose size follows
the client's resize messages. In a virtual pod the command is one that its network stack can carry out
(`commands.py`), done by the agent's own pod operations. Either way the exit code goes back as the
kubelet reports it, a `Status` on the error stream, and then the connection closes.

If the client goes away first, the program's process group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web
from podnet.nodeagent.endpoints import KernelPod
from podnet.nodeagent.kubelet import channel, commands
from podnet.nodeagent.kubelet.node import Kubelet, Target, bad_request
from podnet.nodeagent.pods.netns import DEFAULT_PATH
from podnet.nodeagent.virtualruns import carry_out

from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_READ = 65536
# client-go reads the connection as soon as it is open but creates its streams a moment later, and drops what
# comes for a stream not yet created: the first frame waits this long after the upgrade (a container runtime
# takes as long to start a program; a virtual pod's command answers at once).
STREAMS_SETTLE = 0.1


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


class Streams:
    """The WebSocket side of one exec: what the program writes goes out on its channel; what the client
    sends comes in as stdin data (None at its end) and terminal sizes."""

    def __init__(self, ws: web.WebSocketResponse, tty: bool):
        self.ws = ws
        self.tty = tty
        self.stdin: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
        self.on_resize: Callable[[channel.Resize], None] = lambda size: None
        self.size: channel.Resize | None = None  # the last one, for a terminal opened after it came
        self.client_gone = asyncio.Event()
        self._settled_at: float | None = asyncio.get_running_loop().time() + STREAMS_SETTLE

    async def _settle(self) -> None:
        if self._settled_at is not None:
            await asyncio.sleep(self._settled_at - asyncio.get_running_loop().time())
            self._settled_at = None

    async def out(self, stream: int, data: bytes) -> None:
        if data and not self.ws.closed:
            await self._settle()
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(channel.frame(stream, data))

    async def read_client(self) -> None:
        """Until the client closes: feeds stdin and resizes; a broken message ends the session."""
        try:
            async for message in self.ws:
                if message.type != WSMsgType.BINARY:
                    continue
                try:
                    event = channel.parse_client_message(message.data)
                except channel.ChannelError as exc:
                    log.info("exec: %s; closing", exc)
                    break
                if isinstance(event, channel.StdinData):
                    await self.stdin.put(event.data)
                elif isinstance(event, channel.StdinClosed):
                    await self.stdin.put(None)
                elif isinstance(event, channel.Resize):
                    self.size = event
                    self.on_resize(event)
        finally:
            self.client_gone.set()
            with contextlib.suppress(asyncio.QueueFull):
                self.stdin.put_nowait(None)

    async def finish(self, status: dict) -> None:
        if not self.ws.closed:
            await self._settle()
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(channel.status_frame(status))
                await self.ws.close()


async def exec_(request: web.Request, kubelet: Kubelet) -> web.StreamResponse:
    argv = request.query.getall("command", [])
    if not argv:
        raise bad_request("you must specify at least 1 command")
    target = kubelet.target(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise bad_request("Upgrade request required: exec streams over WebSocket (v5.channel.k8s.io, "
                          "v4.channel.k8s.io); SPDY is not supported")
    tty = _flag(request, "tty")
    ws = web.WebSocketResponse(protocols=channel.PROTOCOLS, autoping=True)
    await ws.prepare(request)
    streams = Streams(ws, tty)
    reader = asyncio.ensure_future(streams.read_client())
    try:
        if isinstance(target.pod, KernelPod):
            status = await _run_netns(kubelet, target, argv, streams, stdin=_flag(request, "stdin"))
        else:
            status = await _run_virtual(kubelet, target, argv, streams)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("exec %s in %s/%s: %s", argv[0], target.namespace, target.name, exc)
        status = channel.failure(f"error executing command in container: {exc}")
    finally:
        # Nothing may be reading the socket when it closes: aiohttp then hands the close to that reader and
        # the close frame can be lost with the connection (over TLS, the client sees 1006).
        await cancel_and_wait(reader)
    await streams.finish(status)
    return ws


# ---- virtual pods --------------------------------------------------------------------------------------


async def _run_virtual(kubelet: Kubelet, target: Target, argv: list[str], streams: Streams) -> dict:
    command = commands.parse(argv)
    if isinstance(command, commands.Outcome):
        outcome = command
    else:
        spec = target.obj.get("spec") or {}
        facts = commands.PodFacts(target.name, target.namespace, spec.get("hostname") or target.name,
                                  target.pod.port.ip)
        outcome = await carry_out(command, facts, kubelet.agent.handlers)
    if streams.tty:  # one terminal shows both, with the line discipline's CR before each LF
        await streams.out(channel.STDOUT, (outcome.stdout + outcome.stderr).replace(b"\n", b"\r\n"))
    else:
        await streams.out(channel.STDOUT, outcome.stdout)
        await streams.out(channel.STDERR, outcome.stderr)
    return channel.exit_status(outcome.code)


# ---- netns pods ----------------------------------------------------------------------------------------


def _exit_code(returncode: int) -> int:
    """A shell's view: killed by signal N is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


async def _run_netns(kubelet: Kubelet, target: Target, argv: list[str], streams: Streams, *, stdin: bool) -> dict:
    if shutil.which(argv[0], path=DEFAULT_PATH) is None:
        message = f'exec: "{argv[0]}": executable file not found in $PATH\n'.encode()
        await streams.out(channel.STDOUT if streams.tty else channel.STDERR, message)
        return channel.exit_status(commands.NOT_FOUND)
    # In the container's sandbox, as its own programs run (nodeagent/pods/sandbox.py).
    command, env = kubelet.agent.lifecycle.netns_pods.exec_command(target.pod.netns, target.obj, target.container, argv)
    run = _run_tty if streams.tty else _run_pipes
    return channel.exit_status(await run(command, env, streams, stdin))


async def _until_done_or_gone(process_wait: Awaitable[int], streams: Streams, pgid: int) -> int:
    """The program's exit code; if the client leaves first, its process group is killed."""
    waiting = asyncio.ensure_future(process_wait)
    gone = asyncio.ensure_future(streams.client_gone.wait())
    await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    gone.cancel()
    return await waiting


async def _run_pipes(command: list[str], env: dict[str, str], streams: Streams, stdin: bool) -> int:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )

    async def pump_out(reader: asyncio.StreamReader, stream: int) -> None:
        while data := await reader.read(_READ):
            await streams.out(stream, data)

    async def pump_in() -> None:
        while (data := await streams.stdin.get()) is not None:
            process.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await process.stdin.drain()
        process.stdin.close()

    feeding = asyncio.ensure_future(pump_in()) if stdin else None
    outputs = asyncio.gather(pump_out(process.stdout, channel.STDOUT), pump_out(process.stderr, channel.STDERR))
    try:
        code = await _until_done_or_gone(process.wait(), streams, process.pid)
        await outputs
    finally:
        if feeding is not None:
            feeding.cancel()
    return _exit_code(code)


def _set_size(fd: int, size: channel.Resize) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


async def _run_tty(command: list[str], env: dict[str, str], streams: Streams, stdin: bool) -> int:
    loop = asyncio.get_running_loop()
    master, slave = pty.openpty()
    streams.on_resize = lambda size: _set_size(master, size)
    if streams.size is not None:  # kubectl sends its terminal's size first thing
        _set_size(master, streams.size)
    try:
        # setsid --ctty: a session of its own whose controlling terminal is the pty, as a login shell has.
        process = await asyncio.create_subprocess_exec(
            "setsid", "--ctty", *command, stdin=slave, stdout=slave, stderr=slave, env={"PATH": DEFAULT_PATH, **env},
        )
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    output: asyncio.Queue[bytes | None] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, _READ)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the terminal's other end has closed it
            data = b""
        if not data:
            loop.remove_reader(master)
        output.put_nowait(data or None)

    async def pump_out() -> None:
        while (data := await output.get()) is not None:
            await streams.out(channel.STDOUT, data)

    async def pump_in() -> None:
        while (data := await streams.stdin.get()) is not None:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(master, view):]
                except BlockingIOError:
                    await asyncio.sleep(0.01)
        # The end of input on a terminal is its EOF character, as a user's Ctrl-D.
        with contextlib.suppress(OSError):
            os.write(master, b"\x04")

    loop.add_reader(master, readable)
    feeding = asyncio.ensure_future(pump_in()) if stdin else None
    printing = asyncio.ensure_future(pump_out())
    try:
        code = await _until_done_or_gone(process.wait(), streams, process.pid)
        # What the program wrote before it ended is still in the terminal; the reader drains it to EIO.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(printing), 2.0)
    finally:
        loop.remove_reader(master)
        printing.cancel()
        if feeding is not None:
            feeding.cancel()
        os.close(master)
    return _exit_code(code)
