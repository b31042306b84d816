"""A virtual pod that runs to completion runs its container's command, when it is one a virtual pod carries out.

A virtual pod has no programs, but its network stack carries out the commands `kubectl exec` runs in it
(kubelet/commands.py: `curl`, `wget`, `/agnhost connect`, `http`, `connect`, `ping`, `hostname`, ...). A pod
whose restart policy lets it end (Never or OnFailure: a Job's, or `kubectl run --restart=Never`) and whose
first container's command and args are such a command runs it once it has its network, as a probe pod
would ("can the frontend reach the backend, every minute"); the pod then completes with that command's exit
code, Succeeded on 0, Failed otherwise, and what it wrote is the pod's log. Under restartPolicy OnFailure a
failed command runs again after a backoff, counted in the container's restartCount, as the kubelet restarts
a container (and the Job controller counts those restarts against its backoffLimit).

A Job's virtual pod without a command, or with a program a virtual pod does not have (a shell script), has
nothing to run: it completes at once, successfully, as a pod whose command did its work would. Any other
pod with nothing to run keeps running (a client pod to `kubectl exec` into, whatever its command).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podnet.nodeagent.kubelet import commands

from podnet.rpc.session import RpcError

if TYPE_CHECKING:
    from podnet.nodeagent.pods.virtual.stack import PodStack

BACKOFF_FIRST = 1.0  # seconds before a failed command runs again (doubling), as netns containers back off
BACKOFF_MAX = 30.0

Handlers = Callable[[], dict[str, Callable[[dict], Awaitable[Any]]]]


def runnable(pod: dict) -> commands.Command | None:
    """The command a virtual pod that runs to completion runs; None when it has none a virtual pod carries
    out, or runs under restartPolicy Always (a server's, never done)."""
    spec = pod.get("spec") or {}
    if spec.get("restartPolicy") not in ("Never", "OnFailure"):
        return None
    containers = spec.get("containers") or [{}]
    argv = [str(a) for a in [*(containers[0].get("command") or []), *(containers[0].get("args") or [])]]
    command = commands.parse(argv) if argv else None
    return None if command is None or isinstance(command, commands.Outcome) else command


async def carry_out(command: commands.Command, facts: commands.PodFacts, handlers: Handlers) -> commands.Outcome:
    """What `command` does in the virtual pod `facts` describes: answered from the facts, or by the agent's
    own pod operation (its RPC handler, called in-process)."""
    if isinstance(command, commands.Local):
        return command.answer(facts)
    method, params = command.rpc()
    try:
        result = await handlers()[method]({"namespace": facts.namespace, "pod": facts.name, **params})
    except RpcError as exc:
        return commands.fail(f"error: {exc.args[-1] if exc.args else exc}")
    return command.render(result)


@dataclass(slots=True)
class VirtualRun:
    """One pod's run: how often its command was run again, and its exit code once it will not be again."""

    exit_code: int | None = None
    restarts: int = 0
    task: asyncio.Task | None = field(default=None, repr=False)


async def _run(run: VirtualRun, command: commands.Command, facts: commands.PodFacts, restart_policy: str,
               handlers: Handlers, stack: PodStack, changed: Callable[[], None]) -> None:
    backoff = BACKOFF_FIRST
    loop = asyncio.get_running_loop()
    while True:
        outcome = await carry_out(command, facts, handlers)
        for stream, written in (("stdout", outcome.stdout), ("stderr", outcome.stderr)):
            for line in written.decode(errors="replace").splitlines():
                stack.log(loop.time(), None, line, stream)
        if outcome.code == 0 or restart_policy != "OnFailure":
            run.exit_code = outcome.code
            changed()
            return
        run.restarts += 1
        changed()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)


def start(pod: dict, stack: PodStack, handlers: Handlers, changed: Callable[[], None]) -> VirtualRun | None:
    """Starts the run of a virtual pod that has a command to run to completion; None when it has none. What
    the command writes goes to the pod's log (`kubectl logs`)."""
    command = runnable(pod)
    if command is None:
        return None
    meta, spec = pod["metadata"], pod.get("spec") or {}
    facts = commands.PodFacts(meta["name"], meta["namespace"], spec.get("hostname") or meta["name"], stack.ip)
    run = VirtualRun()
    run.task = asyncio.ensure_future(_run(run, command, facts, spec.get("restartPolicy") or "Never", handlers, stack,
                                          changed))
    return run


def stop(run: VirtualRun | None) -> None:
    """The pod is gone: its command is not run (again)."""
    if run is not None and run.task is not None:
        run.task.cancel()
