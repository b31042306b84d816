"""The pods bound to this node, from the informer's events to a network and back: CNI ADD (an address from
the host-local IPAM, then a userspace stack, a relay or a network namespace), CNI DEL, graceful
termination, and the garbage a restart finds (addresses and namespaces of pods deleted while it was down).

A netns pod's network is attached as a kubelet has a container runtime attach it: the namespace first,
then the node's CNI chain's ADD (nodeagent/cniserver.py executes the conflist), then the containers; and
backwards when it goes: containers stopped, the chain's DEL, the namespace removed. Both run in the
background; until ADD is done the pod is not in `pods` (its status stays Pending, ContainerCreating), and
a pod whose namespace name is being torn down waits for that first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from podnet.nodeagent import virtualruns
from podnet.nodeagent.cni import HostLocalIpam
from podnet.nodeagent.config import AgentConfig
from podnet.nodeagent.dataplane import Dataplane
from podnet.nodeagent.encryption import pod_mtu
from podnet.nodeagent.endpoints import KernelPod, LocalPod, RelayedPod, VirtualPod
from podnet.nodeagent.podenv import PodEnvironment
from podnet.nodeagent.pods.netns import ContainerSpec, NetnsPods, PodNetwork, pod_mode
from podnet.nodeagent.pods.virtual import client as ops
from podnet.nodeagent.pods.virtual.stack import PodStack
from podnet.nodeagent.podstatus import PodStatuses
from podnet.nodeagent.registration import reports_ready
from podnet.nodeagent.termination import RestartEvents, Terminations, record_started
from podnet.nodeagent.volumes import PodVolumes
from podnet.overlay.pipeline.model import PodPort, pod_mac, vtep_mac

from podnet.api.keys import object_key
from podnet.client import ApiClient, Informer
from podnet.cni.spec import CniError
from podnet.events import WARNING, EventRecorder
from podnet.netns.ip import NetnsError
from podnet.netns.names import NETNS_DIR, namespace_name

if TYPE_CHECKING:
    from podnet.nodeagent.cniserver import CniServer

log = logging.getLogger(__name__)

# After a failed CNI ADD, the pod's sandbox is tried again this much later, as the kubelet retries.
SANDBOX_RETRY = 5.0


def _container_ports(pod: dict) -> list[dict]:
    return [p for c in (pod.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []]


class PodLifecycle:
    def __init__(self, config: AgentConfig, client: ApiClient, informer: Informer, dataplane: Dataplane,
                 events: EventRecorder):
        self.config = config
        self.dataplane = dataplane
        self.events = events
        self._informer = informer  # the pods bound here, as the API server last told us
        self.pods: dict[str, LocalPod] = {}  # "ns/name" -> pod
        # Pods that ended (Succeeded or Failed), their network gone: kept, as a kubelet keeps a finished
        # container's log, for their logs until they are deleted (not across a restart of the agent).
        self.finished: dict[str, LocalPod] = {}
        self.ipam: HostLocalIpam | None = None
        self.netns_pods = NetnsPods(config.name, config.state_path, dataplane.from_netns_pod, self._netns_changed)
        self.statuses = PodStatuses(config, client, informer, self.pods, lambda key: dataplane.relays.ready(key))
        self.terminations = Terminations(client, events, self.pods, self.remove_pod, self._release_unheld)
        self.restart_events = RestartEvents(events)
        self.pod_env = PodEnvironment(client, events, self._start_waiting_containers)
        self.netns_pods.make_volumes = PodVolumes(self.pod_env.configmaps, self.pod_env.secrets, client).prepare
        self.cni: CniServer | None = None  # the runtime of the node's conflist, which attaches netns pods
        self.handlers: virtualruns.Handlers = dict  # the agent's RPC handlers, which a Job's virtual pod's command calls
        self._attaching: dict[str, str] = {}  # "ns/name" -> uid of a netns pod whose chain ADD runs
        self._detaching: dict[str, asyncio.Task] = {}  # namespace name -> its pod's teardown
        self._tasks: set[asyncio.Task] = set()
        self._env_waiting: set[str] = set()  # virtual pods whose ConfigMaps or Secrets are missing
        # Told of each pod given its address here, and of each let go (the NetworkPolicy enforcer).
        self.attached: Callable[[dict, str], None] = lambda obj, ip: None
        self.detached: Callable[[str], None] = lambda key: None

    def exec_command(self, key: str, argv: list[str]) -> dict | None:
        """The command line that runs `argv` in a netns pod's first container, in its sandbox; None for a
        virtual pod or a pod not here."""
        pod, obj = self.pods.get(key), self._informer.store.get(key)
        if not isinstance(pod, KernelPod) or obj is None:
            return None
        container = ((obj.get("spec") or {}).get("containers") or [{}])[0].get("name", "")
        command, env = self.netns_pods.exec_command(pod.netns, obj, container, argv)
        return {"argv": command, "env": env}

    def start(self, pod_cidr: str) -> None:
        self.ipam = HostLocalIpam(self.config.state_path, pod_cidr)

    def on_pod(self, event: str, old: dict | None, new: dict | None) -> None:
        if event == "DELETED" or new is None:
            self.remove_pod(old)
            self._forget_finished(old)
            return
        meta = new.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            self.terminations.start(new)
            return
        if (new.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self.remove_pod(new, finished=True)
            return
        if (new.get("spec") or {}).get("hostNetwork"):
            self.statuses.mark_dirty(object_key(new))
            return
        self.add_pod(new)

    def add_pod(self, obj: dict) -> LocalPod | None:
        """CNI ADD; None when the pod's network namespace cannot be built."""
        meta = obj["metadata"]
        key = object_key(obj)
        existing = self.pods.get(key)
        if existing is not None and existing.uid == meta.get("uid"):
            if (obj.get("status") or {}).get("podIP") != existing.port.ip:
                self.statuses.mark_dirty(key)
            return existing
        if existing is not None:  # same name, new pod
            self.remove_pod({"metadata": {"namespace": meta["namespace"], "name": meta["name"], "uid": existing.uid}})
        if key in self.finished:  # a namesake that ended: its logs would be taken for this one's
            self._forget_finished({"metadata": {"namespace": meta["namespace"], "name": meta["name"]}})
        if key in self._attaching:
            return None  # its chain's ADD is running; a pod that replaced it meanwhile is seen when it ends
        uid = meta.get("uid") or key
        teardown = self._detaching.get(namespace_name(self.config.name, meta["namespace"], meta["name"]))
        if teardown is not None:
            # The pod of this name before it is still being taken down, and frees its address at the end:
            # this one may have it back then (a StatefulSet's pod keeps its IP on the node that held it).
            teardown.add_done_callback(lambda _: self._retry(key, uid))
            return None
        allocation = self.ipam.add(uid, meta["namespace"], meta["name"])
        port = PodPort(meta["namespace"], meta["name"], allocation.ip, pod_mac(allocation.ip))
        # A relayed pod's programs run on the host: it is a virtual pod whatever the node's pod mode.
        relayed = self.dataplane.relays.attach(key, obj, allocation.ip)
        if not relayed and pod_mode(obj, self.config.pod_mode) == "netns":
            self._attaching[key] = uid
            self._background(self._attach_netns(key, uid, obj, port))
            return None
        stack = PodStack(meta["name"], meta["namespace"], allocation.ip, port.mac, vtep_mac(self.config.address),
                         _container_ports(obj), (obj.get("spec") or {}).get("hostname") or meta["name"],
                         super_segments=not relayed)
        pod = (RelayedPod if relayed else VirtualPod)(uid, port, stack)
        self._give_environment(key, obj, stack)
        self._admit(key, obj, pod)
        pod.run = virtualruns.start(obj, stack, self.handlers, lambda: self.statuses.mark_dirty(key))
        return pod

    def _give_environment(self, key: str, obj: dict, stack: PodStack) -> None:
        """A virtual pod's ports get their containers' variables; while one it refers to is missing, the pod
        waits for a ConfigMap or Secret of its namespace to be written, as a netns pod's container does."""
        environments = self.pod_env.port_environments(obj)
        if environments is None:
            self._env_waiting.add(key)
            return
        self._env_waiting.discard(key)
        stack.environments = environments

    def _admit(self, key: str, obj: dict, pod: LocalPod) -> None:
        self.pods[key] = pod
        self.attached(obj, pod.port.ip)
        self.dataplane.add(pod)
        log.info("pod %s: CNI ADD, %s", key, pod.port.ip)
        # Written for a new pod, and for one adopted after a restart that the node lifecycle controller
        # marked not Ready while this agent was away (it keeps its IP, so the IP alone does not tell).
        if (obj.get("status") or {}).get("podIP") != pod.port.ip or not reports_ready(obj):
            self.statuses.mark_dirty(key)
        else:
            pod.status_ip = pod.port.ip
        if (obj.get("status") or {}).get("phase") != "Running":
            record_started(self.events, obj)

    def _background(self, call) -> None:
        task = asyncio.ensure_future(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attach_netns(self, key: str, uid: str, obj: dict, port: PodPort) -> None:
        """The namespace, the chain's ADD in it, then the pod's containers; on failure everything is
        undone, an event says why, and the pod is tried again later."""
        meta = obj["metadata"]
        network = PodNetwork(namespace_name(self.config.name, meta["namespace"], meta["name"]), meta["namespace"],
                             port.ip, self.ipam.network.prefixlen, self.ipam.gateway, port.mac, pod_mtu(self.config),
                             offloads=self.config.tap_offloads)
        try:
            previous = await asyncio.to_thread(self.netns_pods.prepare, uid, network, obj)
            fds = await self.cni.attach_pod(obj, uid, str(NETNS_DIR / network.netns))
            netns = self.netns_pods.create(key, uid, network, vtep_mac(self.config.address),
                                           ContainerSpec.from_pod(obj, self.pod_env.container_env), fds, previous, obj)
        except (CniError, NetnsError, OSError) as exc:
            del self._attaching[key]
            log.error("pod %s: its network could not be attached: %s", key, exc)
            self.events.record(obj, WARNING, "FailedCreatePodSandBox",
                               f'Failed to create pod sandbox: plugin type="podnet-cni" failed (add): {exc}')
            await asyncio.to_thread(self.netns_pods.remove, network)
            self.ipam.release(uid)
            asyncio.get_running_loop().call_later(SANDBOX_RETRY, self._retry, key, uid)
            return
        del self._attaching[key]
        self._admit(key, obj, KernelPod(uid, port, netns))
        current = self._informer.store.get(key)
        if current is None or (current.get("metadata") or {}).get("uid") != uid:
            self.remove_pod(obj)  # deleted, or replaced, while its network was being attached
            if current is not None:
                self.on_pod("MODIFIED", None, current)

    def _release_unheld(self, uid: str) -> None:
        """A terminating pod not held here (deleted while the agent was away): its chain's DEL when a
        previous run attached it (portmap's rules and bandwidth's qdiscs are the host's), which frees its
        address; else its address. One still being attached is left to its attachment, which removes it
        once it sees the pod deleted."""
        if uid in self._attaching.values() or self.cni.detach_unheld(uid):
            return
        self.ipam.release(uid)

    def _retry(self, key: str, uid: str) -> None:
        current = self._informer.store.get(key)
        if current is not None and (current.get("metadata") or {}).get("uid") == uid and key not in self.pods:
            self.on_pod("MODIFIED", None, current)

    def _start_waiting_containers(self, namespace: str) -> None:
        """A ConfigMap or Secret of `namespace` was written: netns containers waiting for one may start, and
        virtual pods waiting for one get their variables."""
        for key in [k for k in self._env_waiting if k.startswith(f"{namespace}/")]:
            pod, obj = self.pods.get(key), self._informer.store.get(key)
            if isinstance(pod, VirtualPod) and obj is not None:
                self._give_environment(key, obj, pod.stack)
            else:
                self._env_waiting.discard(key)
        for key, pod in self.pods.items():
            obj = self._informer.store.get(key)
            if not isinstance(pod, KernelPod) or obj is None or not key.startswith(f"{namespace}/"):
                continue
            if any(c.spec.config_error is not None for c in pod.netns.containers.values()):
                self.netns_pods.start_waiting(key, pod.netns, ContainerSpec.from_pod(obj, self.pod_env.container_env))

    def remove_pod(self, obj: dict | None, *, finished: bool = False) -> None:
        """CNI DEL of the pod `obj` names, when it is the one we hold (same uid); `finished`: it ended, and
        its logs stay until it is deleted (`_forget_finished`)."""
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        key = object_key(obj)
        pod = self.pods.get(key)
        if pod is None or (meta.get("uid") and meta.get("uid") != pod.uid):
            return
        del self.pods[key]
        self.detached(key)
        if finished:
            self.finished[key] = pod
        self._env_waiting.discard(key)
        self.dataplane.relays.detach(key)
        self.dataplane.remove(pod)
        if isinstance(pod, KernelPod):
            self.netns_pods.stop(pod.netns)
            netns = pod.netns.net.netns
            self._detaching[netns] = task = asyncio.ensure_future(self._detach_netns(pod, obj, keep_logs=finished))
            task.add_done_callback(lambda _: self._detaching.pop(netns, None))
        else:
            if pod.timer is not None:
                pod.timer.cancel()
            virtualruns.stop(pod.run)
            for future in pod.waiting.values():
                if not future.done():
                    future.set_result(ops.Failed(0, "pod deleted"))
            self.ipam.release(pod.uid)
        self.restart_events.forget(pod.uid)
        log.info("pod %s: CNI DEL, released %s", key, pod.port.ip)

    async def _detach_netns(self, pod: KernelPod, obj: dict, *, keep_logs: bool = False) -> None:
        """The chain's DEL (which frees the pod's address), then the namespace (and its logs, unless kept)."""
        await self.cni.detach_pod(pod.uid, str(NETNS_DIR / pod.netns.net.netns), obj)
        self.ipam.release(pod.uid)
        await asyncio.to_thread(self.netns_pods.remove, pod.netns.net, keep_logs=keep_logs)

    def _forget_finished(self, obj: dict | None) -> None:
        """The pod `obj` names, which ended here, was deleted (or has a namesake): its logs go."""
        if obj is None:
            return
        key, uid = object_key(obj), (obj.get("metadata") or {}).get("uid")
        pod = self.finished.get(key)
        if pod is None or (uid and uid != pod.uid):
            return
        del self.finished[key]
        if isinstance(pod, KernelPod):
            self.netns_pods.remove_logs(pod.netns.net)

    def collect_garbage(self) -> None:
        """After the first sync: addresses whose pods are gone (deleted while we were down) are freed."""
        live = {uid for p in self._informer.store.values() if (uid := p["metadata"].get("uid"))}
        self.cni.collect_garbage(live)
        for allocation in self.ipam.release_all_but(live | self.cni.owners()):
            log.info("released %s of %s, which no longer exists", allocation.ip, allocation.key)
        # Pods adopted from the previous run are still being attached: their namespaces are theirs.
        attaching = {namespace_name(self.config.name, *key.split("/", 1)) for key in self._attaching}
        for name in self.netns_pods.collect_garbage(attaching | set(self._detaching)):
            log.info("removed network namespace %s, which no pod claims", name)

    def _netns_changed(self, key: str) -> None:
        """A netns pod's container exited or started again: its status, and the kubelet's events."""
        self.statuses.mark_dirty(key)
        pod = self.pods.get(key)
        obj = self._informer.store.get(key)
        if isinstance(pod, KernelPod) and obj is not None:
            self.restart_events.observe(obj, pod.netns.containers)

