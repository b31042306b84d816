"""The kubelet's side of a pod's life: the events of its start and of its containers' restarts, and its
graceful termination.

A pod the API server marked for deletion (`deletionTimestamp`, `deletionGracePeriodSeconds`) is stopped
here, then deleted for good with a grace period of 0 and a uid precondition (a pod of the same name
created meanwhile is never touched). Stopping means:
- a virtual pod: its stack is torn down at once (CNI DEL);
- a netns pod: its containers get SIGTERM, and SIGKILL at the end of the grace period if any still runs;
  then its namespace goes.
Until then the pod keeps its address and, being Terminating, is no longer a ready endpoint of any
Service. An agent that is down finishes nothing: its pods stay Terminating until it returns, the node
lifecycle controller's eviction or a forced delete.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping
from typing import Any

from podnet.nodeagent.endpoints import KernelPod

from podnet.api.keys import object_key
from podnet.client import ApiClient, ApiError
from podnet.events import NORMAL, WARNING, EventRecorder

log = logging.getLogger(__name__)

_POLL = 0.05
_RETRY_MAX = 5.0


def container_path(name: str) -> str:
    """The fieldPath the kubelet gives a container's events."""
    return f"spec.containers{{{name}}}"


def _container_names(pod: dict) -> list[str]:
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]


def record_started(events: EventRecorder, pod: dict, only: str | None = None) -> None:
    """Pulled, Created and Started for each container (or the one named `only`), worded as the kubelet
    words them."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        name, path = str(container.get("name")), container_path(str(container.get("name")))
        if only is not None and name != only:
            continue
        events.record(pod, NORMAL, "Pulled", f'Container image "{container.get("image", "")}" already present on machine',
                      field_path=path)
        events.record(pod, NORMAL, "Created", f"Created container {name}", field_path=path)
        events.record(pod, NORMAL, "Started", f"Started container {name}", field_path=path)


class RestartEvents:
    """A netns container's restarts as the kubelet reports them: BackOff (a Warning, repeated while it
    keeps failing) when it exited and waits to start again, Pulled, Created and Started once it has.

    Told of every change of a pod's containers; it remembers which restart of each container it last
    reported, so a change of one container says nothing of its siblings."""

    def __init__(self, events: EventRecorder):
        self.events = events
        self._reported: dict[tuple[str, str], tuple[int, bool]] = {}  # (pod uid, container) → (restarts, waiting)

    def observe(self, pod: dict, containers: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        uid = str(meta.get("uid") or "")
        for name, container in containers.items():
            waiting = container.backoff is not None
            state = (container.restarts, waiting)
            # First news of a container is always a change: it just exited, or just started again.
            before = self._reported.get((uid, name), (container.restarts, False) if waiting
                                        else (container.restarts - 1, True))
            self._reported[(uid, name)] = state
            if before == state:
                continue
            if waiting:
                self.events.record(pod, WARNING, "BackOff", f"Back-off restarting failed container {name} in pod "
                                   f"{meta['name']}_{meta['namespace']}({uid})", field_path=container_path(name))
            else:
                record_started(self.events, pod, only=name)

    def forget(self, uid: str) -> None:
        for key in [k for k in self._reported if k[0] == uid]:
            del self._reported[key]


class Terminations:
    """Pods being terminated by this agent, one task each (keyed by uid)."""

    def __init__(self, client: ApiClient, events: EventRecorder, pods: dict[str, Any],
                 tear_down: Callable[[dict], None], release: Callable[[str], None]):
        self.client = client
        self.events = events
        self._pods = pods  # the agent's "ns/name" → pod
        self._tear_down = tear_down  # the agent's CNI DEL of a pod it holds
        self._release = release  # frees the address of a pod it does not hold (deleted while it was down)
        self._running: dict[str, asyncio.Task] = {}

    def start(self, pod: dict) -> None:
        uid = str(pod["metadata"].get("uid") or "")
        if uid in self._running:
            return
        self._running[uid] = asyncio.get_running_loop().create_task(self._terminate(pod), name=f"terminate {uid}")
        self._running[uid].add_done_callback(lambda _: self._running.pop(uid, None))

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()

    async def _terminate(self, pod: dict) -> None:
        meta = pod["metadata"]
        key = object_key(pod)
        grace = max(0, int(meta.get("deletionGracePeriodSeconds") or 0))
        for name in _container_names(pod):
            self.events.record(pod, NORMAL, "Killing", f"Stopping container {name}", field_path=container_path(name))
        held = self._pods.get(key)
        if held is not None and held.uid == meta.get("uid"):
            if isinstance(held, KernelPod):
                await self._stop_processes(key, held.netns, grace)
            self._tear_down(pod)
        else:
            self._release(str(meta.get("uid") or key))
        log.info("pod %s: stopped, deleting it", key)
        await self._delete(meta)

    @staticmethod
    async def _stop_processes(key: str, netns_pod: Any, grace: int) -> None:
        netns_pod.signal_processes(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while netns_pod.running() and loop.time() < deadline:
            await asyncio.sleep(_POLL)
        if netns_pod.running():
            log.info("pod %s: still running after its %ds grace period, killing it", key, grace)
            netns_pod.signal_processes(signal.SIGKILL)

    async def _delete(self, meta: dict) -> None:
        backoff = 0.2
        while True:
            try:
                await self.client.delete("pods", meta["name"], meta["namespace"], grace_period=0,
                                         preconditions={"uid": meta.get("uid")})
                return
            except ApiError as exc:
                if exc.code in (404, 409):  # gone already, or another pod now has the name
                    return
                log.warning("pod %s/%s: delete failed: %s; retrying", meta["namespace"], meta["name"], exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RETRY_MAX)
