"""The node agent: kubelet, CNI and dataplane of one host.

It registers its Node and waits for the controller to give it a podCIDR, renews its Lease in
kube-node-lease, list+watches the pods bound to it and every Node (one Node event becomes one route, as
in flannel's vxlan backend), gives each pod an address from the host-local IPAM and a virtual network
stack, writes the pod's status, and forwards the pods' packets through the pure pipeline: to one another,
in VXLAN to other nodes, or through the host bridge to host-network addresses. Kube-proxy, the BGP
speaker and the CLI talk to it over msgpack-RPC on `<state_dir>/agent.sock`.

When the API server goes away the dataplane keeps forwarding with what it has; the informers resume
when it comes back. A restarted agent finds its pods' addresses on disk and gives each pod the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import random
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.nodeagent.capacity import host_capacity
from podnet.nodeagent.cni import HostLocalIpam
from podnet.nodeagent.completion import completed
from podnet.nodeagent.hostbridge import HostBridge
from podnet.nodeagent.kubelet import server as kubelet_api
from podnet.nodeagent.netpol import PolicyEnforcer
from podnet.nodeagent.nodeports import NodePorts, trusted_proxies
from podnet.nodeagent.poddns import PodDns
from podnet.nodeagent.podenv import PodEnvironment
from podnet.nodeagent.pods.netns import (
    ContainerSpec,
    NetnsError,
    NetnsPod,
    NetnsPods,
    PodNetwork,
    namespace_name,
    pod_mode,
)
from podnet.nodeagent.pods.netns import probe as netns_probe
from podnet.nodeagent.pods.virtual import client as ops
from podnet.nodeagent.pods.virtual.resolver import UnresolvableError
from podnet.nodeagent.pods.virtual.stack import PodStack
from podnet.nodeagent.relaypods import RelayedPods
from podnet.nodeagent.termination import RestartEvents, Terminations, record_started
from podnet.nodeagent.volumes import PodVolumes
from podnet.overlay.pipeline.conntrack import FlowKey
from podnet.overlay.pipeline.forward import (
    FOU_PORT,
    Deliver,
    DeliverFrame,
    Encapsulation,
    NodeIdentity,
    Output,
    Peer,
    Pipeline,
    PodPort,
    Stage,
    ToHost,
    Tunnel,
    describe_key,
    flow_key,
    pod_mac,
    vtep_mac,
)
from podnet.overlay.pipeline.nat import ServiceTable, TableError
from podnet.overlay.pipeline.routes import Route, RouteKind, parse_prefix
from podnet.overlay.tunnel import Tunnel as UdpTunnel
from podnet.overlay.wire import ipv4, udp
from podnet.overlay.wire.addresses import ip_to_int
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from podnet.client import ApiClient, ApiError, Informer, component_agent, podnet_home
from podnet.events import NORMAL, EventRecorder
from podnet.kubeconfig import ClientTls
from podnet.process import serve_until_triggered, start_status_server
from podnet.rpc.session import RpcError, RpcServer

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
VTEP_MAC_ANNOTATION = "podnet.io/vtep-mac"
BACKEND_ANNOTATION = "podnet.io/backend"
# A packet exchange that keeps re-entering the pipeline (two pods answering each other forever) is cut
# here per wake-up, what is left dropped and counted, so the loop stays responsive.
MAX_PUMP = 10_000
# The peers `faults.partition` cut off, kept in the state directory: a cut in the network outlives a
# restart of the agent, as a real one would.
PARTITIONS_FILE = "partitions.json"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    address: str
    server: str
    token: str | None = None
    tls: ClientTls | None = None  # the API server's CA (and our certificate)
    state_dir: str | None = None  # default $PODNET_HOME/nodes/<name>
    vxlan_port: int = 4789
    fou_port: int = FOU_PORT  # the bgp backend's foo-over-UDP port, here and on every peer
    metrics_port: int | None = 0  # None: no status server; 0: any free port
    backend: str = "vxlan"
    cluster_cidr: str = "10.244.0.0/16"
    lease_duration: int = 40
    renew_interval: float = 5.0
    conntrack_sweep_interval: float = 5.0
    pod_mode: str = "virtual"  # pods without a podnet.io/pod-mode annotation: "virtual" or "netns"
    kubelet_port: int = 0  # the kubelet API (exec, logs); 0: any free port
    # The kubelet API's serving certificate and the CA its clients' certificates must chain to; without
    # them there is no kubelet API.
    kubelet_cert_file: str | None = None
    kubelet_key_file: str | None = None
    kubelet_client_ca_file: str | None = None
    # Addresses or CIDRs of the cloud load balancer: only their PROXY protocol headers name the client.
    proxy_protocol_from: tuple[str, ...] = ()

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else podnet_home() / "nodes" / self.name

    @property
    def socket_path(self) -> Path:
        return self.state_path / "agent.sock"


@dataclass(slots=True)
class Journey:
    """Where a traced flow's packets record their stages, and how many more packets may."""

    stages: list[Stage]
    packets_left: int
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class VirtualPod:
    uid: str
    port: PodPort
    stack: PodStack
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0
    status_ip: str | None = None  # the podIP the API last heard from us
    waiting: dict[int, asyncio.Future] = field(default_factory=dict)
    listeners: dict[int, Callable[[Any], None]] = field(default_factory=dict)  # op -> stream events
    netns: NetnsPod | None = None  # a netns pod: its kernel stack answers, through its TAP, not `stack`
    relayed: bool = False  # some of its ports are served by a host process (relaypods.py)


