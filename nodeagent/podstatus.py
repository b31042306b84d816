"""Pod statuses written by the kubelet: which pods need one (marked dirty by whatever changed them), and a
background writer that patches each one's `status` subresource, retrying until the API server takes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from podnet.nodeagent.completion import completed, virtual_exit_code
from podnet.nodeagent.config import AgentConfig
from podnet.nodeagent.endpoints import KernelPod, LocalPod, VirtualPod
from podnet.nodeagent.registration import rfc3339

from podnet.client import ApiClient, ApiError, Informer

log = logging.getLogger(__name__)


class PodStatuses:
    def __init__(self, config: AgentConfig, client: ApiClient, informer: Informer, pods: dict[str, LocalPod],
                 relay_ready: Callable[[str], bool]):
        self.config = config
        self.client = client
        self._informer = informer  # the pods bound here, as the API server last told us
        self._pods = pods  # the pods this agent runs, "ns/name" -> pod
        self._relay_ready = relay_ready  # whether a pod's relayed ports have their host process
        self._dirty: set[str] = set()
        self._wakeup = asyncio.Event()

    def mark_dirty(self, key: str) -> None:
        self._dirty.add(key)
        self._wakeup.set()

    def wake(self) -> None:
        """Lets `run` see that shutdown was set."""
        self._wakeup.set()

    async def run(self, shutdown: asyncio.Event) -> None:
        """Writes pod statuses in the background, retrying until the API server takes them."""
        while not shutdown.is_set():
            await self._wakeup.wait()
            self._wakeup.clear()
            failed = set()
            for key in list(self._dirty):
                self._dirty.discard(key)
                try:
                    await self._write(key)
                except ApiError as exc:
                    if exc.code != 404:
                        log.warning("pod %s: status write failed: %s", key, exc)
                        failed.add(key)
            if failed:
                self._dirty |= failed
                await asyncio.sleep(0.5)
                self._wakeup.set()

    async def _write(self, key: str) -> None:
        obj = self._informer.store.get(key)
        if obj is None:
            return
        pod = self._pods.get(key)
        host_network = (obj.get("spec") or {}).get("hostNetwork")
        if pod is None and not host_network:
            return
        netns = pod.netns if isinstance(pod, KernelPod) else None
        run = pod.run if isinstance(pod, VirtualPod) else None
        ip = self.config.address if host_network else pod.port.ip
        now = rfc3339()
        started = (obj.get("status") or {}).get("startTime") or now
        conditions = [
            {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        containers = [
            {
                "name": c.get("name"),
                "image": c.get("image", ""),
                "imageID": "",
                "ready": self._relay_ready(key),
                "started": True,
                "restartCount": run.restarts if run is not None else 0,
                "state": {"running": {"startedAt": started}},
                **(netns.container_status(c.get("name")) if netns is not None else {}),
            }
            for c in (obj.get("spec") or {}).get("containers") or []
        ]
        if not all(c["ready"] for c in containers):  # a netns container waiting to restart, a relay not ready
            for condition in conditions:
                if condition["type"] in ("Ready", "ContainersReady"):
                    condition["status"] = "False"
        status = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": self.config.address,
            "hostIPs": [{"ip": self.config.address}],
            "startTime": started,
            "conditions": conditions,
            "containerStatuses": containers,
        }
        exit_code = virtual_exit_code(obj, run.exit_code if run is not None else None, run is not None)
        status = completed(obj, netns, status, now, exit_code)
        meta = obj["metadata"]
        await self.client.patch("pods", meta["name"], {"status": status}, namespace=meta["namespace"], subresource="status")
        if pod is not None:
            pod.status_ip = ip
