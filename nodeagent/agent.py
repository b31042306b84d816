"""The node agent: kubelet, CNI and dataplane of one host.

It registers its Node and waits for the controller to give it a podCIDR, renews its Lease in
kube-node-lease, list+watches the pods bound to it and every Node (one Node event becomes one route, as
in flannel's vxlan backend), gives each pod an address from the host-local IPAM and a virtual network
stack, writes the pod's status, and forwards the pods' packets through the pure pipeline: to one another,
in VXLAN to other nodes, or through the host bridge to host-network addresses. Kube-proxy, the BGP
speaker and the CLI talk to it over msgpack-RPC on `<state_dir>/agent.sock`.

`NodeAgent` only composes the parts, each in its own module:
- registration.py: the Node, its status and its Lease;
- podlifecycle.py (with podstatus.py, termination.py, podenv.py): the pods bound here, CNI ADD and DEL;
- dataplane.py (with traces.py): the pipeline, the tunnel and everything else that carries packets;
- agentrpc.py: the RPC surface, one handler per podnet.rpc.agentmethods.AgentMethod.

When the API server goes away the dataplane keeps forwarding with what it has; the informers resume
when it comes back. A restarted agent finds its pods' addresses on disk and gives each pod the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from podnet.nodeagent.agentrpc import AgentRpc
from podnet.nodeagent.cniserver import CniServer
from podnet.nodeagent.config import AgentConfig
from podnet.nodeagent.dataplane import Dataplane
from podnet.nodeagent.encryption import carried_port
from podnet.nodeagent.endpoints import LocalPod
from podnet.nodeagent.kubelet import server as kubelet_api
from podnet.nodeagent.l7enforcer import L7Enforcer
from podnet.nodeagent.netpol import PolicyEnforcer
from podnet.nodeagent.nodeports import NodePorts
from podnet.nodeagent.poddns import PodDns
from podnet.nodeagent.podlifecycle import PodLifecycle
from podnet.nodeagent.registration import NodeRegistration
from podnet.overlay.pipeline.forward import Pipeline
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from podnet.client import ApiClient, Informer, component_agent
from podnet.events import NORMAL, EventRecorder
from podnet.process import serve_until_triggered, start_status_server
from podnet.rpc.session import RpcServer

__all__ = ["AgentConfig", "NodeAgent", "serve"]

log = logging.getLogger(__name__)


class NodeAgent:
    def __init__(self, config: AgentConfig, client: ApiClient):
        self.config = config
        self.client = client
        self.status_port: int | None = None
        self.kubelet_port: int | None = None
        self.registration = NodeRegistration(config, client, lambda: self.kubelet_port)
        self.pod_informer = Informer(client, "pods", field_selector=f"spec.nodeName={config.name}")
        self.node_informer = Informer(client, "nodes")
        self.events = EventRecorder(client, "kubelet", config.name)
        self.dataplane = Dataplane(config, lambda key: self.lifecycle.statuses.mark_dirty(key))
        self.lifecycle = PodLifecycle(config, client, self.pod_informer, self.dataplane, self.events)
        self.dns = PodDns(self.dataplane.operate, self.dataplane.emit)
        self.rpc = AgentRpc(self)
        self.cni = CniServer(self)  # what the podnet-cni plugin asks
        self.lifecycle.cni = self.cni  # netns pods get their network from the node's CNI chain
        self.lifecycle.handlers = self.handlers  # what a Job's virtual pod's command calls, as exec does

    # What the kubelet API's handlers see (nodeagent/kubelet/node.py).
    @property
    def pods(self) -> dict[str, LocalPod]:
        return self.lifecycle.pods

    @property
    def finished_pods(self) -> dict[str, LocalPod]:
        return self.lifecycle.finished

    @property
    def nodeports(self) -> NodePorts | None:
        return self.dataplane.nodeports

    @property
    def pipeline(self) -> Pipeline | None:
        return self.dataplane.pipeline

    def handlers(self) -> dict[str, Any]:
        return {**self.rpc.handlers(), **self.cni.handlers()}

    async def start(self, shutdown: asyncio.Event) -> bool:
        """Registers the Node and, once it has a podCIDR, starts the dataplane; False if shut down first."""
        await self.registration.register(shutdown)
        if shutdown.is_set():
            return False
        # The kubelet names its node by name, uid included.
        self.events.record({"kind": "Node", "metadata": {"name": self.config.name, "uid": self.config.name}},
                           NORMAL, "Starting", "Starting kubelet.")
        pod_cidr = self.registration.pod_cidr
        self.lifecycle.start(pod_cidr)
        await self.dataplane.start(pod_cidr)
        await self.rpc.restore_services()  # before a pod sends again: kube-proxy's table comes later
        self.cni.recover()  # the attachments a previous run left, before any pod claims one
        self.node_informer.add_handler(self.on_node)
        self.pod_informer.add_handler(self.lifecycle.on_pod)
        return True

    def on_node(self, event: str, old: dict | None, new: dict | None) -> None:
        name = ((new or old or {}).get("metadata") or {}).get("name")
        if name == self.config.name:
            self.registration.on_own_node(new)
        else:
            self.dataplane.on_peer_node(name, None if event == "DELETED" else new)

    def counters(self) -> dict[str, int]:
        return {**self.dataplane.counters(), "pods": len(self.pods)}


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
        client = ApiClient(config.server, config.token, encoding="msgpack", tls=config.tls, fallbacks=config.fallbacks, user_agent=component_agent("kubelet"))
        stack.push_async_callback(client.close)
        agent = NodeAgent(config, client)
        registry = CollectorRegistry()
        registry.register(_CounterCollector(agent))
        enforcer = PolicyEnforcer(client, config.name)
        registry.register(enforcer)
        l7 = L7Enforcer(client, enforcer)
        if config.metrics_port is not None:
            runner, agent.status_port = await start_status_server(
                config.address, config.metrics_port, lambda: agent.pipeline is not None, registry
            )
            stack.push_async_callback(runner.cleanup)
        if (stop_kubelet_api := await kubelet_api.start(agent)) is not None:
            stack.push_async_callback(stop_kubelet_api)
        if not await agent.start(shutdown):
            return
        lifecycle, dataplane = agent.lifecycle, agent.dataplane
        stack.push_async_callback(agent.events.close)
        stack.push_async_callback(lifecycle.terminations.close)
        dataplane.close_with(stack)
        stack.callback(lifecycle.netns_pods.close)
        dataplane.pipeline.policy = enforcer.verdict
        lifecycle.attached, lifecycle.detached = enforcer.pod_attached, enforcer.pod_detached
        dataplane.l7_lookup = l7.l7_for
        l7.proxied = dataplane.has_l7_proxy
        dataplane.l7_report = l7.report
        dataplane.l7_egress = l7.l7_egress_for
        dataplane.l7_pending, dataplane.l7_pending_egress = l7.pending, l7.pending_egress
        rpc = RpcServer(str(config.socket_path), {**agent.handlers(), **enforcer.handlers()}, named_params=True)
        (state / "agent.json").write_text(
            json.dumps({"name": config.name, "address": config.address, "pid": os.getpid(),
                        "status_port": agent.status_port, "vxlan_port": carried_port(dataplane.tunnel)})
        )
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(agent.node_informer.run()),
                group.create_task(lifecycle.pod_env.run()),
                group.create_task(lifecycle.pod_env.after_synced(agent.pod_informer.run())),
                group.create_task(agent.registration.renew_lease(shutdown)),
                group.create_task(dataplane.sweep_conntrack(shutdown)),
                group.create_task(lifecycle.statuses.run(shutdown)),
                group.create_task(enforcer.run()),
                group.create_task(l7.run()),
            ]
            synced = asyncio.gather(
                agent.node_informer.wait_synced(), agent.pod_informer.wait_synced(), enforcer.wait_synced()
            )
            stopped = asyncio.ensure_future(shutdown.wait())
            await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if synced.done():
                lifecycle.collect_garbage()
            else:
                synced.cancel()
            await rpc.start()
            agent.cni.serving.set()
            log.info("node agent %s up: %s, podCIDR %s, %s on %s:%d (encryption: %s)", config.name,
                     config.address, agent.registration.pod_cidr, dataplane.pipeline.node.encapsulation.name,
                     config.address, dataplane.tunnel.port, config.encryption)
            try:
                await shutdown.wait()
            finally:
                await agent.cni.close()  # while podnet-cni can still reach the agent for its DEL
                await rpc.close()
                for task in tasks:
                    task.cancel()
                lifecycle.statuses.wake()
