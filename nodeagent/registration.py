"""The node's registration and heartbeat: the Node object (created or adopted) with its Ready condition
and addresses, the wait for a podCIDR from the controller, and the Lease in kube-node-lease renewed every
`renew_interval` — what the node lifecycle controller reads to tell whether the node is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable

from podnet.nodeagent.capacity import host_capacity
from podnet.nodeagent.config import AgentConfig
from podnet.nodeagent.dataplane import VTEP_MAC_ANNOTATION
from podnet.nodeagent.encryption import node_annotations
from podnet.overlay.pipeline.model import vtep_mac

from podnet.client import ApiClient, ApiError

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
BACKEND_ANNOTATION = "podnet.io/backend"


def rfc3339(micro: bool = False) -> str:
    now = datetime.datetime.now(datetime.UTC)
    if micro:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def reports_ready(obj: dict) -> bool:
    """Whether a Node's or a Pod's Ready condition is True."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


class NodeRegistration:
    def __init__(self, config: AgentConfig, client: ApiClient, kubelet_port: Callable[[], int | None]):
        self.config = config
        self.client = client
        self._kubelet_port = kubelet_port  # published in the Node's status once the kubelet API listens
        self.node_uid: str | None = None
        self.pod_cidr: str | None = None
        self._tasks: set[asyncio.Task] = set()

    async def register(self, shutdown: asyncio.Event) -> None:
        """Creates (or adopts) the Node, reports it Ready, and waits until it has a podCIDR."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.config.name,
                "labels": {
                    "kubernetes.io/hostname": self.config.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
                "annotations": {
                    VTEP_MAC_ANNOTATION: vtep_mac(self.config.address),
                    BACKEND_ANNOTATION: self.config.backend,
                    **node_annotations(self.config),
                },
            },
            "spec": {},
        }
        backoff = 0.2
        while not shutdown.is_set():
            try:
                try:
                    current = await self.client.create(node)
                except ApiError as exc:
                    if exc.code != 409:
                        raise
                    current = await self.client.get("nodes", self.config.name)
                    current = await self._adopt(current, node["metadata"]["annotations"])
                self.node_uid = current["metadata"].get("uid")
                await self.post_node_status()
                while not (current.get("spec") or {}).get("podCIDR"):
                    await asyncio.sleep(0.2)
                    current = await self.client.get("nodes", self.config.name)
                self.pod_cidr = current["spec"]["podCIDR"]
                return
            except ApiError as exc:
                log.warning("registering node %s: %s; retrying", self.config.name, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _adopt(self, current: dict, annotations: dict[str, str]) -> dict:
        """A Node left by an earlier run of this agent carries what this run publishes (its encryption key,
        its backend), or is patched to."""
        published = (current.get("metadata") or {}).get("annotations") or {}
        if all(published.get(key) == value for key, value in annotations.items()):
            return current
        return await self.client.patch("nodes", self.config.name, {"metadata": {"annotations": annotations}})

    async def post_node_status(self) -> None:
        now = rfc3339()
        status = {
            "addresses": [
                {"type": "InternalIP", "address": self.config.address},
                {"type": "Hostname", "address": self.config.name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "podnet node agent is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
                {
                    "type": "NetworkUnavailable",
                    "status": "False",
                    "reason": "PodnetIsUp",
                    "message": f"podnet {self.config.backend} backend is running",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self._kubelet_port() or 0}},
            "nodeInfo": {"kubeletVersion": "podnet", "operatingSystem": "linux", "architecture": "amd64"},
            "capacity": host_capacity(),
            "allocatable": host_capacity(),
        }
        await self.client.patch("nodes", self.config.name, {"status": status}, subresource="status")

    def on_own_node(self, node: dict | None) -> None:
        """Our Node as the informer saw it: marked NotReady/Unknown by the node lifecycle controller while
        we were away, it is reported Ready again."""
        if node is not None and not reports_ready(node):
            task = asyncio.ensure_future(self._repost_status())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _repost_status(self) -> None:
        with contextlib.suppress(ApiError):
            await self.post_node_status()

    async def renew_lease(self, shutdown: asyncio.Event) -> None:
        name = self.config.name
        while not shutdown.is_set():
            spec = {
                "holderIdentity": name,
                "leaseDurationSeconds": self.config.lease_duration,
                "renewTime": rfc3339(micro=True),
            }
            try:
                try:
                    await self.client.patch("leases", name, {"spec": spec}, namespace=LEASE_NAMESPACE)
                except ApiError as exc:
                    if exc.code != 404:
                        raise
                    await self._create_lease(spec)
            except ApiError as exc:
                log.warning("renewing lease: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(shutdown.wait(), self.config.renew_interval)

    async def _create_lease(self, spec: dict) -> None:
        with contextlib.suppress(ApiError):
            await self.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}})
        owner = [{"apiVersion": "v1", "kind": "Node", "name": self.config.name, "uid": self.node_uid}]
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.config.name, "namespace": LEASE_NAMESPACE, "ownerReferences": owner},
            "spec": spec,
        }
        await self.client.create(lease)
