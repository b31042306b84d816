"""The controllers: each reads informer caches, asks a pure module what should be, and writes the
difference through the API. The caches lag behind their own writes, so each one remembers what it has just
written until the watch shows it (the "assumed" and "expected" tables), and treats 409 as "look again"."""

from __future__ import annotations

import time
from collections.abc import Iterable

from podnet.api import clusterdns, selectors
from podnet.api.keys import namespaced_key, object_key
from podnet.client import ApiClient, Informer
from podnet.events import NORMAL, WARNING, EventRecorder

from . import endpointslices, nodelifecycle, scheduling
from .allocators import CidrAllocator, CidrExhausted, node_pod_cidr, well_known_ips, with_pod_cidr
from .collector import GarbageCollector, PodGarbageCollector
from .cronjobcontroller import CronJobs
from .jobcontroller import Jobs
from .podsets import DaemonSets, StatefulSets
from .resourcequotas import ResourceQuotas
from .rootca import RootCaPublisher
from .runner import Controller, Settings, now_timestamp
from .serviceaccounts import ServiceAccounts
from .workloads import Deployments, ReplicaSets

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class DefaultObjects(Controller):
    """The namespaces every cluster has; the `kubernetes` Service (its endpoints are every live API server's
    to keep: apiserver/endpointreconciler.py); the `kube-dns` Service, which selects the pods each DNS server
    registers."""

    name = "default-objects"
    needs = ("namespaces", "services")
    max_interval = 10.0

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if event == "DELETED" or kind == "namespaces":
            self.runner.trigger()

    def _services(self) -> list[dict]:
        ips = well_known_ips(self.settings.service_cidr)
        kubernetes = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ips["default/kubernetes"], "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": self.settings.api_port}]},
        }
        return [kubernetes, clusterdns.kube_dns_service(ips["kube-system/kube-dns"])]

    async def reconcile(self) -> None:
        namespaces = self.store("namespaces")
        for name in DEFAULT_NAMESPACES:
            if name not in namespaces:
                await self.write(f"create namespace {name}", self.client.create(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        for service in self._services():
            if object_key(service) not in self.store("services"):
                await self.write(f"create service {object_key(service)}", self.client.create(service))


class NodeIpam(Controller):
    """Gives every Node a pod CIDR (spec.podCIDR and podCIDRs) from the cluster CIDR; a deleted Node's
    CIDR is free again because the allocator is rebuilt from the Nodes that exist."""

    name = "node-ipam"
    needs = ("nodes",)

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.assumed: dict[str, str] = {}  # node name → CIDR written but not yet seen in the cache

    async def reconcile(self) -> None:
        nodes = self.store("nodes")
        for name in list(self.assumed):
            node = nodes.get(name)
            if node is None or node_pod_cidr(node):
                del self.assumed[name]
        allocator = CidrAllocator.from_nodes(self.settings.cluster_cidr, self.settings.node_cidr_prefix,
                                             nodes.values())
        for name, cidr in self.assumed.items():
            allocator.occupy(cidr, name)
        for name, node in sorted(nodes.items()):
            if node_pod_cidr(node) or name in self.assumed:
                continue
            try:
                cidr = allocator.allocate(name)
            except CidrExhausted as exc:
                self.log.error("node %s gets no pod CIDR: %s", name, exc)
                return
            if await self.write(f"set podCIDR of node {name}", self.client.replace(with_pod_cidr(node, cidr))):
                self.assumed[name] = cidr
                self.log.info("node %s: podCIDR %s", name, cidr)


class Scheduler(Controller):
    """Binds pending pods to Ready nodes, fewest pods first."""

    name = "scheduler"
    needs = ("pods", "nodes")

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.assumed: dict[str, str] = {}  # pod key → node, bound but not yet seen bound in the cache
        self.events = EventRecorder(client, "default-scheduler")

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind == "nodes" or (new is not None and scheduling.needs_scheduling(new)) or event == "DELETED":
            self.runner.trigger()

    async def reconcile(self) -> None:
        pods, nodes = self.store("pods"), list(self.store("nodes").values())
        for key in list(self.assumed):
            pod = pods.get(key)
            if pod is None or not scheduling.needs_scheduling(pod):
                del self.assumed[key]
        counts = scheduling.count_pods_per_node(pods.values())
        for node_name in self.assumed.values():
            counts[node_name] = counts.get(node_name, 0) + 1
        pending = sorted(
            (pod for key, pod in pods.items() if key not in self.assumed and scheduling.needs_scheduling(pod)),
            key=lambda p: (p["metadata"].get("creationTimestamp") or "", object_key(p)),
        )
        for pod in pending:
            node_name = scheduling.choose_node(pod, nodes, counts)
            if node_name is None:
                continue
            meta = pod["metadata"]
            bound = await self.write(f"bind pod {object_key(pod)} to {node_name}", self.client.patch(
                "pods", meta["name"], {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                                       "spec": {"nodeName": node_name}},
                namespace=meta["namespace"]))
            if bound:
                self.assumed[object_key(pod)] = node_name
                counts[node_name] = counts.get(node_name, 0) + 1
                self.log.info("pod %s: bound to %s", object_key(pod), node_name)
                self.events.record(pod, NORMAL, "Scheduled", f"Successfully assigned {object_key(pod)} to {node_name}")


class EndpointSlices(Controller):
    """EndpointSlices and legacy Endpoints of every Service with a selector."""

    name = "endpointslice"
    needs = ("services", "pods", "nodes", "endpointslices", "endpoints")

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        self.dirty: set[str] = set()  # Service keys

    async def run(self) -> None:
        for kind in ("services", "endpoints"):
            await self.informers[kind].wait_synced()
            self.dirty.update(self.store(kind))
        await self.informers["endpointslices"].wait_synced()
        self.dirty.update(self._slice_owner(s) or "" for s in self.store("endpointslices").values())
        self.dirty.discard("")
        await super().run()

    @staticmethod
    def _slice_owner(endpoint_slice: dict) -> str | None:
        meta = endpoint_slice.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(endpointslices.MANAGED_BY_LABEL) != endpointslices.MANAGED_BY:
            return None
        service = labels.get(endpointslices.SERVICE_NAME_LABEL)
        return namespaced_key(meta.get("namespace"), service) if service else None

    def _services_selecting(self, pods: Iterable[dict | None]) -> set[str]:
        """Services whose selector picks any of these pods (a pod's old and new version: a label change
        can move it from one Service to another)."""
        keys = set()
        for pod in filter(None, pods):
            meta = pod["metadata"]
            for key, service in self.store("services").items():
                if service["metadata"].get("namespace") == meta.get("namespace") and endpointslices.selects_pods(
                        service) and selectors.from_match_labels(service["spec"]["selector"]).matches(
                        meta.get("labels")):
                    keys.add(key)
        return keys

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        if kind in ("services", "endpoints"):
            self.dirty.add(object_key(obj))
        elif kind == "endpointslices":
            owner = self._slice_owner(obj)
            if owner:
                self.dirty.add(owner)
        elif kind == "pods":
            self.dirty |= self._services_selecting([old, new])
        elif kind == "nodes":
            zone = endpointslices.ZONE_LABEL
            if ((old or {}).get("metadata", {}).get("labels") or {}).get(zone) != \
                    ((new or {}).get("metadata", {}).get("labels") or {}).get(zone):
                self.dirty |= set(self.store("services"))
        if self.dirty:
            self.runner.trigger()

    async def reconcile(self) -> None:
        dirty, self.dirty = self.dirty, set()
        if not dirty:
            dirty = set(self.store("services"))  # the periodic resync looks at everything
        slices_by_service: dict[str, list[dict]] = {}
        for endpoint_slice in self.store("endpointslices").values():
            owner = self._slice_owner(endpoint_slice)
            if owner in dirty:
                slices_by_service.setdefault(owner, []).append(endpoint_slice)
        pods = list(self.store("pods").values())
        nodes = self.store("nodes")
        for key in sorted(dirty):
            await self._sync(key, slices_by_service.get(key, []), pods, nodes)

    async def _sync(self, key: str, current_slices: list[dict], pods: list[dict], nodes: dict[str, dict]) -> None:
        namespace, name = key.split("/", 1)
        service = self.store("services").get(key)
        desired = []
        if service is not None and endpointslices.selects_pods(service):
            desired = endpointslices.desired_slices(service, pods, nodes)
        current = {s["metadata"]["name"]: s for s in current_slices}
        for endpoint_slice in desired:
            slice_name = endpoint_slice["metadata"]["name"]
            existing = current.pop(slice_name, None)
            if existing is None:
                await self.write(f"create endpointslice {namespace}/{slice_name}", self.client.create(endpoint_slice))
            elif endpointslices.slice_differs(existing, endpoint_slice):
                update = {**endpoint_slice, "metadata": {**existing["metadata"], **endpoint_slice["metadata"]}}
                await self.write(f"update endpointslice {namespace}/{slice_name}", self.client.replace(update))
        for slice_name in current:
            await self.write(f"delete endpointslice {namespace}/{slice_name}",
                             self.client.delete("endpointslices", slice_name, namespace))

        existing = self.store("endpoints").get(key)
        if service is None:
            if existing is not None:
                await self.write(f"delete endpoints {key}", self.client.delete("endpoints", name, namespace))
            return
        if not endpointslices.selects_pods(service):
            return  # endpoints of a Service without a selector belong to whoever writes them
        endpoints = endpointslices.desired_endpoints(service, pods)
        if existing is None:
            await self.write(f"create endpoints {key}", self.client.create(endpoints))
        elif endpointslices.endpoints_differ(existing, endpoints):
            update = {**endpoints, "metadata": {**existing["metadata"], **endpoints["metadata"]}}
            await self.write(f"update endpoints {key}", self.client.replace(update))


class NodeLifecycle(Controller):
    """Watches node heartbeats: NotReady (Unknown) and tainted after the grace period, pods Ready=False,
    pods evicted after the eviction timeout; Ready again when heartbeats resume."""

    name = "node-lifecycle"
    needs = ("nodes", "leases", "pods")

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        super().__init__(client, informers, settings)
        # Check often enough to notice a missed heartbeat within a quarter of the grace period.
        self.runner.max_interval = max(0.2, min(5.0, settings.node_grace_period / 4))
        self.heartbeats: dict[str, nodelifecycle.Heartbeat] = {}
        self.events = EventRecorder(client, "node-controller")
        self.eviction_events = EventRecorder(client, "taint-eviction-controller")

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        if kind != "pods":
            self.runner.trigger()

    async def reconcile(self) -> None:
        nodes = self.store("nodes")
        leases = {lease["metadata"]["name"]: lease for lease in self.store("leases").values()}
        now = time.monotonic()
        for name in nodes.keys() - self.heartbeats.keys():
            self.events.record(nodes[name], NORMAL, "RegisteredNode",
                               f"Node {name} event: Registered Node {name} in Controller")
        self.heartbeats = nodelifecycle.observe(self.heartbeats, nodes.values(), leases, now)
        decisions = nodelifecycle.decide(
            nodes.values(), self.heartbeats, self.store("pods").values(), now,
            grace_period=self.settings.node_grace_period, eviction_timeout=self.settings.pod_eviction_timeout)
        stamp = now_timestamp()
        for name in decisions.mark_unreachable:
            self.log.warning("node %s: no heartbeat for %.1fs, marking it NotReady", name,
                             now - self.heartbeats[name].observed_at)
            updated = await self.write(f"taint node {name}", self.client.replace(
                nodelifecycle.node_spec_unreachable(nodes[name], stamp)))
            if updated:
                await self.write(f"mark node {name} unknown", self.client.replace_status(
                    nodelifecycle.node_status_unknown(updated, stamp)))
                self.events.record(nodes[name], NORMAL, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        for name in decisions.mark_reachable:
            self.log.info("node %s: heartbeats resumed, marking it Ready", name)
            updated = await self.write(f"untaint node {name}", self.client.replace(
                nodelifecycle.node_spec_reachable(nodes[name])))
            if updated:
                await self.write(f"mark node {name} ready", self.client.replace_status(
                    nodelifecycle.node_status_ready(updated, stamp)))
        pods = self.store("pods")
        for key in decisions.pods_not_ready:
            if key in pods:
                await self.write(f"mark pod {key} not ready", self.client.replace_status(
                    nodelifecycle.pod_status_not_ready(pods[key], stamp)))
                self.events.record(pods[key], WARNING, "NodeNotReady", "Node is not ready")
        for key in decisions.pods_to_evict:
            namespace, name = key.split("/", 1)
            self.log.warning("pod %s: evicting from unreachable node", key)
            if key in pods:
                self.eviction_events.record(pods[key], NORMAL, "TaintManagerEviction", f"Marking for deletion Pod {key}")
            await self.write(f"evict pod {key}", self.client.delete("pods", name, namespace))


CONTROLLERS: tuple[type[Controller], ...] = (DefaultObjects, NodeIpam, Scheduler, EndpointSlices, NodeLifecycle,
                                             ReplicaSets, Deployments, StatefulSets, DaemonSets, GarbageCollector,
                                             PodGarbageCollector, RootCaPublisher, ServiceAccounts, Jobs, ResourceQuotas,
                                             CronJobs)
