"""What the kubelet API's handlers see of the node agent: the pods it runs, found by the path of a request,
and the errors they answer with (a `Status` the API server passes on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from podnet.nodeagent.agent import NodeAgent
    from podnet.nodeagent.endpoints import LocalPod

Handler = Callable[[web.Request, "Kubelet"], Awaitable[web.StreamResponse]]


class KubeletError(Exception):
    """A request the kubelet refuses; becomes a `Status` response."""

    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


def bad_request(message: str) -> KubeletError:
    return KubeletError(400, "BadRequest", message)


@dataclass(frozen=True, slots=True)
class Target:
    """A container of a pod this node runs."""

    pod: LocalPod
    obj: dict  # the Pod as the agent's informer last saw it
    container: str

    @property
    def namespace(self) -> str:
        return self.obj["metadata"]["namespace"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]


class Kubelet:
    """What the handlers see of the agent."""

    def __init__(self, agent: NodeAgent):
        self.agent = agent

    def target(self, request: web.Request, *, ended: bool = False) -> Target:
        """The pod and container a request names; `ended`: a pod that ended is found too (its containers'
        logs stay until it is deleted)."""
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        container = request.match_info["container"]
        key = f"{namespace}/{name}"
        pod = self.agent.pods.get(key) or (self.agent.finished_pods.get(key) if ended else None)
        obj = self.agent.pod_informer.store.get(key) if self.agent.pod_informer is not None else None
        if obj is not None and (obj.get("spec") or {}).get("hostNetwork"):
            raise bad_request(f'pod "{name}" is on the host network: the node agent runs no container for it')
        if pod is None or obj is None or obj["metadata"].get("uid", pod.uid) != pod.uid:
            raise KubeletError(404, "NotFound", f'pod "{name}" not found on node {self.agent.config.name}')
        names = [c.get("name") for c in (obj.get("spec") or {}).get("containers") or []]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        return Target(pod, obj, container)

    def alive(self, target: Target) -> bool:
        """Whether the pod of `target` still runs here (not deleted, not replaced by a namesake)."""
        return self.agent.pods.get(f"{target.namespace}/{target.name}") is target.pod


