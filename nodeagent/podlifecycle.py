"""The pods bound to this node, from the informer's events to a network and back: CNI ADD (an address from
the host-local IPAM, then a userspace stack, a relay or a network namespace), CNI DEL, graceful
termination, and the garbage a restart finds (addresses and namespaces of pods deleted while it was down).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from podnet.nodeagent.cni import HostLocalIpam
from podnet.nodeagent.config import AgentConfig
from podnet.nodeagent.dataplane import Dataplane
from podnet.nodeagent.endpoints import KernelPod, LocalPod, RelayedPod, VirtualPod
from podnet.nodeagent.podenv import PodEnvironment
from podnet.nodeagent.pods.netns import ContainerSpec, NetnsPod, NetnsPods, PodNetwork, pod_mode
from podnet.nodeagent.pods.virtual import client as ops
from podnet.nodeagent.pods.virtual.stack import PodStack
from podnet.nodeagent.podstatus import PodStatuses
from podnet.nodeagent.registration import reports_ready
from podnet.nodeagent.termination import RestartEvents, Terminations, record_started
from podnet.nodeagent.volumes import PodVolumes
from podnet.overlay.pipeline.model import PodPort, pod_mac, vtep_mac

from podnet.api.keys import object_key
from podnet.client import ApiClient, Informer
from podnet.events import EventRecorder
from podnet.netns.ip import NetnsError
from podnet.netns.names import namespace_name

log = logging.getLogger(__name__)


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
        self.ipam: HostLocalIpam | None = None
        self.netns_pods = NetnsPods(config.name, config.state_path, dataplane.from_netns_pod, self._netns_changed)
        self.statuses = PodStatuses(config, client, informer, self.pods, lambda key: dataplane.relays.ready(key))
        self.terminations = Terminations(client, events, self.pods, self.remove_pod, lambda uid: self.ipam.release(uid))
        self.restart_events = RestartEvents(events)
        self.pod_env = PodEnvironment(client, events, self._start_waiting_containers)
        self.netns_pods.make_volumes = PodVolumes(self.pod_env.configmaps, self.pod_env.secrets, client).prepare
        # Told when a netns pod got its eth0 and when it lost it (the CNI plugins chained in the conflist).
        self.netns_attached: Callable[[KernelPod, dict], None] = lambda pod, obj: None
        self.netns_detached: Callable[[KernelPod], None] = lambda pod: None

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
            return
        meta = new.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            self.terminations.start(new)
            return
        if (new.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self.remove_pod(new)
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
        uid = meta.get("uid") or key
        allocation = self.ipam.add(uid, meta["namespace"], meta["name"])
        port = PodPort(meta["namespace"], meta["name"], allocation.ip, pod_mac(allocation.ip))
        # A relayed pod's programs run on the host: it is a virtual pod whatever the node's pod mode.
        relayed = self.dataplane.relays.attach(key, obj, allocation.ip)
        if not relayed and pod_mode(obj, self.config.pod_mode) == "netns":
            netns = self._build_namespace(key, uid, obj, port)
            if netns is None:
                self.ipam.release(uid)
                return None
            pod: LocalPod = KernelPod(uid, port, netns)
        else:
            stack = PodStack(meta["name"], meta["namespace"], allocation.ip, port.mac, vtep_mac(self.config.address),
                             _container_ports(obj), (obj.get("spec") or {}).get("hostname") or meta["name"])
            pod = (RelayedPod if relayed else VirtualPod)(uid, port, stack)
        self.pods[key] = pod
        self.dataplane.add(pod)
        if isinstance(pod, KernelPod):
            self.netns_attached(pod, obj)
        log.info("pod %s: CNI ADD, %s", key, allocation.ip)
        # Written for a new pod, and for one adopted after a restart that the node lifecycle controller
        # marked not Ready while this agent was away (it keeps its IP, so the IP alone does not tell).
        if (obj.get("status") or {}).get("podIP") != allocation.ip or not reports_ready(obj):
            self.statuses.mark_dirty(key)
        else:
            pod.status_ip = allocation.ip
        if (obj.get("status") or {}).get("phase") != "Running":
            record_started(self.events, obj)
        return pod

    def _build_namespace(self, key: str, uid: str, obj: dict, port: PodPort) -> NetnsPod | None:
        meta = obj["metadata"]
        network = PodNetwork(namespace_name(self.config.name, meta["namespace"], meta["name"]), meta["namespace"],
                             port.ip, self.ipam.network.prefixlen, self.ipam.gateway, port.mac,
                             offloads=self.config.tap_offloads)
        try:
            return self.netns_pods.create(key, uid, network, vtep_mac(self.config.address),
                                          ContainerSpec.from_pod(obj, self.pod_env.container_env), obj)
        except (NetnsError, OSError) as exc:
            log.error("pod %s: cannot build its network namespace: %s", key, exc)
            return None

    def _start_waiting_containers(self, namespace: str) -> None:
        """A ConfigMap or Secret of `namespace` was written: netns containers waiting for one may start."""
        for key, pod in self.pods.items():
            obj = self._informer.store.get(key)
            if not isinstance(pod, KernelPod) or obj is None or not key.startswith(f"{namespace}/"):
                continue
            if any(c.spec.config_error is not None for c in pod.netns.containers.values()):
                self.netns_pods.start_waiting(key, pod.netns, ContainerSpec.from_pod(obj, self.pod_env.container_env))

    def remove_pod(self, obj: dict | None) -> None:
        """CNI DEL of the pod `obj` names, when it is the one we hold (same uid)."""
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        key = object_key(obj)
        pod = self.pods.get(key)
        if pod is None or (meta.get("uid") and meta.get("uid") != pod.uid):
            return
        del self.pods[key]
        self.dataplane.relays.detach(key)
        self.dataplane.remove(pod)
        if isinstance(pod, KernelPod):
            self.netns_pods.delete(pod.netns)
            self.netns_detached(pod)
        else:
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
        live = {p["metadata"].get("uid") for p in self._informer.store.values()}
        for allocation in self.ipam.release_all_but({uid for uid in live if uid}):
            log.info("released %s of %s, which no longer exists", allocation.ip, allocation.key)
        for name in self.netns_pods.collect_garbage():
            log.info("removed network namespace %s, which no pod claims", name)

    def _netns_changed(self, key: str) -> None:
        """A netns pod's container exited or started again: its status, and the kubelet's events."""
        self.statuses.mark_dirty(key)
        pod = self.pods.get(key)
        obj = self._informer.store.get(key)
        if isinstance(pod, KernelPod) and obj is not None:
            self.restart_events.observe(obj, pod.netns.containers)

