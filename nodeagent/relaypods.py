"""Relayed pods: pods whose ports are served by a process on the host network, as the cluster DNS's are.

A kube-system pod annotated `podnet.io/relay: "53=127.0.0.10:1053,9153=127.0.0.10:6445"` (podnet/api/
clusterdns.py) is an ordinary virtual pod: an IP from this node's podCIDR, Services and NetworkPolicies judge
it like any pod, and its own stack answers ping and its other ports. Only TCP and UDP to a relayed port
take another way after delivery: the host bridge terminates the flow as the pod and carries it from the
node address to the host address the annotation names, and the answers leave as the pod's own. So clients
reach the DNS server at its pod IP on 53, after the Service DNAT and the policies, as they reach CoreDNS.

Readiness is the process's: the pod's readinessProbe (httpGet on a relayed port) is asked of the host
address behind that port every periodSeconds, with Kubernetes' thresholds, and each change of verdict is
written to the pod's status, so the Service's endpoints follow the process. A relayed pod without a probe
is ready as soon as it runs.

A refusal from the process behind a relayed port (a UDP datagram answered by the host with port
unreachable, a TCP connect refused) means the process is gone: a probed pod is then not ready at once, as
the kubelet marks a pod whose container exited without waiting for failed probes, and its probes make it
ready again when the process answers. So its endpoint leaves the Service within a status write and a
kube-proxy sync, which also clears the conntrack entries of UDP flows to it (nodeagent/agentrpc.py,
services.apply). The refused datagram itself is dropped, not answered. In Kubernetes the pod's own kernel
would answer port unreachable while the kubelet restarts the container; resolvers retry such a refusal at
once (dig on a new socket, glibc after reopening its own), each try a toss of kube-proxy's coin onto the dead
replica, all of them before its endpoint can leave. Nothing restarts a relayed process, so it is treated as
a replica that is gone, as one on a lost node is: its queries time out, and the resolver's retry seconds
later finds only live replicas, on the same socket too, since the conntrack entry to the dead one is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from podnet.nodeagent.hostbridge import HostBridge
from podnet.overlay.wire import fastpath
from podnet.overlay.wire.addresses import ip_to_int

from podnet.api.clusterdns import RELAY_ANNOTATION, Relay, relay_of

log = logging.getLogger(__name__)

_TCP, _UDP = 6, 17


@dataclass(frozen=True, slots=True)
class HttpProbe:
    """A container's readinessProbe.httpGet, with Kubernetes' defaults for what it leaves out."""

    port: int
    path: str = "/"
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


def http_probe(pod: dict) -> HttpProbe | None:
    """The first httpGet readinessProbe among the pod's containers (a named port resolved through the
    container's ports), or None."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        probe = container.get("readinessProbe") or {}
        get = probe.get("httpGet")
        if not isinstance(get, dict):
            continue
        port = get.get("port")
        if isinstance(port, str):
            port = next((p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == port), None)
        if not isinstance(port, int):
            continue
        return HttpProbe(port, get.get("path") or "/", float(probe.get("periodSeconds") or 10),
                         float(probe.get("timeoutSeconds") or 1), int(probe.get("successThreshold") or 1),
                         int(probe.get("failureThreshold") or 3))
    return None


@dataclass(slots=True)
class Readiness:
    """Kubernetes' probe verdict: not ready before the first pass, ready after `success_threshold` passes
    in a row, unready again after `failure_threshold` failures in a row. Pure."""

    success_threshold: int = 1
    failure_threshold: int = 3
    ready: bool = False
    _contrary: int = 0  # results in a row that disagree with `ready`

    def stopped(self) -> bool:
        """The container is gone: not ready at once, whatever the thresholds; True when the verdict
        changed."""
        changed, self.ready, self._contrary = self.ready, False, 0
        return changed

    def record(self, passed: bool) -> bool:
        """Takes one probe's result; True when the verdict changed."""
        if passed == self.ready:
            self._contrary = 0
            return False
        self._contrary += 1
        if self._contrary < (self.success_threshold if passed else self.failure_threshold):
            return False
        self.ready, self._contrary = passed, 0
        return True


