"""What the `podnet-cni` plugin asks of the agent: attachments of network namespaces that a CNI runtime
made (containerd, a test, a person with `ip netns add`) to this node's pod network.

The agent stays the dataplane. ADD takes an address from the node's host-local IPAM (owner
`cni:<containerID>:<ifname>`, so a runtime's attachment never shares an address with an API pod), opens a
TAP, moves it into the namespace at `CNI_NETNS` under the name `CNI_IFNAME` with the address and a default
route via the node's gateway, and hands the TAP to the pipeline as a netns pod's. The plugin process only
relays: it exits after printing the result, the agent keeps the TAP's file descriptor. DEL undoes all of
that and is idempotent (an unknown attachment, a namespace already gone: nothing to do). GC deletes every
attachment the runtime no longer lists. CHECK compares the ADD result with the namespace as `ip -json`
sees it (podnet.cni.spec.check_attachment).

The agent also writes the node's conflist, `<state_dir>/cni/net.d/10-podnet.conflist`, naming its socket,
for a runtime (podnet/cni/runtime.py, containerd) to execute.

Attachments live as long as the agent: its TAPs close with it, and after a restart the IPAM's garbage
collection frees their addresses like those of pods that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podnet.nodeagent.cni import IpamExhausted
from podnet.nodeagent.encryption import pod_mtu
from podnet.nodeagent.endpoints import KernelPod
from podnet.nodeagent.pods.netns import (
    CLUSTER_DNS,
    CLUSTER_DOMAIN,
    NETNS_DIR,
    POD_INTERFACE,
    NetnsError,
    NetnsPod,
    PodNetwork,
    ip,
    open_tap,
    tap_name,
)
from podnet.overlay.pipeline.model import PodPort, pod_mac, vtep_mac

from podnet.cni.conflist import CONFLIST_NAME, ConfList, podnet_conflist
from podnet.cni.runtime import Container, Runtime
from podnet.cni.spec import Attachment, CniError, check_attachment
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcError

if TYPE_CHECKING:
    from podnet.nodeagent.agent import NodeAgent

log = logging.getLogger(__name__)

OWNER_PREFIX = "cni:"
# The Kubernetes namespace an attachment is filed under when CNI_ARGS names no pod.
DEFAULT_NAMESPACE = "cni"
# Where a runtime finds plugins: podnet-cni beside this interpreter, then the reference plugins.
CNI_PATH = (str(Path(sys.executable).parent), "/usr/lib/cni", "/opt/cni/bin")


def owner(container_id: str, ifname: str) -> str:
    return f"{OWNER_PREFIX}{container_id}:{ifname}"


def in_namespace(netns: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Runs `argv` in the network namespace at path `netns` (any path: /run/netns/x, /proc/PID/ns/net)."""
    return subprocess.run(["nsenter", f"--net={netns}", "--", *argv], input=stdin, capture_output=True,
                          text=True, timeout=10)


def _ip_json(netns: str, *args: str) -> list[dict]:
    done = in_namespace(netns, "ip", "-json", *args)
    if done.returncode:
        raise NetnsError(f"ip -json {' '.join(args)} in {netns}: {done.stderr.strip()}")
    return json.loads(done.stdout or "[]")


@dataclass(slots=True)
class CniAttachment:
    container_id: str
    ifname: str
    netns: str
    endpoint: KernelPod
    attachment: Attachment

    def describe(self) -> dict:
        port = self.endpoint.port
        return {"container_id": self.container_id, "ifname": self.ifname, "netns": self.netns,
                "namespace": port.namespace, "name": port.name, "address": self.attachment.address}


