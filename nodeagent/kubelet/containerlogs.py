"""`/containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&sinceSeconds=&sinceTime=&timestamps=
&previous=&limitBytes=`: a container's log, as `kubectl logs` asks for it.

A netns container's log is what its program wrote on stdout and stderr, kept by its log shim in the
pod's log directory (`logs.py` has the format and the files); `previous` is the instance before the
current one. A virtual pod's containers log what their agnhost servers answered (the pod stack's access
log, the lines of each container's own ports, on stderr as netexec writes them with Go's log package; the
first container's also what a Job's pod's command wrote). `follow` goes on writing what comes until the container's
instance ends or its pod is deleted. A pod that ended keeps its logs until it is deleted, as a kubelet
keeps a finished container's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from aiohttp import web
from podnet.nodeagent.endpoints import KernelPod
from podnet.nodeagent.kubelet import logs
from podnet.nodeagent.kubelet.node import Kubelet, Target, bad_request

FOLLOW_INTERVAL = 0.2


async def container_logs(request: web.Request, kubelet: Kubelet) -> web.StreamResponse:
    target = kubelet.target(request, ended=True)
    try:
        options = logs.LogOptions.from_query(dict(request.query), time.time())
    except logs.LogOptionError as exc:
        raise bad_request(str(exc)) from None
    source = NetnsLog(target) if isinstance(target.pod, KernelPod) else AccessLog(target)
    records = source.records(options.previous)
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    budget = options.limit_bytes
    with contextlib.suppress(ConnectionError):
        data = logs.render(records, options)
        await response.write(data)
        if budget is not None:
            budget -= len(data)
        following = options.follow and not options.previous
        while following and (budget is None or budget > 0):
            # One more look after the container ended or the pod went: its last words may still be landing.
            following = kubelet.alive(target) and source.running()
            await asyncio.sleep(FOLLOW_INTERVAL)
            more = source.more()
            if more:
                data = logs.render(more, logs.LogOptions(timestamps=options.timestamps, limit_bytes=budget))
                await response.write(data)
                if budget is not None:
                    budget -= len(data)
        await response.write_eof()
    return response


class AccessLog:
    """A virtual pod's container: the access log lines of its ports."""

    def __init__(self, target: Target):
        self.stack = target.pod.stack
        container = next(c for c in target.obj["spec"]["containers"] if c.get("name") == target.container)
        self.ports: set[int | None] = {p.get("containerPort") for p in container.get("ports") or []}
        if container is target.obj["spec"]["containers"][0]:
            self.ports.add(None)  # the container whose command a Job's virtual pod runs
        self.seen = 0
        # The stack records monotonic times; the log shows wall-clock ones.
        self.offset = time.time() - time.monotonic()
        self.target = target

    def records(self, previous: bool) -> list[logs.Record]:
        if previous:
            raise bad_request(f'previous terminated container "{self.target.container}" in pod '
                              f'"{self.target.name}" not found')
        return self._since(0)

    def _since(self, logged_before: int) -> list[logs.Record]:
        new = self.stack.access_logged - logged_before
        self.seen = self.stack.access_logged
        entries = list(self.stack.access_log)[-new:] if new else []
        return [logs.Record(at + self.offset, stream, line.encode()) for at, port, line, stream in entries
                if port in self.ports]

    def running(self) -> bool:
        return True

    def more(self) -> list[logs.Record]:
        return self._since(self.seen)


class NetnsLog:
    """A netns container: its instances' log files."""

    def __init__(self, target: Target):
        self.target = target
        self.netns = target.pod.netns
        self.container = self.netns.containers.get(target.container)
        self.directory = self.netns.log_dir / target.container
        self.instance = self.container.restarts if self.container else 0
        self.path: Path | None = None
        self.position = 0
        self.inode = 0

    def records(self, previous: bool) -> list[logs.Record]:
        if previous:
            if self.instance - 1 not in logs.instances(self.directory):
                raise bad_request(f'previous terminated container "{self.target.container}" in pod '
                                  f'"{self.target.name}" not found')
            return logs.read_records(logs.instance_files(self.directory, self.instance - 1))
        files = logs.instance_files(self.directory, self.instance)
        records = logs.read_records(files)
        self.path = self.directory / f"{self.instance}.log"
        with contextlib.suppress(FileNotFoundError):
            stat = self.path.stat()
            self.position, self.inode = stat.st_size, stat.st_ino
        return records

    def running(self) -> bool:
        """The instance that was current when the request came is still running."""
        return self.container is not None and self.container.restarts == self.instance and self.container.pid is not None

    def more(self) -> list[logs.Record]:
        """What the instance's file gained since last read; after a rotation, the new file from its start."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self.inode or stat.st_size < self.position:
            self.position, self.inode = 0, stat.st_ino
        if stat.st_size == self.position:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.position)
            data = f.read(stat.st_size - self.position)
        complete = data.rfind(b"\n") + 1  # a record the shim is still writing waits for the next look
        self.position += complete
        return [r for line in data[:complete].splitlines() if (r := logs.decode(line)) is not None]