@dataclass(slots=True)
class _Relayed:
    key: str
    ip: str
    relay: Relay
    readiness: Readiness
    task: asyncio.Task | None = None


@dataclass
class RelayedPods:
    """The node's relayed pods. `deliver` takes the packets they answer with (into the pipeline as the
    pod's); `changed(key)` is told when a pod's readiness changes, so that its status is written."""

    node_address: str
    deliver: Callable[[bytes], None]
    changed: Callable[[str], None]
    pods: dict[str, _Relayed] = field(default_factory=dict)
    # (pod IP as an int, container port) -> the host address that serves it
    targets: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self.bridge = HostBridge(self.node_address, self.deliver, self._target, refused=self._refused)

    def _target(self, ip: str, port: int) -> tuple[str, int]:
        return self.targets[ip_to_int(ip), port]

    def _refused(self, ip: str, port: int) -> None:
        """The process behind the relayed `ip:port` refused a flow: its probed pod is not ready now."""
        for state in self.pods.values():
            if state.ip == ip and port in state.relay and state.task is not None and state.readiness.stopped():
                host, target = state.relay[port]
                log.info("pod %s: not ready (%s:%d refused: its process is gone)", state.key, host, target)
                self.changed(state.key)

    def attach(self, key: str, pod: dict, ip: str) -> bool:
        """Starts relaying the pod's ports when it asks for it (and may); whether it is relayed."""
        try:
            relay = relay_of(pod)
        except ValueError as exc:
            log.warning("pod %s: ignoring %s: %s", key, RELAY_ANNOTATION, exc)
            return False
        if not relay:
            return False
        self.detach(key)
        probe = http_probe(pod)
        if probe is not None and probe.port not in relay:
            log.warning("pod %s: its readinessProbe port %d is not relayed; it is ready without one", key, probe.port)
            probe = None
        state = _Relayed(key, ip, relay, Readiness(probe.success_threshold, probe.failure_threshold) if probe
                         else Readiness(ready=True))
        self.pods[key] = state
        self.targets.update({(ip_to_int(ip), port): target for port, target in relay.items()})
        if probe is not None:
            state.task = asyncio.ensure_future(self._probe(state, probe, relay[probe.port]))
        log.info("pod %s: %s relayed", key, ", ".join(f"{ip}:{p} to {h}:{t}" for p, (h, t) in sorted(relay.items())))
        return True

    def detach(self, key: str) -> None:
        state = self.pods.pop(key, None)
        if state is None:
            return
        if state.task is not None:
            state.task.cancel()
        for port in state.relay:
            self.targets.pop((ip_to_int(state.ip), port), None)

    def ready(self, key: str) -> bool:
        """Whether the pod is ready as far as its relay goes (a pod not relayed is)."""
        state = self.pods.get(key)
        return state is None or state.readiness.ready

    def take(self, packet: bytes, now: float) -> bool:
        """Carries a packet delivered to a relayed pod to its host process when it is for a relayed port;
        False leaves it to the pod's own stack."""
        flow = fastpath.ipv4_flow(packet)
        if flow is None or flow[0] not in (_TCP, _UDP) or (flow[3], flow[4]) not in self.targets:
            return False
        self.bridge.handle(packet, now)
        return True

    async def _probe(self, state: _Relayed, probe: HttpProbe, target: tuple[str, int]) -> None:
        url = f"http://{target[0]}:{target[1]}{probe.path}"
        # The first verdict is written whatever it is: a pod adopted after a restart of the agent may still
        # say Ready from before.
        first = True
        while True:
            passed = await self._get(url, probe.timeout)
            if state.readiness.record(passed) or first:
                log.info("pod %s: %s (readiness probe %s)", state.key, "ready" if state.readiness.ready
                         else "not ready", url)
                self.changed(state.key)
                first = False
            await asyncio.sleep(probe.period)

    async def _get(self, url: str, timeout: float) -> bool:
        """As the kubelet judges an httpGet probe: any status from 200 to 399 passes."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout),
                                         allow_redirects=False) as response:
                return 200 <= response.status < 400
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        for key in list(self.pods):
            self.detach(key)
        self.bridge.close()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