class CniServer:
    def __init__(self, agent: NodeAgent):
        self.agent = agent
        self.attachments: dict[tuple[str, str], CniAttachment] = {}
        directory = agent.config.state_path / "cni"
        self.conflist_path = directory / "net.d" / CONFLIST_NAME
        self.results = directory / "results"
        self.runtime_log = directory / "runtime.log"
        self._chains: set[asyncio.Task] = set()
        self._write_conflist()

    def _write_conflist(self) -> None:
        """The node's network configuration list, as /etc/cni/net.d holds one for containerd: podnet-cni
        with this agent's socket. Written once: plugins a user chains after it stay across restarts."""
        if self.conflist_path.exists():
            return
        self.conflist_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.conflist_path.with_suffix(".tmp")
        tmp.write_text(podnet_conflist(str(self.agent.config.socket_path)).to_json())
        tmp.replace(self.conflist_path)

    def handlers(self) -> dict[str, Any]:
        return {
            AgentMethod.CNI_ADD: self.add,
            AgentMethod.CNI_CHECK: self.check,
            AgentMethod.CNI_DEL: self.delete,
            AgentMethod.CNI_GC: self.gc,
            AgentMethod.CNI_STATUS: self.status,
            AgentMethod.CNI_LIST: self.list_attachments,
            AgentMethod.CNI_RESULT: self.pod_result,
        }

    # ---- the agent as a runtime: plugins chained after podnet in the conflist, for netns pods --------

    def _chained(self) -> Runtime | None:
        """The conflist's plugins after podnet's own, read afresh (a runtime watches net.d); None when
        there are none. podnet's step is the agent's own ADD of the pod, done before."""
        try:
            conflist = ConfList.parse(self.conflist_path.read_bytes())
        except (OSError, CniError) as exc:
            log.warning("cni: %s is unusable: %s", self.conflist_path, exc)
            return None
        if len(conflist.plugins) < 2:
            return None
        return Runtime(replace(conflist, plugins=conflist.plugins[1:]), CNI_PATH, self.results, self.runtime_log)

    @staticmethod
    def _own_result(pod: KernelPod) -> Attachment:
        """What podnet's step of the chain gave a netns pod."""
        net = pod.netns.net
        return Attachment(POD_INTERFACE, net.mac, str(NETNS_DIR / net.netns), f"{net.ip}/{net.prefix_len}",
                          net.gateway, net.mtu)

    async def pod_result(self, params: Any) -> dict | None:
        """A netns pod's CNI result: what the chain returned, or podnet's own when nothing is chained."""
        params = params if isinstance(params, dict) else {}
        pod = self.agent.lifecycle.pods.get(f"{params.get('namespace') or 'default'}/{params.get('pod')}")
        if not isinstance(pod, KernelPod):
            return None
        runtime = self._chained()
        chained = runtime.cached_result(self._container(pod)) if runtime is not None else None
        return chained or self._own_result(pod).result(runtime.conflist.version if runtime else "1.0.0")

    def netns_pod_added(self, pod: KernelPod, obj: dict) -> None:
        """Runs the chained plugins' ADD for a netns pod the agent has just given its eth0."""
        runtime = self._chained()
        if runtime is None:
            return
        attachment = self._own_result(pod)
        ports = [{"hostPort": p["hostPort"], "containerPort": p.get("containerPort"),
                  "protocol": str(p.get("protocol") or "TCP").lower(), "hostIP": p.get("hostIP") or ""}
                 for c in (obj.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []
                 if p.get("hostPort")]
        self._run(runtime.add(self._container(pod), {"portMappings": ports} if ports else {},
                              attachment.result(runtime.conflist.version)), f"ADD {pod.port.key}")

    def netns_pod_removed(self, pod: KernelPod) -> None:
        runtime = self._chained()
        if runtime is not None and runtime.cached_result(self._container(pod)) is not None:
            self._run(runtime.delete(self._container(pod)), f"DEL {pod.port.key}")

    @staticmethod
    def _container(pod: KernelPod) -> Container:
        port = pod.port
        return Container(pod.uid, str(NETNS_DIR / pod.netns.net.netns), POD_INTERFACE,
                         (("K8S_POD_NAMESPACE", port.namespace), ("K8S_POD_NAME", port.name),
                          ("K8S_POD_INFRA_CONTAINER_ID", pod.uid)))

    def _run(self, call, what: str) -> None:
        async def run() -> None:
            try:
                await call
            except (CniError, OSError) as exc:
                log.warning("cni: chained plugins' %s failed: %s", what, exc)
            else:
                log.info("cni: chained plugins' %s done", what)

        task = asyncio.ensure_future(run())
        self._chains.add(task)
        task.add_done_callback(self._chains.discard)

    # ---- what podnet-cni asks ----------------------------------------------------------------------

    @staticmethod
    def _identity(params: Any) -> tuple[str, str]:
        if not isinstance(params, dict) or not params.get("container_id") or not params.get("ifname"):
            raise RpcError("BadRequest", "container_id and ifname are required")
        return str(params["container_id"]), str(params["ifname"])

    async def status(self, params: Any) -> dict:
        lifecycle, dataplane = self.agent.lifecycle, self.agent.dataplane
        if lifecycle.ipam is None or dataplane.pipeline is None:
            return {"ready": False, "reason": "the node has no podCIDR yet"}
        return {"ready": True, "reason": f"podCIDR {lifecycle.ipam.network}"}

    async def list_attachments(self, params: Any) -> list[dict]:
        return [a.describe() for a in self.attachments.values()]

    async def add(self, params: dict) -> dict:
        container_id, ifname = self._identity(params)
        netns = str(params.get("netns") or "")
        if not Path(netns).exists():
            raise RpcError("BadRequest", f"network namespace {netns!r} does not exist")
        existing = self.attachments.get((container_id, ifname))
        if existing is not None:
            if existing.netns != netns:
                raise RpcError("BadRequest", f"{container_id}/{ifname} is attached in {existing.netns}")
            return existing.attachment.to_data()
        ipam = self.agent.lifecycle.ipam
        if ipam is None:
            raise RpcError("NotReady", "the node has no podCIDR yet")
        namespace = str(params.get("namespace") or DEFAULT_NAMESPACE)
        name = str(params.get("name") or container_id[:12])
        try:
            allocation = ipam.add(owner(container_id, ifname), namespace, name)
        except IpamExhausted as exc:
            raise RpcError("Exhausted", str(exc)) from None
        network = PodNetwork(Path(netns).name, namespace, allocation.ip, ipam.network.prefixlen, ipam.gateway,
                             pod_mac(allocation.ip), pod_mtu(self.agent.config))
        try:
            fd = self._plumb(netns, ifname, network)
        except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
            ipam.release(allocation.uid)
            raise RpcError("SetupFailed", str(exc)) from None
        state = self.agent.config.state_path / "cni" / f"{container_id}-{ifname}.json"
        gateway_mac = bytes.fromhex(vtep_mac(self.agent.config.address).replace(":", ""))
        netns_pod = NetnsPod(network, allocation.uid, fd, gateway_mac, state, state.with_suffix(".log"))
        endpoint = KernelPod(allocation.uid, PodPort(namespace, name, allocation.ip, network.mac), netns_pod)
        dataplane = self.agent.dataplane
        dataplane.add(endpoint)
        asyncio.get_running_loop().add_reader(fd, lambda: dataplane.from_netns_pod(netns_pod, netns_pod.read_frames()))
        attachment = Attachment(ifname, network.mac, netns, f"{allocation.ip}/{network.prefix_len}", ipam.gateway,
                                network.mtu, (CLUSTER_DNS,), _search(namespace), ("ndots:5",))
        self.attachments[(container_id, ifname)] = CniAttachment(container_id, ifname, netns, endpoint, attachment)
        log.info("cni: ADD %s %s in %s: %s", container_id, ifname, netns, attachment.address)
        return attachment.to_data()

    @staticmethod
    def _plumb(netns: str, ifname: str, net: PodNetwork) -> int:
        """A TAP whose other end is this agent, as `ifname` in `netns`, configured; its descriptor."""
        temporary = tap_name(f"{netns}/{ifname}")
        ip("link", "delete", temporary, check=False)
        fd = open_tap(temporary)
        try:
            ip("link", "set", temporary, "netns", netns)
            done = in_namespace(netns, "ip", "-batch", "-", stdin="\n".join([
                f"link set {temporary} name {ifname}",
                f"link set {ifname} address {net.mac} mtu {net.mtu} addrgenmode none",
                f"addr add {net.ip}/{net.prefix_len} dev {ifname}",
                "link set lo up",
                f"link set {ifname} up",
                f"route add default via {net.gateway} dev {ifname}",
            ]) + "\n")
            if done.returncode:
                in_namespace(netns, "ip", "link", "delete", temporary)
                raise NetnsError(f"setting up {ifname} in {netns}: {done.stderr.strip()}")
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def check(self, params: dict) -> dict:
        container_id, ifname = self._identity(params)
        known = self.attachments.get((container_id, ifname))
        if known is None:
            raise RpcError("NotFound", f"no attachment {container_id}/{ifname} on {self.agent.config.name}")
        netns = str(params.get("netns") or known.netns)
        prev_result = params.get("prev_result") or known.attachment.result("1.1.0")
        try:
            links, addresses, routes = (_ip_json(netns, "link"), _ip_json(netns, "addr"),
                                        _ip_json(netns, "route"))
        except (NetnsError, ValueError, subprocess.TimeoutExpired) as exc:
            return {"problems": [str(exc)]}
        problems = check_attachment(prev_result, ifname, links, addresses, routes)
        if known.attachment.address not in [ip.get("address") for ip in prev_result.get("ips") or []]:
            problems.append(f"the agent gave {ifname} {known.attachment.address}, not what prevResult says")
        return {"problems": problems}

    async def delete(self, params: dict) -> dict:
        container_id, ifname = self._identity(params)
        known = self.attachments.pop((container_id, ifname), None)
        if known is not None:
            self._detach(known)
        released = self.agent.lifecycle.ipam.release(owner(container_id, ifname)) if self.agent.lifecycle.ipam else None
        if released is not None:
            log.info("cni: DEL %s %s: released %s", container_id, ifname, released.ip)
        return {"released": released.ip if released else None}

    def _detach(self, known: CniAttachment) -> None:
        endpoint = known.endpoint
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(endpoint.netns.fd)
        self.agent.dataplane.remove(endpoint)
        with contextlib.suppress(OSError):
            os.close(endpoint.netns.fd)  # the TAP, and with it the interface in the namespace, goes
        if Path(known.netns).exists():
            in_namespace(known.netns, "ip", "link", "delete", known.ifname)

    async def gc(self, params: dict) -> dict:
        try:
            valid = {(str(c), str(i)) for c, i in (params or {}).get("valid") or []}
        except (TypeError, ValueError):
            raise RpcError("BadRequest", "valid is a list of [container_id, ifname]") from None
        removed = []
        for key in [k for k in self.attachments if k not in valid]:
            await self.delete({"container_id": key[0], "ifname": key[1]})
            removed.append(list(key))
        # Addresses of attachments made before a restart of this agent, whose TAPs are gone anyway.
        ipam = self.agent.lifecycle.ipam
        for allocation in ipam.allocations() if ipam else ():
            if allocation.uid.startswith(OWNER_PREFIX):
                container_id, _, ifname = allocation.uid[len(OWNER_PREFIX):].rpartition(":")
                if (container_id, ifname) not in valid and (container_id, ifname) not in self.attachments:
                    ipam.release(allocation.uid)
                    removed.append([container_id, ifname])
        if removed:
            log.info("cni: GC removed %s", ", ".join("/".join(r) for r in removed))
        return {"removed": removed}


def _search(namespace: str) -> tuple[str, ...]:
    return (f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN)
