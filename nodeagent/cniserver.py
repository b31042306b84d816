"""The CNI plugin's agent side, and the agent as a CNI runtime.

What `podnet-cni` asks of the agent (ADD, CHECK, DEL, GC, STATUS) are attachments of network namespaces to
this node's pod network. The agent stays the dataplane: ADD takes an address from the node's host-local
IPAM, makes a veth pair whose pod end is `CNI_IFNAME` in `CNI_NETNS` (nodeagent/pods/wire.py) and opens a
packet socket on its host end; the plugin process only relays and exits, the agent keeps the socket.

Who asked decides who owns the attachment:
- the agent itself, for the netns pods bound to it: it is their runtime, as containerd is a kubelet's. It
  executes its conflist, `<state_dir>/cni/net.d/10-podnet.conflist` (podnet-cni, then the reference
  `portmap` and `bandwidth` when installed, then whatever a user adds), with the pod's uid as container
  ID and its hostPorts and bandwidth annotations as capability arguments; the ADD that podnet-cni relays
  back is the pod's (address owner: the pod's uid), and the pod's containers start on it;
- any other runtime (a test, containerd, a person with `ip netns add`): its attachment is a pod of its
  own in the pipeline, address owner `cni:<containerID>:<ifname>`.

Each attachment is recorded in `<state_dir>/cni/attachments/` before ADD answers, and the chain's result
is cached under `results/` as libcni caches it. The veth pair outlives the agent, so a restarted agent
reopens each recorded attachment's socket and the namespace never notices; an attachment whose pair or
namespace is gone, or whose pod no longer exists, gets its DEL (the whole chain's, for a pod: portmap's
rules and bandwidth's qdiscs are the host's), and GC from a runtime removes every attachment of its own
the runtime no longer lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podnet.nodeagent.cni import IpamExhausted
from podnet.nodeagent.encryption import pod_mtu
from podnet.nodeagent.endpoints import KernelPod
from podnet.nodeagent.pods import wire
from podnet.nodeagent.pods.netns import CLUSTER_DNS, CLUSTER_DOMAIN, POD_INTERFACE, NetnsPod, PodNetwork
from podnet.nodeagent.pods.wire import Wire, in_namespace
from podnet.overlay.pipeline.model import PodPort, pod_mac, vtep_mac

from podnet.cni.capabilities import capability_args
from podnet.cni.conflist import CONFLIST_NAME, ConfList, podnet_conflist
from podnet.cni.runtime import CNI_PATH, Container, Runtime
from podnet.cni.spec import Attachment, CniError, Code, check_attachment
from podnet.netns.ip import NetnsError
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcError

if TYPE_CHECKING:
    from podnet.nodeagent.agent import NodeAgent

log = logging.getLogger(__name__)

OWNER_PREFIX = "cni:"
# The Kubernetes namespace an attachment is filed under when CNI_ARGS names no pod.
DEFAULT_NAMESPACE = "cni"
# The reference plugins the agent's conflist chains after podnet-cni when they are installed, with the
# capabilities through which a runtime gives them a pod's hostPorts and bandwidth annotations.
CHAINED = ({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
           {"type": "bandwidth", "capabilities": {"bandwidth": True}})
# How long a stopping agent gives its pods' chains to run DEL.
SHUTDOWN_GRACE = 5.0


def owner(container_id: str, ifname: str) -> str:
    return f"{OWNER_PREFIX}{container_id}:{ifname}"


def _ip_json(netns: str, *args: str) -> list[dict]:
    done = in_namespace(netns, "ip", "-json", *args)
    if done.returncode:
        raise NetnsError(f"ip -json {' '.join(args)} in {netns}: {done.stderr.strip()}")
    return json.loads(done.stdout or "[]")


@dataclass(slots=True)
class CniAttachment:
    """One interface podnet-cni made, as recorded on disk (all but the socket and the endpoint)."""

    container_id: str
    ifname: str
    netns: str
    owner: str  # the IPAM's owner of its address: a pod's uid, or cni:<containerID>:<ifname>
    namespace: str
    name: str
    attachment: Attachment
    fd: int = -1  # the packet socket on the wire's host end
    read_fd: int = -1  # where the pod's frames are read when a filter redirects them (wire.redirect_target)
    endpoint: KernelPod | None = None  # a runtime's attachment's place in the pipeline; a pod's is its own

    @property
    def wire(self) -> Wire:
        return Wire(self.attachment.host_ifname, self.attachment.host_mac)

    @property
    def fds(self) -> tuple[int, int]:
        """Where frames for the pod are written, and where the pod's frames are read."""
        return self.fd, self.read_fd if self.read_fd >= 0 else self.fd

    @property
    def of_pod(self) -> bool:
        return not self.owner.startswith(OWNER_PREFIX)

    def describe(self) -> dict:
        return {"container_id": self.container_id, "ifname": self.ifname, "netns": self.netns,
                "namespace": self.namespace, "name": self.name, "address": self.attachment.address}

    def to_data(self) -> dict:
        return {**self.describe(), "owner": self.owner, "attachment": self.attachment.to_data()}

    @classmethod
    def from_data(cls, data: dict) -> CniAttachment:
        return cls(data["container_id"], data["ifname"], data["netns"], data["owner"], data["namespace"], data["name"],
                   Attachment.from_data(data["attachment"]))