def _rfc3339(micro: bool = False) -> str:
    now = datetime.datetime.now(datetime.UTC)
    if micro:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_ports(pod: dict) -> list[dict]:
    return [p for c in (pod.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []]


class NodeAgent:
    def __init__(self, config: AgentConfig, client: ApiClient):
        self.config = config
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.pipeline: Pipeline | None = None
        self.tunnel: UdpTunnel | None = None
        self.ipam: HostLocalIpam | None = None
        self.hostbridge: HostBridge | None = None
        self.node_endpoint: VirtualPod | None = None
        self.nodeports: NodePorts | None = None
        self.relays: RelayedPods | None = None
        self.pod_cidr: str | None = None
        self.pods: dict[str, VirtualPod] = {}  # "ns/name" -> pod
        self.by_ip: dict[int, VirtualPod] = {}
        self.pod_informer: Informer | None = None
        self.node_informer: Informer | None = None
        self.node_uid: str | None = None
        self.status_port: int | None = None
        self.kubelet_port: int | None = None
        self._tasks: set[asyncio.Task] = set()
        self._traces: dict[tuple, Journey] = {}  # flow key -> the journey its next packets are recorded in
        # each trace.watch's journey, and the (protocol, src, dst, port) of the flows it waits for
        self._watches: list[tuple[frozenset[tuple[int, int, int, int]], Journey]] = []
        self._status_dirty: set[str] = set()
        self._status_wakeup = asyncio.Event()
        self.netns_pods = NetnsPods(config.name, config.state_path, self._from_netns_pod, self._netns_changed)
        self.dns = PodDns(self._operate, self._emit)
        self.events = EventRecorder(client, "kubelet", config.name)
        self.terminations = Terminations(client, self.events, self.pods, self.remove_pod,
                                         lambda uid: self.ipam.release(uid))
        self.restart_events = RestartEvents(self.events)
        self.pod_env = PodEnvironment(client, self.events, self._start_waiting_containers)
        self.netns_pods.make_volumes = PodVolumes(self.pod_env.configmaps, self.pod_env.secrets, client).prepare

    # ---- registration ----------------------------------------------------------------------------

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

    async def post_node_status(self) -> None:
        now = _rfc3339()
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
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port or 0}},
            "nodeInfo": {"kubeletVersion": "podnet", "operatingSystem": "linux", "architecture": "amd64"},
            "capacity": host_capacity(),
            "allocatable": host_capacity(),
        }
        await self.client.patch("nodes", self.config.name, {"status": status}, subresource="status")

    async def renew_lease(self, shutdown: asyncio.Event) -> None:
        name = self.config.name
        while not shutdown.is_set():
            spec = {
                "holderIdentity": name,
                "leaseDurationSeconds": self.config.lease_duration,
                "renewTime": _rfc3339(micro=True),
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

    # ---- the dataplane ---------------------------------------------------------------------------

    async def start_dataplane(self) -> None:
        identity = NodeIdentity(
            self.config.name,
            self.config.address,
            self.pod_cidr,
            cluster_cidr=self.config.cluster_cidr,
            vxlan_port=self.config.vxlan_port,
            encapsulation=Encapsulation.FOU if self.config.backend == "bgp" else Encapsulation.VXLAN,
            fou_port=self.config.fou_port,
        )
        self.pipeline = Pipeline(identity, rand=random.random)
        self.ipam = HostLocalIpam(self.config.state_path, self.pod_cidr)
        port = self.config.fou_port if self.config.backend == "bgp" else self.config.vxlan_port
        self.tunnel = UdpTunnel(self.config.address, port, on_batch=self._from_tunnel)
        await self.tunnel.open()
        self.tunnel.partitioned.update(self._saved_partitions())
        self.hostbridge = HostBridge(self.config.address, self._from_hostbridge)
        # The node's own endpoint in the pod network, on the gateway address: it answers pods that ping
        # their gateway.
        gateway = identity.gateway
        port = PodPort("node", self.config.name, gateway, vtep_mac(self.config.address))
        stack = PodStack(self.config.name, "node", gateway, port.mac, port.mac, [], self.config.name)
        self.node_endpoint = VirtualPod(f"node/{self.config.name}", port, stack)
        self.by_ip[ip_to_int(gateway)] = self.node_endpoint
        self.pipeline.add_pod(port)
        self.nodeports = NodePorts(self.config.address, lambda: self.pipeline.services, self._from_node,
                                   trusted_proxies(self.config.proxy_protocol_from))
        self.relays = RelayedPods(self.config.address, self._from_relay, self._mark_status_dirty)

    def _from_node(self, packet: bytes) -> None:
        """A packet a NodePort connection sends into the pod network."""
        now = time.monotonic()
        self._run(self.pipeline.from_node(packet, now), now)

    def _from_tunnel(self, datagrams: list[tuple[bytes, str]]) -> None:
        """One wake-up's datagrams from the underlay, through the pipeline and carried out together."""
        now = time.monotonic()
        if not (self._traces or self._watches):
            self._run(self.pipeline.from_tunnel_batch(datagrams, now), now)
            return
        from_tunnel, offset = self.pipeline.from_tunnel, self.pipeline.inner_offset
        outputs: list[Output] = []
        for datagram, sender in datagrams:
            inner = datagram[offset:]
            trace = self._trace_for(inner) or self._watched(inner)
            outputs += from_tunnel(sender, datagram, now, trace)
        self._run(outputs, now)

    def _from_relay(self, packet: bytes) -> None:
        """What a relayed pod's host process answers, leaving as that pod's packet."""
        pod = self.by_ip.get(int.from_bytes(packet[12:16], "big"))
        if pod is None:
            return
        now = time.monotonic()
        trace = self._trace_for(packet) if self._traces else None
        self._run(self.pipeline.from_pod(pod.port, packet, now, trace), now)

    def _from_hostbridge(self, packet: bytes) -> None:
        now = time.monotonic()
        trace = self._trace_for(packet) if self._traces else None
        self._run(self.pipeline.to_local_pod(packet, now, trace), now)

    def _trace_for(self, packet: bytes) -> list[Stage] | None:
        """The stages list to record this packet's journey in, when its flow is being traced."""
        try:
            key, _ = flow_key(packet)
        except (IndexError, ValueError, struct.error):
            return None
        journey = self._traces.get(key)
        if journey is None or journey.packets_left <= 0:
            return None
        journey.packets_left -= 1
        return journey.stages

    def _watched(self, packet: bytes) -> list[Stage] | None:
        """A packet arriving for a flow that `trace.watch` waits for: its first packet and first reply.
        A watch records one flow only, the first to arrive of those it matches."""
        try:
            key, _ = flow_key(packet)
        except (IndexError, ValueError, struct.error):
            return None
        if key is None:
            return None
        match = (key[0], key[1], key[3], key[4])
        for matches, journey in self._watches:
            if match in matches and key not in self._traces and not journey.done.is_set():
                self._traces[key] = Journey(journey.stages, 0)
                self._traces[(key[0], key[3], key[4], key[1], key[2])] = Journey(journey.stages, 1)
                journey.done.set()
                return journey.stages
        return None

    def _run(self, outputs: list[Output], now: float) -> None:
        """Carries out what the pipeline decided, feeding pods' answers back in until all is sent. It goes
        in rounds: a round sends what is to be sent and hands each virtual pod the packets for it as one
        batch; the pods' answers, through the pipeline, make the next round."""
        by_ip, send, from_pod = self.by_ip, self.tunnel.send, self.pipeline.from_pod
        # Pods whose stacks took packets: their events and timers are seen to once, after the last
        # round, however many packets they received.
        received: dict[int, VirtualPod] = {}
        budget = MAX_PUMP
        while outputs:
            if len(outputs) > budget:
                self.pipeline.counters["drop.pump-limit"] += len(outputs) - budget
                outputs = outputs[:budget]
            budget -= len(outputs)
            batches: dict[int, tuple[VirtualPod, list[bytes]]] = {}
            for out in outputs:
                kind = type(out)
                if kind is Deliver:
                    pod = by_ip.get(out.pod_ip)
                    if pod is None:
                        continue
                    if pod.netns is not None:
                        pod.netns.deliver(out.packet)
                        continue
                    if pod.relayed and self.relays.take(out.packet, now):
                        continue
                    batch = batches.get(id(pod))
                    if batch is None:
                        batches[id(pod)] = (pod, [out.packet])
                    else:
                        batch[1].append(out.packet)
                elif kind is Tunnel:
                    send(out.node_address, out.datagram)
                elif kind is ToHost:
                    if not self.nodeports.claim(out.packet):  # an answer to a NodePort connection, or
                        self.hostbridge.handle(out.packet, now)
                elif kind is DeliverFrame:  # an ARP answer; virtual pods' ARP never reaches the pipeline
                    pod = by_ip.get(out.pod_ip)
                    if pod is not None and pod.netns is not None:
                        pod.netns.deliver_frame(out.frame)
            outputs = []
            for pod, packets in batches.values():
                received[id(pod)] = pod
                for packet in pod.stack.receive_batch(packets, now):
                    trace = self._trace_for(packet) if self._traces else None
                    outputs += from_pod(pod.port, packet, now, trace)
            if outputs and budget <= 0:
                self.pipeline.counters["drop.pump-limit"] += len(outputs)
                break
        for pod in received.values():
            self._after_stack(pod, now)

    def _from_netns_pod(self, netns_pod: NetnsPod, frames: list[bytes]) -> None:
        """Frames a netns pod's kernel sent on its eth0: into the pipeline, as a virtual pod's packets."""
        pod = self.by_ip.get(ip_to_int(netns_pod.net.ip))
        if pod is None:
            return
        now = time.monotonic()
        outputs: list[Output] = []
        for frame in frames:
            trace = self._trace_for(frame[14:]) if self._traces and frame[12:14] == b"\x08\x00" else None
            outputs.extend(self.pipeline.from_pod_frame(pod.port, frame, now, trace))
            if trace is not None and (key := flow_key(frame[14:])[0]) is not None:
                self._trace_reply(key, trace, now)
        self._run(outputs, now)

    def _trace_reply(self, key: FlowKey, trace: list[Stage], now: float) -> None:
        """Records the answer to a traced packet too, once the pipeline has tracked its connection: a
        Service's endpoint answers from its own address, so the reply carries the key conntrack keeps
        after the DNAT, not the reverse of what the pod sent."""
        hit = self.pipeline.conntrack.lookup(key, now)
        if hit is not None and hit[0].reply not in self._traces:
            self._traces[hit[0].reply] = Journey(trace, 1)

    def _emit(self, pod: VirtualPod, packets: list[bytes], now: float, trace: list[Stage] | None = None) -> None:
        outputs: list[Output] = []
        for packet in packets:
            outputs.extend(self.pipeline.from_pod(pod.port, packet, now, trace))
        self._after_stack(pod, now)
        self._run(outputs, now)

    def _after_stack(self, pod: VirtualPod, now: float) -> None:
        """Hands finished operations to their waiters and re-arms the pod's timer."""
        for event in pod.stack.take_events():
            listener = pod.listeners.get(event.op)
            if listener is not None:
                listener(event)
            if isinstance(event, ops.Completed | ops.Failed):
                future = pod.waiting.pop(event.op, None)
                if future is not None and not future.done():
                    future.set_result(event)
        deadline = pod.stack.next_deadline()
        if deadline is None:
            return
        if pod.timer is not None:
            if pod.timer_at <= deadline:
                return
            pod.timer.cancel()
        pod.timer_at = deadline
        pod.timer = self.loop.call_at(max(deadline, now), self._poll_pod, pod)

    def _poll_pod(self, pod: VirtualPod) -> None:
        pod.timer = None
        if self.by_ip.get(ip_to_int(pod.port.ip)) is not pod:
            return
        now = time.monotonic()
        self._emit(pod, pod.stack.poll(now), now)

    async def sweep_conntrack(self, shutdown: asyncio.Event) -> None:
        while not shutdown.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(shutdown.wait(), self.config.conntrack_sweep_interval)
            now = time.monotonic()
            self.pipeline.expire_connections(now)
            if self.pipeline.services is not None:
                self.pipeline.services.expire_affinity(now)

    # ---- pods ------------------------------------------------------------------------------------

    def on_pod(self, event: str, old: dict | None, new: dict | None) -> None:
        if event == "DELETED" or new is None:
            self.remove_pod(old)
            return
        meta = new.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            self.terminations.start(new)
            return
        if (new.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self.remove_pod(new)
            return
        if (new.get("spec") or {}).get("hostNetwork"):
            self._mark_status_dirty(f"{meta.get('namespace')}/{meta.get('name')}")
            return
        self.add_pod(new)

    def add_pod(self, obj: dict) -> VirtualPod:
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        existing = self.pods.get(key)
        if existing is not None and existing.uid == meta.get("uid"):
            if (obj.get("status") or {}).get("podIP") != existing.port.ip:
                self._mark_status_dirty(key)
            return existing
        if existing is not None:  # same name, new pod
            self.remove_pod({"metadata": {"namespace": meta["namespace"], "name": meta["name"], "uid": existing.uid}})
        allocation = self.ipam.add(meta.get("uid") or key, meta["namespace"], meta["name"])
        port = PodPort(meta["namespace"], meta["name"], allocation.ip, pod_mac(allocation.ip))
        stack = PodStack(
            meta["name"],
            meta["namespace"],
            allocation.ip,
            port.mac,
            vtep_mac(self.config.address),
            _container_ports(obj),
            (obj.get("spec") or {}).get("hostname") or meta["name"],
        )
        pod = VirtualPod(meta.get("uid") or key, port, stack)
        # A relayed pod's programs run on the host: it is a virtual pod whatever the node's pod mode.
        pod.relayed = self.relays.attach(key, obj, allocation.ip)
        if not pod.relayed and pod_mode(obj, self.config.pod_mode) == "netns":
            network = PodNetwork(namespace_name(self.config.name, meta["namespace"], meta["name"]), meta["namespace"],
                                 allocation.ip, self.ipam.network.prefixlen, self.ipam.gateway, port.mac)
            try:
                pod.netns = self.netns_pods.create(key, pod.uid, network, vtep_mac(self.config.address),
                                                   ContainerSpec.from_pod(obj, self.pod_env.container_env), obj)
            except (NetnsError, OSError) as exc:
                log.error("pod %s: cannot build its network namespace: %s", key, exc)
                self.ipam.release(pod.uid)
                return pod
        self.pods[key] = pod
        self.by_ip[ip_to_int(allocation.ip)] = pod
        self.pipeline.add_pod(port)
        log.info("pod %s: CNI ADD, %s", key, allocation.ip)
        # Written for a new pod, and for one adopted after a restart that the node lifecycle controller
        # marked not Ready while this agent was away (it keeps its IP, so the IP alone does not tell).
        if (obj.get("status") or {}).get("podIP") != allocation.ip or not self._reports_ready(obj):
            self._mark_status_dirty(key)
        else:
            pod.status_ip = allocation.ip
        if (obj.get("status") or {}).get("phase") != "Running":
            record_started(self.events, obj)
        return pod

    def _start_waiting_containers(self, namespace: str) -> None:
        """A ConfigMap or Secret of `namespace` was written: netns containers waiting for one may start."""
        for key, pod in self.pods.items():
            obj = self.pod_informer.store.get(key) if self.pod_informer is not None else None
            if pod.netns is None or obj is None or not key.startswith(f"{namespace}/"):
                continue
            if any(c.spec.config_error is not None for c in pod.netns.containers.values()):
                self.netns_pods.start_waiting(key, pod.netns, ContainerSpec.from_pod(obj, self.pod_env.container_env))

    def remove_pod(self, obj: dict | None) -> None:
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        pod = self.pods.get(key)
        if pod is None or (meta.get("uid") and meta.get("uid") != pod.uid):
            return
        del self.pods[key]
        self.relays.detach(key)
        self.by_ip.pop(ip_to_int(pod.port.ip), None)
        self.pipeline.remove_pod(pod.port.ip)
        if pod.netns is not None:
            self.netns_pods.delete(pod.netns)
        if pod.timer is not None:
            pod.timer.cancel()
        for future in pod.waiting.values():
            if not future.done():
                future.set_result(ops.Failed(0, "pod deleted"))
        self.ipam.release(pod.uid)
        self.restart_events.forget(pod.uid)
        log.info("pod %s: CNI DEL, released %s", key, pod.port.ip)

    def collect_garbage(self) -> None:
        """After the first sync: addresses whose pods are gone (deleted while we were down) are freed."""
        live = {p["metadata"].get("uid") for p in self.pod_informer.store.values()}
        for allocation in self.ipam.release_all_but({uid for uid in live if uid}):
            log.info("released %s of %s, which no longer exists", allocation.ip, allocation.key)
        for name in self.netns_pods.collect_garbage():
            log.info("removed network namespace %s, which no pod claims", name)

    def _netns_changed(self, key: str) -> None:
        """A netns pod's container exited or started again: its status, and the kubelet's events."""
        self._mark_status_dirty(key)
        pod = self.pods.get(key)
        obj = self.pod_informer.store.get(key) if self.pod_informer is not None else None
        if pod is not None and pod.netns is not None and obj is not None:
            self.restart_events.observe(obj, pod.netns.containers)

    def _mark_status_dirty(self, key: str) -> None:
        self._status_dirty.add(key)
        self._status_wakeup.set()

    async def write_statuses(self, shutdown: asyncio.Event) -> None:
        """Writes pod statuses in the background, retrying until the API server takes them."""
        while not shutdown.is_set():
            await self._status_wakeup.wait()
            self._status_wakeup.clear()
            failed = set()
            for key in list(self._status_dirty):
                self._status_dirty.discard(key)
                try:
                    await self._write_status(key)
                except ApiError as exc:
                    if exc.code != 404:
                        log.warning("pod %s: status write failed: %s", key, exc)
                        failed.add(key)
            if failed:
                self._status_dirty |= failed
                await asyncio.sleep(0.5)
                self._status_wakeup.set()

    async def _write_status(self, key: str) -> None:
        obj = self.pod_informer.store.get(key)
        if obj is None:
            return
        pod = self.pods.get(key)
        host_network = (obj.get("spec") or {}).get("hostNetwork")
        if pod is None and not host_network:
            return
        ip = self.config.address if host_network else pod.port.ip
        now = _rfc3339()
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
                "ready": self.relays.ready(key),
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
                **(pod.netns.container_status(c.get("name")) if pod is not None and pod.netns else {}),
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
        status = completed(obj, pod.netns if pod is not None else None, status, now)
        meta = obj["metadata"]
        await self.client.patch("pods", meta["name"], {"status": status}, namespace=meta["namespace"], subresource="status")
        if pod is not None:
            pod.status_ip = ip

    # ---- nodes -----------------------------------------------------------------------------------

    def on_node(self, event: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        name = (obj.get("metadata") or {}).get("name")
        if name == self.config.name:
            if new is not None and not self._reports_ready(new):
                # The node lifecycle controller marked us NotReady/Unknown while we were away.
                self._spawn(self._repost_status())
            return
        if event == "DELETED" or new is None:
            self.pipeline.remove_peer(name)
            log.info("node %s gone: route removed", name)
            return
        address = next(
            (a["address"] for a in (new.get("status") or {}).get("addresses") or [] if a.get("type") == "InternalIP"),
            None,
        )
        if not address:
            return
        pod_cidr = (new.get("spec") or {}).get("podCIDR")
        mac = ((new.get("metadata") or {}).get("annotations") or {}).get(VTEP_MAC_ANNOTATION) or vtep_mac(address)
        peer = Peer(name, address, mac)
        current = self.pipeline.peers.get(address)
        route = self.pipeline.routes.lookup(ip_to_int(pod_cidr.split("/")[0])) if pod_cidr else None
        if current == peer and (route is not None and str(route.prefix) == pod_cidr and route.next_hop == address):
            return
        self.pipeline.set_peer(peer, pod_cidr if self.config.backend == "vxlan" else None)
        log.info("node %s: VTEP %s at %s, route %s", name, mac, address, pod_cidr)

    @staticmethod
    def _reports_ready(node: dict) -> bool:
        for condition in (node.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                return condition.get("status") == "True"
        return False

    async def _repost_status(self) -> None:
        with contextlib.suppress(ApiError):
            await self.post_node_status()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- RPC -------------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Any]:
        return {
            "node.info": self.rpc_node_info,
            "services.apply": self.rpc_services_apply,
            "routes.apply": self.rpc_routes_apply,
            "pod.http": self.rpc_pod_http,
            "pod.connect": self.rpc_pod_connect,
            "pod.ping": self.rpc_pod_ping,
            "pod.dig": self.rpc_pod_dig,
            "pods.list": self.rpc_pods_list,
            "pod.exec_command": self.rpc_pod_exec_command,
            "pod.send_udp": self.rpc_pod_send_udp,
            "pod.tcp_transfer": self.rpc_pod_tcp_transfer,
            "routes.list": self.rpc_routes_list,
            "conntrack.list": self.rpc_conntrack_list,
            "probe": self.rpc_probe,
            "trace": self.rpc_trace,
            "trace.watch": self.rpc_trace_watch,
            "capture": self.rpc_capture,
            "counters": self.rpc_counters,
            "faults.partition": self.rpc_partition,
            "faults.partitions": self.rpc_partitions,
            "nodeports.apply": self.rpc_nodeports_apply,
            "services.get": self.rpc_services_get,
        }

    async def rpc_pod_exec_command(self, params: dict) -> dict | None:
        """`podnet exec`: the command line that runs `argv` in a netns pod's first container; None for a
        virtual pod."""
        key = f"{params.get('namespace') or 'default'}/{params.get('pod')}"
        pod, obj = self.pods.get(key), self.pod_informer.store.get(key) if self.pod_informer is not None else None
        if pod is None or pod.netns is None or obj is None:
            return None
        container = ((obj.get("spec") or {}).get("containers") or [{}])[0].get("name", "")
        argv, env = self.netns_pods.exec_command(pod.netns, obj, container, [str(a) for a in params.get("argv") or []])
        return {"argv": argv, "env": env}

    async def rpc_node_info(self, params: Any) -> dict:
        return {
            "name": self.config.name,
            "address": self.config.address,
            "pod_cidr": self.pod_cidr,
            "backend": self.config.backend,
            "encapsulation": self.pipeline.node.encapsulation.value,
            "vxlan_port": self.tunnel.port if self.config.backend == "vxlan" else None,
            "fou_port": self.tunnel.port if self.config.backend == "bgp" else None,
            "vtep_mac": vtep_mac(self.config.address),
            "status_port": self.status_port,
        }

    async def rpc_services_apply(self, params: dict) -> dict:
        """Replaces the whole service table at once; conntrack entries (and so established
        connections) stay, and ClientIP affinity records carry over to the new table."""
        try:
            table = ServiceTable.from_data(params["table"], previous=self.pipeline.services)
        except (KeyError, TypeError, TableError) as exc:
            raise RpcError("BadRequest", f"services.apply: {exc}") from None
        self.pipeline.services = table
        await self.nodeports.reconcile(table.node_ports())
        return {"rules": len(table)}

    async def rpc_services_get(self, params: Any) -> dict:
        """The installed service table as kube-proxy sent it (`{"service": "ns/name"}`: that Service's
        entries only), with its rule count and the nodePorts listening."""
        table = self.pipeline.services
        if table is None:
            return {"installed": False, "rules": 0, "table": None, "node_ports": []}
        data = table.to_data()
        wanted = (params or {}).get("service") if isinstance(params, dict) else None
        if wanted:
            data["services"] = [entry for entry in data["services"] if entry["service"] == wanted]
        listening = [list(key) for key in sorted(self.nodeports.listening)]
        return {"installed": True, "rules": len(table), "table": data, "node_ports": listening}

    async def rpc_nodeports_apply(self, params: dict) -> dict:
        """Listeners for exactly these [nodePort, protocol] pairs (services.apply opens the table's)."""
        try:
            ports = [(int(port), str(protocol)) for port, protocol in params.get("ports") or []]
        except (TypeError, ValueError) as exc:
            raise RpcError("BadRequest", f"nodeports.apply takes [port, protocol] pairs: {exc}") from None
        return {"listening": [list(p) for p in await self.nodeports.reconcile(ports)]}

    async def rpc_routes_apply(self, params: dict) -> dict:
        source = params.get("source", "bgp")
        routes = []
        for entry in params.get("routes") or []:
            try:
                prefix = parse_prefix(entry["prefix"])
                ip_to_int(entry["next_hop"])
            except (KeyError, ValueError, TypeError) as exc:
                raise RpcError("BadRequest", f"bad route {entry!r}: {exc}") from None
            if entry["next_hop"] not in self.pipeline.peers:
                hop = entry["next_hop"]
                self.pipeline.set_peer(Peer(hop, hop, vtep_mac(hop)), None)
            routes.append(Route(prefix, RouteKind.TUNNEL, entry["next_hop"], source))
        try:
            count = self.pipeline.routes.replace_source(source, routes)
        except ValueError as exc:
            raise RpcError("BadRequest", str(exc)) from None
        return {"routes": count}

    def _pod(self, params: dict) -> VirtualPod:
        namespace = params.get("namespace") or "default"
        pod = self.pods.get(f"{namespace}/{params.get('pod')}")
        if pod is None:
            raise RpcError("NotFound", f"pod {namespace}/{params.get('pod')} has no network on {self.config.name}")
        if pod.netns is not None:
            raise RpcError("BadRequest", f"pod {pod.port.key} is a netns pod: run a real program in it "
                                         "(podnet exec POD -- CMD ...)")
        return pod

    async def _operate(self, pod: VirtualPod, start, timeout: float, trace: list[Stage] | None = None):
        """Starts an operation on the pod's stack and waits for its Completed or Failed."""
        now = time.monotonic()
        try:
            op = start(pod.stack, now)
        except ValueError as exc:
            raise RpcError("BadRequest", str(exc)) from None
        future = self.loop.create_future()
        pod.waiting[op] = future
        packets = pod.stack.poll(now)
        keys = [key for key, _ in map(flow_key, packets) if key is not None] if trace is not None else []
        for key in keys:
            trace.append(Stage("probe", describe_key(key)))
            self._traces[(key[0], key[3], key[4], key[1], key[2])] = Journey(trace, 1)
        self._emit(pod, packets, now, trace)
        for key in keys:
            self._trace_reply(key, trace, now)
        try:
            return await asyncio.wait_for(future, timeout + 1.0)
        finally:
            pod.waiting.pop(op, None)

    async def rpc_pod_http(self, params: dict) -> dict:
        pod = self._pod(params)
        timeout = float(params.get("timeout") or 10.0)
        try:
            address = await self.dns.url_address(pod, params["url"], timeout)
        except UnresolvableError as exc:
            return {"ok": False, "reason": str(exc)}
        start = lambda s, now: s.http_get(params["url"], now, timeout=timeout, address=address)  # noqa: E731
        event = await self._operate(pod, start, timeout)
        if isinstance(event, ops.Failed):
            return {"ok": False, "reason": event.reason}
        response: ops.HttpResponse = event.result
        return {
            "ok": 200 <= response.status < 300,
            "status": response.status,
            "reason": response.reason,
            "headers": [list(h) for h in response.headers],
            "body": response.body,
        }

    async def rpc_pod_connect(self, params: dict) -> dict:
        pod = self._pod(params)
        timeout = float(params.get("timeout") or 5.0)
        port = int(params["port"])
        try:
            host = await self.dns.address(pod, params["host"], timeout)
        except UnresolvableError as exc:
            return {"ok": False, "reason": str(exc)}
        if (params.get("protocol") or "TCP").upper() == "UDP":
            payload = params.get("payload") or b"hostname"
            payload = payload.encode() if isinstance(payload, str) else payload
            event = await self._operate(pod, lambda s, now: s.udp_exchange(host, port, payload, now, timeout=timeout), timeout)
            if isinstance(event, ops.Failed):
                return {"ok": False, "reason": event.reason}
            return {"ok": True, "peer": event.result.peer, "reply": event.result.payload}
        event = await self._operate(pod, lambda s, now: s.connect(host, port, now, timeout=timeout), timeout)
        if isinstance(event, ops.Failed):
            return {"ok": False, "reason": event.reason}
        return {"ok": True, "local": event.result.local, "remote": event.result.remote}

    async def rpc_pod_ping(self, params: dict) -> dict:
        pod = self._pod(params)
        count = int(params.get("count") or 3)
        interval = float(params.get("interval") or 0.2)
        timeout = float(params.get("timeout") or (count - 1) * interval + 2.0)

        def start(stack: PodStack, now: float) -> int:
            return stack.ping(params["ip"], now, count=count, interval=interval, timeout=timeout)

        event = await self._operate(pod, start, timeout)
        if isinstance(event, ops.Failed):
            return {"ok": False, "reason": event.reason, "transmitted": count, "received": 0, "rtts": []}
        result: ops.PingResult = event.result
        return {
            "ok": result.received > 0,
            "transmitted": result.transmitted,
            "received": result.received,
            "rtts": list(result.rtts),
        }

    async def rpc_pod_dig(self, params: dict) -> dict:
        return await self.dns.dig(self._pod(params), params)

    async def rpc_pod_send_udp(self, params: dict) -> dict:
        """The pod sends a stream of UDP datagrams to `dst:port` for `seconds`, as fast as the node
        forwards them, without waiting for answers (what `iperf -u -b 0` does): a load generator."""
        pod = self._pod(params)
        size, seconds = int(params.get("size") or 64), float(params.get("seconds") or 1.0)
        try:
            body = udp.encode(udp.UdpDatagram(40000, int(params["port"]), bytes(size)), pod.port.ip, params["dst"])
            packet = ipv4.encode(ipv4.IPv4Packet(pod.port.ip, params["dst"], ipv4.IPProtocol.UDP, body))
        except (KeyError, ValueError) as exc:
            raise RpcError("BadRequest", f"pod.send_udp: {exc}") from None
        start = time.monotonic()
        end, sent = start + seconds, 0
        from_pod, run, port = self.pipeline.from_pod, self._run, pod.port
        while (now := time.monotonic()) < end:
            outputs: list[Output] = []
            for _ in range(64):
                outputs += from_pod(port, packet, now)
            run(outputs, now)  # one pass carries out the burst, as the tunnel's batches do
            sent += 64
            await asyncio.sleep(0)  # let the loop read the tunnel socket between bursts
        return {"sent": sent, "seconds": time.monotonic() - start}

    async def rpc_pod_tcp_transfer(self, params: dict) -> dict:
        """The pod opens TCP to `dst:port` (an agnhost port echoes raw bytes back), waits `hold` seconds
        with the connection open, writes `bytes` bytes and reads the echo; returns how long the round trip of
        all of it took."""
        pod = self._pod(params)
        total, timeout = int(params.get("bytes") or 1 << 20), float(params.get("timeout") or 30.0)
        hold = float(params.get("hold") or 0.0)
        opened, echoed = self.loop.create_future(), self.loop.create_future()
        received = 0

        def on_event(event: Any) -> None:
            nonlocal received
            if isinstance(event, ops.Opened) and not opened.done():
                opened.set_result(event)
            elif isinstance(event, ops.Received):
                received += len(event.data)
                if received >= total and not echoed.done():
                    echoed.set_result(received)
            elif isinstance(event, ops.Failed):
                for future in (opened, echoed):
                    if not future.done():
                        future.set_exception(RpcError("Failed", event.reason))

        now = time.monotonic()
        op = pod.stack.open_tcp(params["dst"], int(params["port"]), now, timeout=timeout)
        pod.listeners[op] = on_event
        try:
            self._emit(pod, pod.stack.poll(now), now)
            await asyncio.wait_for(opened, timeout)
            await asyncio.sleep(hold)
            start = time.monotonic()
            pod.stack.send(op, b"x" * total, start)
            self._emit(pod, pod.stack.poll(start), start)
            await asyncio.wait_for(echoed, timeout)
            elapsed = time.monotonic() - start
            now = time.monotonic()
            pod.stack.close(op, now)
            self._emit(pod, pod.stack.poll(now), now)
        finally:
            pod.listeners.pop(op, None)
        return {"bytes": total, "echoed": received, "seconds": elapsed}

    async def rpc_pods_list(self, params: Any) -> list[dict]:
        return [
            {"namespace": p.port.namespace, "name": p.port.name, "ip": p.port.ip, "mac": p.port.mac,
             "counters": dict(p.netns.counters if p.netns else p.stack.counters),
             "netns": p.netns.net.netns if p.netns else None}
            for p in self.pods.values()
        ]

    async def rpc_conntrack_list(self, params: Any) -> list[dict]:
        """The connections the node tracks: both directions' tuples (they differ when DNATted), state,
        packets each way and seconds left."""
        now = time.monotonic()
        return [
            {
                "original": describe_key(entry.original),
                "reply": describe_key(entry.reply),
                "state": entry.state.name.lower(),
                "note": entry.note,
                "packets": list(entry.packets),
                "expires_in": round(entry.expires - now, 1),
            }
            for entry in self.pipeline.conntrack.entries()
        ]

    async def rpc_routes_list(self, params: Any) -> list[dict]:
        return [
            {"prefix": str(r.prefix), "kind": r.kind.name.lower(), "next_hop": r.next_hop, "source": r.source}
            for r in self.pipeline.routes.routes()
        ]

    async def _probe(self, params: dict, trace: list[Stage] | None) -> dict:
        namespace, _, name = (params.get("src") or "").rpartition("/")
        timeout = float(params.get("timeout") or 2.0)
        dst, port = params["dst"], int(params["port"])
        protocol = (params.get("protocol") or "TCP").upper()
        drops_before = dict(self.pipeline.counters)
        netns_pod = self.pods.get(f"{namespace or 'default'}/{name}")
        if netns_pod is not None and netns_pod.netns is not None:
            outcome = await netns_probe(netns_pod.netns.net, dst, port, protocol, timeout,
                                        self._tracer(netns_pod, dst, port, protocol, trace))
            if outcome["ok"]:
                return outcome
            reason = outcome["reason"]
        else:
            pod = self._pod({"namespace": namespace or "default", "pod": name})
            if protocol == "UDP":
                payload = self.dns.probe_payload(port)
                start = lambda s, now: s.udp_exchange(dst, port, payload, now, timeout=timeout)  # noqa: E731
            else:
                start = lambda s, now: s.connect(dst, port, now, timeout=timeout)  # noqa: E731
            event = await self._operate(pod, start, timeout, trace)
            if isinstance(event, ops.Completed):
                return {"ok": True, "reason": "connected" if not hasattr(event.result, "payload") else "answered"}
            reason = event.reason
        dropped = [k[5:] for k, v in self.pipeline.counters.items() if k.startswith("drop.") and v > drops_before.get(k, 0)]
        return {"ok": False, "reason": reason, "dropped": dropped}

    def _tracer(self, pod: VirtualPod, dst: str, port: int, protocol: str, trace: list[Stage] | None):
        """For a netns pod's probe: once its source port is known, its first packet and the first answer
        are recorded in `trace` (None: nothing is traced)."""
        if trace is None:
            return None

        def register(source_port: int) -> None:
            key = ({"TCP": 6, "UDP": 17}[protocol], ip_to_int(pod.port.ip), source_port, ip_to_int(dst), port)
            trace.append(Stage("probe", describe_key(key)))
            self._traces[key] = Journey(trace, 1)
            self._traces[(key[0], key[3], key[4], key[1], key[2])] = Journey(trace, 1)

        return register

    async def rpc_probe(self, params: dict) -> dict:
        return await self._probe(params, None)

    async def rpc_trace(self, params: dict) -> list[dict]:
        trace: list[Stage] = []
        try:
            outcome = await self._probe(params, trace)
        finally:
            for key in [k for k, v in self._traces.items() if v.stages is trace]:
                del self._traces[key]
        verdict = "answered" if outcome["ok"] else f"no answer: {outcome['reason']}"
        trace.append(Stage("result", verdict))
        return [stage.as_dict() for stage in trace]

    async def rpc_trace_watch(self, params: dict) -> list[dict]:
        """The destination half of a trace: waits up to `timeout` for the first packet of a flow from
        `src` to `dst:port` to arrive over the tunnel and returns what happened to it and to its reply.
        `matches: [{"dst", "port"}, ...]` in place of `dst` and `port` waits for the first flow to any of
        them: the endpoints of a Service on this node, one of which the source node's DNAT may choose."""
        try:
            protocol = {"TCP": 6, "UDP": 17}[(params.get("protocol") or "TCP").upper()]
            src = ip_to_int(params["src"])
            targets = params["matches"] if "matches" in params else [params]
            matches = frozenset((protocol, src, ip_to_int(t["dst"]), int(t["port"])) for t in targets)
        except (KeyError, ValueError, TypeError) as exc:
            raise RpcError(
                "BadRequest", f"trace.watch needs protocol, src, and either dst and port or matches: {exc}"
            ) from None
        journey = Journey([], 0)
        entry = (matches, journey)
        self._watches.append(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(journey.done.wait(), float(params.get("timeout") or 3.0))
            # the reply leaves right after the first packet arrives; give it a moment to be recorded
            await asyncio.sleep(0.05)
        finally:
            self._watches.remove(entry)
            for key in [k for k, v in self._traces.items() if v.stages is journey.stages]:
                del self._traces[key]
        return [stage.as_dict() for stage in journey.stages]

    async def rpc_capture(self, params: dict) -> AsyncIterator[dict]:
        count = int(params.get("count") or 0)
        seconds = float(params.get("seconds") or 0)
        queue = self.tunnel.subscribe()
        deadline = time.monotonic() + seconds if seconds else None
        sent = 0
        try:
            while not count or sent < count:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return
                sent += 1
                yield item
        finally:
            self.tunnel.unsubscribe(queue)

    def counters(self) -> dict[str, int]:
        merged: dict[str, int] = dict(self.pipeline.counters)
        for name, value in self.tunnel.counters.items():
            merged[f"tunnel.{name}"] = merged.get(f"tunnel.{name}", 0) + value
        for name, value in self.hostbridge.counters.items():
            merged[f"hostbridge.{name}"] = value
        for name, value in self.nodeports.counters.items():
            merged[f"nodeports.{name}"] = value
        for name, value in self.relays.bridge.counters.items():
            merged[f"relay.{name}"] = value
        merged["conntrack.entries"] = len(self.pipeline.conntrack)
        merged["conntrack.dropped-full"] = self.pipeline.conntrack.dropped_full
        merged["pods"] = len(self.pods)
        return merged

    async def rpc_counters(self, params: Any) -> dict[str, int]:
        return self.counters()

    async def rpc_partition(self, params: dict) -> dict:
        peer = params.get("peer")
        if not isinstance(peer, str):
            raise RpcError("BadRequest", "faults.partition: peer is the address of a node")
        if params.get("drop", True):
            self.tunnel.partitioned.add(peer)
        else:
            self.tunnel.partitioned.discard(peer)
        path = self.config.state_path / PARTITIONS_FILE
        path.with_suffix(".tmp").write_text(json.dumps(sorted(self.tunnel.partitioned)))
        os.replace(path.with_suffix(".tmp"), path)
        return {"partitioned": sorted(self.tunnel.partitioned)}

    def _saved_partitions(self) -> list[str]:
        try:
            peers = json.loads((self.config.state_path / PARTITIONS_FILE).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", PARTITIONS_FILE, exc)
            return []
        return [peer for peer in peers if isinstance(peer, str)] if isinstance(peers, list) else []

    async def rpc_partitions(self, params: Any) -> dict:
        """The peers `faults.partition` cut off, without changing them (for `podnet partition --list`)."""
        return {"partitioned": sorted(self.tunnel.partitioned)}


class _CounterCollector:
    """Exposes the dataplane's counters on /metrics."""

    def __init__(self, agent: NodeAgent):
        self.agent = agent

    def collect(self):
        drops = CounterMetricFamily("podnet_dataplane_drops", "Packets dropped, by reason", labels=["reason"])
        events = CounterMetricFamily("podnet_dataplane_packets", "Dataplane events, by kind", labels=["event"])
        gauges = GaugeMetricFamily("podnet_dataplane_entries", "Table sizes", labels=["table"])
        if self.agent.pipeline is None:
            return []
        for name, value in sorted(self.agent.counters().items()):
            if name in ("conntrack.entries", "pods"):
                gauges.add_metric([name], value)
            elif ".drop." in name or name.startswith("drop."):
                drops.add_metric([name.split("drop.", 1)[1]], value)
            else:
                events.add_metric([name], value)
        return [drops, events, gauges]


async def serve(config: AgentConfig, *, shutdown_trigger: Callable[[], Awaitable[Any]] | None = None) -> None:
    """Runs the agent until `shutdown_trigger()` completes (hypercorn's convention), or forever."""
    await serve_until_triggered(lambda shutdown: _serve(config, shutdown), shutdown_trigger)


async def _serve(config: AgentConfig, shutdown: asyncio.Event) -> None:
    state = config.state_path
    state.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        client = ApiClient(config.server, config.token, encoding="msgpack", tls=config.tls, user_agent=component_agent("kubelet"))
        stack.push_async_callback(client.close)
        agent = NodeAgent(config, client)
        registry = CollectorRegistry()
        registry.register(_CounterCollector(agent))
        enforcer = PolicyEnforcer(client, config.name)
        registry.register(enforcer)
        if config.metrics_port is not None:
            runner, agent.status_port = await start_status_server(
                config.address, config.metrics_port, lambda: agent.pipeline is not None, registry
            )
            stack.push_async_callback(runner.cleanup)
        if (stop_kubelet_api := await kubelet_api.start(agent)) is not None:
            stack.push_async_callback(stop_kubelet_api)
        await agent.register(shutdown)
        if shutdown.is_set():
            return
        stack.push_async_callback(agent.events.close)
        stack.push_async_callback(agent.terminations.close)
        # The kubelet names its node by name, uid included.
        agent.events.record({"kind": "Node", "metadata": {"name": config.name, "uid": config.name}}, NORMAL,
                            "Starting", "Starting kubelet.")
        await agent.start_dataplane()
        stack.callback(agent.tunnel.close)
        stack.callback(agent.hostbridge.close)
        stack.callback(agent.nodeports.close)
        stack.push_async_callback(agent.relays.close)
        stack.callback(agent.netns_pods.close)
        agent.pipeline.policy = enforcer.verdict
        agent.pod_informer = Informer(client, "pods", field_selector=f"spec.nodeName={config.name}")
        agent.node_informer = Informer(client, "nodes")
        agent.node_informer.add_handler(agent.on_node)
        agent.pod_informer.add_handler(agent.on_pod)
        rpc = RpcServer(str(config.socket_path), {**agent.handlers(), **enforcer.handlers()})
        (state / "agent.json").write_text(
            json.dumps({"name": config.name, "address": config.address, "pid": os.getpid(),
                        "status_port": agent.status_port, "vxlan_port": agent.tunnel.port})
        )
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(agent.node_informer.run()),
                group.create_task(agent.pod_env.run()),
                group.create_task(agent.pod_env.after_synced(agent.pod_informer.run())),
                group.create_task(agent.renew_lease(shutdown)),
                group.create_task(agent.sweep_conntrack(shutdown)),
                group.create_task(agent.write_statuses(shutdown)),
                group.create_task(enforcer.run()),
            ]
            synced = asyncio.gather(
                agent.node_informer.wait_synced(), agent.pod_informer.wait_synced(), enforcer.wait_synced()
            )
            stopped = asyncio.ensure_future(shutdown.wait())
            await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if synced.done():
                agent.collect_garbage()
            else:
                synced.cancel()
            await rpc.start()
            log.info("node agent %s up: %s, podCIDR %s, %s on %s:%d", config.name, config.address,
                     agent.pod_cidr, agent.pipeline.node.encapsulation.name, config.address, agent.tunnel.port)
            try:
                await shutdown.wait()
            finally:
                await rpc.close()
                for task in tasks:
                    task.cancel()
                agent._status_wakeup.set()