class CniServer:
    def __init__(self, agent: NodeAgent):
        self.agent = agent
        self.attachments: dict[tuple[str, str], CniAttachment] = {}
        directory = agent.config.state_path / "cni"
        self.conflist_path = directory / "net.d" / CONFLIST_NAME
        self.records = directory / "attachments"
        self.results = directory / "results"
        self.runtime_log = directory / "runtime.log"
        self.serving = asyncio.Event()  # set once the RPC socket answers: podnet-cni calls back into it
        self._expecting: dict[str, dict] = {}  # container ID -> the pod whose chain ADD is running
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # one chain at a time per container
        self._tasks: set[asyncio.Task] = set()
        self._write_conflist()

    def _write_conflist(self) -> None:
        """The node's network configuration list, as /etc/cni/net.d holds one for containerd: podnet-cni
        with this agent's socket, then the reference plugins found in CNI_PATH. Written once: what a user
        changes in it stays across restarts."""
        if self.conflist_path.exists():
            return
        self.conflist_path.parent.mkdir(parents=True, exist_ok=True)
        installed = tuple(plugin for plugin in CHAINED
                          if any(Path(d, plugin["type"]).is_file() for d in CNI_PATH))
        tmp = self.conflist_path.with_suffix(".tmp")
        tmp.write_text(podnet_conflist(str(self.agent.config.socket_path), installed).to_json())
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

    # ---- the agent as a runtime: its conflist, executed for the netns pods bound to it ---------------

    def runtime(self) -> Runtime:
        """The conflist, read afresh (a runtime watches net.d), ready to execute."""
        return Runtime(ConfList.parse(self.conflist_path.read_bytes()), CNI_PATH, self.results, self.runtime_log)

    @staticmethod
    def _container(uid: str, netns: str, pod: dict) -> Container:
        meta = pod.get("metadata") or {}
        return Container(uid, netns, POD_INTERFACE, (("K8S_POD_NAMESPACE", str(meta.get("namespace") or "default")),
                                                     ("K8S_POD_NAME", str(meta.get("name") or "")),
                                                     ("K8S_POD_INFRA_CONTAINER_ID", uid), ("K8S_POD_UID", uid)))

    async def attach_pod(self, pod: dict, uid: str, netns: str) -> tuple[int, int]:
        """The chain's ADD for a netns pod whose namespace is at `netns`; the packet sockets its frames
        are written to and read from. A pod whose interface outlived a restart of the agent keeps it,
        without a new ADD; one whose interface was lost gets a new one, with its address (the IPAM gives
        a pod made again under its name the address it held last, which the DEL of the lost one freed)."""
        await self.serving.wait()
        async with self._locks[uid]:
            known = self.attachments.get((uid, POD_INTERFACE))
            if known is not None:
                if known.netns == netns and known.fd >= 0 and known.wire.exists():
                    return known.fds
                await self._delete_chain(uid, known.netns, pod)  # its interface went with its namespace
            runtime = self.runtime()
            self._expecting[uid] = pod
            try:
                await runtime.add(self._container(uid, netns, pod), capability_args(pod))
            finally:
                self._expecting.pop(uid, None)
            attached = self.attachments.get((uid, POD_INTERFACE))
            if attached is None:  # a conflist whose chain does not run podnet-cni
                raise CniError(Code.INVALID_CONFIG, f"no plugin of {self.conflist_path} attached {POD_INTERFACE}",
                               "the list must run podnet-cni")
            self._follow_redirect(attached)
            return attached.fds

    async def detach_pod(self, uid: str, netns: str, pod: dict) -> None:
        """The chain's DEL for a netns pod (backwards: the reference plugins, then podnet-cni); what podnet's
        part holds is let go even when a plugin fails."""
        await self.serving.wait()
        async with self._locks[uid]:
            await self._delete_chain(uid, netns, pod)
        self._locks.pop(uid, None)

    async def _detach_stale(self, known: CniAttachment) -> None:
        """The chain's DEL of an attachment a previous run made, unless it was undone or made again while
        this waited: a pod adopted meanwhile whose interface was lost runs that DEL itself, then an ADD,
        in attach_pod, and this DEL must not undo the new one."""
        await self.serving.wait()
        async with self._locks[known.container_id]:
            if self.attachments.get((known.container_id, known.ifname)) is known:
                await self._delete_chain(known.container_id, known.netns, {})

    async def _delete_chain(self, uid: str, netns: str, pod: dict) -> None:
        try:
            await self.runtime().delete(self._container(uid, netns, pod))  # with what ADD was given
        except (CniError, OSError) as exc:
            log.warning("cni: DEL of pod %s failed: %s", uid, exc)
        known = self.attachments.get((uid, POD_INTERFACE))
        if known is not None:
            self._remove(known)

    def _later(self, call) -> None:
        task = asyncio.ensure_future(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def pod_result(self, params: Any) -> dict | None:
        """A netns pod's CNI result: what its chain's ADD returned."""
        params = params if isinstance(params, dict) else {}
        pod = self.agent.lifecycle.pods.get(f"{params.get('namespace') or 'default'}/{params.get('pod')}")
        if not isinstance(pod, KernelPod):
            return None
        known = self.attachments.get((pod.uid, POD_INTERFACE))
        if known is None:
            return None
        try:
            runtime = self.runtime()
        except (OSError, CniError):
            return None
        return runtime.cached_result(self._container(pod.uid, known.netns, {}))

    # ---- restarts ------------------------------------------------------------------------------------

    def recover(self) -> None:
        """After a restart, once the pipeline exists: every recorded attachment whose pair and namespace
        are still there gets a new socket (a runtime's is back in the pipeline); the others are undone."""
        for path in sorted(self.records.glob("*.json")) if self.records.exists() else ():
            try:
                known = CniAttachment.from_data(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("cni: %s is unreadable, dropped: %s", path, exc)
                path.unlink(missing_ok=True)
                continue
            self.attachments[(known.container_id, known.ifname)] = known
            if known.wire.exists() and Path(known.netns).exists():
                try:
                    self._open(known)
                    self._follow_redirect(known)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    log.warning("cni: reopening %s/%s: %s", known.container_id, known.ifname, exc)
                else:
                    log.info("cni: recovered %s/%s in %s: %s", known.container_id, known.ifname, known.netns,
                             known.attachment.address)
                    continue
            log.info("cni: %s/%s lost its interface while the agent was away: DEL", known.container_id, known.ifname)
            if known.of_pod:
                self._later(self._detach_stale(known))
            else:
                self._remove(known)

    def collect_garbage(self, live_uids: set[str]) -> None:
        """After the first sync: the chains of pods deleted while the agent was away run DEL."""
        for known in list(self.attachments.values()):
            if known.of_pod and known.owner not in live_uids:
                self.detach_unheld(known.owner)

    def detach_unheld(self, uid: str) -> bool:
        """The chain's DEL, in the background, of the attachment a previous run made for pod `uid`, which
        is gone or terminating and which the pod lifecycle does not hold; False when there is none."""
        known = self.attachments.get((uid, POD_INTERFACE))
        if known is None or not known.of_pod:
            return False
        log.info("cni: pod %s is gone: DEL", uid)
        self._later(self._detach_stale(known))
        return True

    def owners(self) -> set[str]:
        """The IPAM owners of every attachment held, which the IPAM's garbage collection must keep."""
        return {known.owner for known in self.attachments.values()}

    async def close(self) -> None:
        """Agent shutdown, as for its pods' namespaces: every pod's chain runs DEL (portmap's rules and
        bandwidth's qdiscs would otherwise outlive it), within SHUTDOWN_GRACE."""
        for task in self._tasks:
            task.cancel()
        deletions = [self._delete_chain(known.container_id, known.netns, {}) for known in list(self.attachments.values())
                     if known.of_pod]
        if deletions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*deletions), SHUTDOWN_GRACE)
        for known in list(self.attachments.values()):
            self._close_socket(known)

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
        pod = self._expecting.get(container_id)
        namespace = str(params.get("namespace") or DEFAULT_NAMESPACE)
        name = str(params.get("name") or container_id[:12])
        address_owner = container_id if pod is not None else owner(container_id, ifname)
        try:
            allocation = ipam.add(address_owner, namespace, name)
        except IpamExhausted as exc:
            raise RpcError("Exhausted", str(exc)) from None
        mac = pod_mac(allocation.ip)
        mtu = pod_mtu(self.agent.config)
        try:
            pair = await asyncio.to_thread(wire.plumb, netns, ifname, allocation.ip, ipam.network.prefixlen,
                                           ipam.gateway, mac, mtu, self.agent.config.tap_offloads)
        except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
            ipam.release(allocation.uid)
            raise RpcError("SetupFailed", str(exc)) from None
        attachment = Attachment(ifname, mac, netns, f"{allocation.ip}/{ipam.network.prefixlen}", ipam.gateway,
                                mtu, (CLUSTER_DNS,), _search(namespace), ("ndots:5",), pair.host_ifname,
                                pair.host_mac, (f"{wire.HOST_LINK_ADDRESS}/32",))
        known = CniAttachment(container_id, ifname, netns, address_owner, namespace, name, attachment)
        self.records.mkdir(parents=True, exist_ok=True)
        tmp = self._record(known).with_suffix(".tmp")
        tmp.write_text(json.dumps(known.to_data()))
        tmp.replace(self._record(known))
        self.attachments[(container_id, ifname)] = known
        try:
            self._open(known)
        except OSError as exc:
            self._remove(known)
            raise RpcError("SetupFailed", f"opening {pair.host_ifname}: {exc}") from None
        log.info("cni: ADD %s %s in %s: %s (host end %s)", container_id, ifname, netns, attachment.address,
                 pair.host_ifname)
        return attachment.to_data()

    def _record(self, known: CniAttachment) -> Path:
        return self.records / f"{known.container_id}-{known.ifname}.json"

    def _open(self, known: CniAttachment) -> None:
        """Opens the socket on the wire's host end; a runtime's attachment joins the pipeline as a pod."""
        known.fd = wire.open_socket(known.wire, self.agent.config.tap_offloads)
        if known.of_pod:
            return  # the pod's containers and its place in the pipeline are the pod lifecycle's
        address, prefix_len = known.attachment.address.split("/")
        network = PodNetwork(Path(known.netns).name, known.namespace, address, int(prefix_len),
                             known.attachment.gateway, known.attachment.mac, known.attachment.mtu,
                             offloads=self.agent.config.tap_offloads)
        state = self.records / f"{known.container_id}-{known.ifname}.pod"
        gateway_mac = bytes.fromhex(vtep_mac(self.agent.config.address).replace(":", ""))
        netns_pod = NetnsPod(network, known.owner, known.fd, gateway_mac, state.with_suffix(".state"), state)
        known.endpoint = KernelPod(known.owner, PodPort(known.namespace, known.name, address, network.mac), netns_pod)
        dataplane = self.agent.dataplane
        dataplane.add(known.endpoint)
        self._read(known)

    def _read(self, known: CniAttachment) -> None:
        netns_pod, dataplane = known.endpoint.netns, self.agent.dataplane
        asyncio.get_running_loop().add_reader(netns_pod.read_fd, lambda: dataplane.from_netns_pod(netns_pod, netns_pod.read_frames()))

    def _follow_redirect(self, known: CniAttachment) -> None:
        """When the chain (bandwidth's egress limit) redirects the pod's frames to another device, they are
        read there, shaped, and no longer on the host end."""
        target = wire.redirect_target(known.wire)
        if target is None or known.read_fd >= 0:
            return
        known.read_fd = wire.open_reader(known.wire, target, self.agent.config.tap_offloads)
        wire.write_only(known.fd)
        log.info("cni: %s/%s: the pod's frames are read on %s", known.container_id, known.ifname, target)
        if known.endpoint is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(known.fd)
            known.endpoint.netns.read_fd = known.read_fd
            self._read(known)

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
        if not known.wire.exists():
            problems.append(f"the host end {known.wire.host_ifname} of {ifname} is gone")
        return {"problems": problems}

    async def delete(self, params: dict) -> dict:
        container_id, ifname = self._identity(params)
        known = self.attachments.get((container_id, ifname))
        if known is not None:
            self._remove(known)
            log.info("cni: DEL %s %s: released %s", container_id, ifname, known.attachment.address)
            return {"released": known.attachment.address}
        ipam = self.agent.lifecycle.ipam
        released = ipam.release(owner(container_id, ifname)) if ipam is not None else None
        return {"released": released.ip if released else None}

    def _remove(self, known: CniAttachment) -> None:
        """Undoes an attachment: out of the pipeline, its pair deleted, its address free, its record gone."""
        self.attachments.pop((known.container_id, known.ifname), None)
        if known.endpoint is not None:
            self.agent.dataplane.remove(known.endpoint)
        self._close_socket(known)
        wire.unplumb(known.wire)
        if self.agent.lifecycle.ipam is not None:
            self.agent.lifecycle.ipam.release(known.owner)
        self._record(known).unlink(missing_ok=True)

    @staticmethod
    def _close_socket(known: CniAttachment) -> None:
        for fd in {known.fd, known.read_fd} - {-1}:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        known.fd = known.read_fd = -1

    async def gc(self, params: dict) -> dict:
        """A runtime's GC: its attachments that `valid` does not list go. The agent's own pods are not a
        runtime's to collect: their chains run DEL when their pods go."""
        try:
            valid = {(str(c), str(i)) for c, i in (params or {}).get("valid") or []}
        except (TypeError, ValueError):
            raise RpcError("BadRequest", "valid is a list of [container_id, ifname]") from None
        removed = []
        for key, known in list(self.attachments.items()):
            if key not in valid and not known.of_pod:
                self._remove(known)
                removed.append(list(key))
        # Addresses whose attachment's record was lost (a crash between the two).
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
