"""Network-namespace pods: a real kernel network stack per pod, whose wire is the node agent.

Each pod is a named network namespace (`podnet-<node>-<namespace>.<pod>`, shortened with a hash when
long). The agent makes the namespace, then its network is attached by the node's CNI chain, as a
container runtime has it attached (nodeagent/cniserver.py): podnet-cni gives it eth0, one end of a veth
pair (nodeagent/pods/wire.py) with the pod's IP on the node's /24, the pod's MAC, MTU 1450 and a default
route via the node's gateway (.1), which the agent answers by proxy ARP. The agent reads and writes the
other end through a packet socket: every frame the pod's kernel sends enters the forwarding pipeline where
a virtual pod's packets do (service DNAT, policy, VXLAN), and every packet for the pod is written back.
`ip netns exec` bind-mounts `/etc/netns/<name>/resolv.conf`, so programs in the pod ask the cluster DNS.

Containers that declare a `command` run in the namespace, each in its own session, and are restarted
with backoff when they exit, as the kubelet does. Each program is started by `launch.py` in a sandbox
that `sandbox.py` plans from the pod spec (its own mount, UTS and IPC namespaces, the securityContext's
user, capabilities, no_new_privs, seccomp), with the pod's /etc/hosts, resolv.conf and volumes
(`nodeagent/volumes.py`) bound in; the volumes are made once per pod before its first container starts. What they write on stdout and stderr goes
through pipes to a log shim of their own (`kubelet/logshim.py`), which keeps it per container instance.
Their PIDs (with the kernel start time, so a reused PID is never mistaken for them) and restart counts
are kept in the agent's state directory: an agent that was SIGKILLed finds its namespaces and processes
again and adopts them, on the same veth pair, which outlived the old agent. Whatever of this node (the owner prefix, recorded in the agent's state directory) no current
pod claims is removed after the agent's first sync.

Probes from a netns pod (`podnet probe`, `podnet trace`, the policy matrix) are made by its own kernel:
the agent creates the socket inside the namespace (entering it only around `socket()`) and drives it
from its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import errno
import json
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from podnet.nodeagent.kubelet.logshim import start_log_shim
from podnet.nodeagent.pods import launch, sandbox
from podnet.overlay.wire.segment import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    PLAIN_VNET_HDR,
    TCP_CHECKSUM_AT,
    VNET_HDR,
    VNET_HDR_LEN,
    complete_checksum,
    partial_checksum_field,
    super_vnet_header,
    tcp_checksum_ok,
    tcp_segments,
)

from podnet.api.clusterdns import CLUSTER_DNS, CLUSTER_DOMAIN, resolv_conf
from podnet.backends import POD_MODES
from podnet.client import podnet_home
from podnet.codec import DecodeError
from podnet.netns.ip import ETC_NETNS, delete_namespace, ip, list_namespaces
from podnet.netns.names import NETNS_DIR, owner_prefix
from podnet.pids import start_time

log = logging.getLogger(__name__)

POD_MODE_ANNOTATION = "podnet.io/pod-mode"
POD_INTERFACE = "eth0"
_READ_BATCH = 64
_FRAME_MAX = 65536 + 64  # a 64 KB super-packet behind its Ethernet and virtio_net headers
# Restart backoff of a container that exited (the kubelet starts at 10 s; a lab wants quicker answers).
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# A container that ran this long before exiting starts its backoff afresh.
BACKOFF_RESET_AFTER = 10.0
STOP_GRACE = 2.0
VOLUME_RETRY = 2.0


def pod_mode(pod: dict, default: str) -> str:
    """The pod's mode: its `podnet.io/pod-mode` annotation, else the agent's default."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    mode = annotations.get(POD_MODE_ANNOTATION) or default
    return mode if mode in POD_MODES else default


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """What the pod's eth0 is given."""

    netns: str
    namespace: str  # the pod's Kubernetes namespace, for the DNS search path
    ip: str
    prefix_len: int
    gateway: str
    mac: str
    mtu: int = 1450
    offloads: bool = False  # checksum and segmentation offload on the wire (pods/wire.py)


def write_resolv_conf(net: PodNetwork, dns: str = CLUSTER_DNS, domain: str = CLUSTER_DOMAIN) -> None:
    directory = ETC_NETNS / net.netns
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(resolv_conf(net.namespace, dns, domain))


def pod_hostname(pod: dict) -> str:
    """The pod's hostname: `spec.hostname`, else its name (at most 63 characters, as the kubelet cuts it)."""
    return str((pod.get("spec") or {}).get("hostname") or (pod.get("metadata") or {}).get("name") or "")[:63].rstrip("-.")


def hosts_file(pod: dict, address: str, domain: str = CLUSTER_DOMAIN) -> str:
    """The /etc/hosts the kubelet writes for a pod: the loopback names, then the pod's address and names."""
    hostname = pod_hostname(pod)
    subdomain = (pod.get("spec") or {}).get("subdomain")
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    names = f"{hostname}.{subdomain}.{namespace}.svc.{domain}\t{hostname}" if subdomain else hostname
    return ("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
            f"{address}\t{names}\n")


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in_namespace(netns: str, kind: int) -> socket.socket:
    """A non-blocking IPv4 socket that lives in network namespace `netns`. The calling thread enters the
    namespace only for the `socket()` call and returns at once; the socket keeps its namespace."""
    with open(NETNS_DIR / netns) as target, open("/proc/thread-self/ns/net") as home:
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"entering network namespace {netns}")
        try:
            sock = socket.socket(socket.AF_INET, kind)
        finally:
            if _libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "returning to the agent's network namespace")
    sock.setblocking(False)
    return sock


async def probe(net: PodNetwork, dst: str, port: int, protocol: str, timeout: float,
                before_sending: Callable[[int], None] | None = None) -> dict:
    """Can the pod reach `dst:port`? TCP: a connection completes; UDP: "hostname" gets an answer, as a
    virtual pod's probe asks. Runs in the pod's own kernel, from its address; `before_sending(port)` is
    told the source port before the first packet leaves (so it can be traced)."""
    loop = asyncio.get_running_loop()
    udp = protocol.upper() == "UDP"
    sock = socket_in_namespace(net.netns, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        sock.bind((net.ip, 0))
        if before_sending is not None:
            before_sending(sock.getsockname()[1])
        async with asyncio.timeout(timeout):
            if udp:
                sock.connect((dst, port))
                await loop.sock_sendall(sock, b"hostname")
                await loop.sock_recv(sock, 2048)
                return {"ok": True, "reason": "answered"}
            await loop.sock_connect(sock, (dst, port))
            return {"ok": True, "reason": "connected"}
    except TimeoutError:
        return {"ok": False, "reason": f"timed out after {timeout:g}s"}
    except ConnectionRefusedError:
        return {"ok": False, "reason": "connection refused"}
    except OSError as exc:
        return {"ok": False, "reason": exc.strerror or str(exc)}
    finally:
        sock.close()


class ContainerConfigError(Exception):
    """What a container needs to start is missing (a ConfigMap, a Secret, a key): CreateContainerConfigError."""


Environment = Callable[[dict, dict], "tuple[tuple[str, str], ...]"]
# Makes a pod's volumes under a directory; their paths by name (nodeagent/volumes.py PodVolumes.prepare).
Volumes = Callable[[dict, Path], Awaitable[dict[str, Path]]]
# The PATH a container runtime gives a container whose image sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Volumes the kubelet mounts read-only whatever the volumeMount says.
_READ_ONLY_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    restart_policy: str = "Always"  # the pod's: Never and OnFailure let a container run to completion
    config_error: str | None = None  # why it cannot start yet; it waits for what it lacks
    security: sandbox.Security | None = None
    mounts: tuple[sandbox.VolumeMount, ...] = ()
    working_dir: str = ""
    waiting_reason: str = "CreateContainerConfigError"  # while config_error holds

    def restarts_after(self, code: int | None) -> bool:
        return self.restart_policy == "Always" or self.restart_policy == "OnFailure" and code != 0

    @staticmethod
    def literal_env(container: dict) -> tuple[tuple[str, str], ...]:
        """The container's `env` entries that are values, not references."""
        return tuple((str(e["name"]), str(e.get("value") or ""))
                     for e in container.get("env") or [] if e.get("name") and "valueFrom" not in e)

    @classmethod
    def from_pod(cls, pod: dict, environment: Environment | None = None) -> list[ContainerSpec]:
        """The containers that declare a `command`; `args` follow it, as they follow an entrypoint.
        `environment(pod, container)` gives a container's variables or raises ContainerConfigError;
        without it, only the literal `env` values."""
        specs = []
        for container in (pod.get("spec") or {}).get("containers") or []:
            command = [str(c) for c in container.get("command") or []]
            if not command:
                continue
            error = None
            try:
                env = environment(pod, container) if environment is not None else cls.literal_env(container)
            except ContainerConfigError as exc:
                env, error = (), str(exc)
            security = sandbox.security(pod, container)
            argv = (*command, *[str(a) for a in container.get("args") or []])
            specs.append(cls(container["name"], argv, env, (pod.get("spec") or {}).get("restartPolicy") or "Always",
                             error or security.error, security, sandbox.volume_mounts(container),
                             str(container.get("workingDir") or "")))
        return specs


def launcher_command() -> list[str]:
    """The launcher, run by this interpreter alone (-I -S: no site, no environment): it needs only the
    standard library, and the agent's own directories may be hidden from it before it is done."""
    return [sys.executable, "-I", "-S", launch.__file__]


def _rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Container:
    """One container's process and its restart history; the adapter that runs it is `_supervise`."""

    spec: ContainerSpec
    pid: int | None = None
    pid_start: str | None = None
    restarts: int = 0
    started_at: float = 0.0  # monotonic, for the backoff
    started: str | None = None  # RFC 3339, for the status
    backoff: float | None = None  # seconds until the next start, while waiting for it
    last_terminated: dict | None = None
    finished: bool = False  # ran to completion under its restart policy: never started again
    task: asyncio.Task | None = None

    def as_data(self) -> dict:
        return {"pid": self.pid, "pid_start": self.pid_start, "restarts": self.restarts, "started": self.started,
                "last_terminated": self.last_terminated, "finished": self.finished}

    def status(self) -> dict:
        """The kubelet's view of it: `state`, `lastState`, `ready`, `restartCount`."""
        if self.spec.config_error is not None:
            return {"ready": False, "started": False, "restartCount": self.restarts, "lastState": {},
                    "state": {"waiting": {"reason": self.spec.waiting_reason, "message": self.spec.config_error}}}
        if self.finished:
            return {"ready": False, "started": False, "restartCount": self.restarts,
                    "state": {"terminated": self.last_terminated}, "lastState": {}}
        if self.backoff is not None:
            state = {"waiting": {"reason": "CrashLoopBackOff",
                                 "message": f"back-off {self.backoff:g}s restarting failed container={self.spec.name}"}}
        else:
            state = {"running": {"startedAt": self.started}}
        return {
            "ready": self.backoff is None,
            "started": self.backoff is None,
            "restartCount": self.restarts,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }


class NetnsPod:
    """One pod's namespace, wire and processes."""

    def __init__(self, net: PodNetwork, uid: str, fd: int, gateway_mac: bytes, state_path: Path, log_dir: Path,
                 obj: dict | None = None, read_fd: int | None = None):
        self.net = net
        self.uid = uid
        self.fd = fd  # frames for the pod are written here
        self.read_fd = fd if read_fd is None else read_fd  # and the pod's frames read here
        self.state_path = state_path
        self.log_dir = log_dir
        self.obj = obj or {}  # the Pod, as it was when the namespace was made
        self.sandbox_dir = state_path.with_suffix(".pod")  # volumes/ and the launcher's scratch/
        self.volumes: asyncio.Future[dict[str, Path]] | None = None  # made once, before any container starts
        self.containers: dict[str, Container] = {}
        # Packets for the pod leave the "node" with the gateway's MAC as source, towards the pod's MAC.
        self._eth_ipv4 = bytes.fromhex(net.mac.replace(":", "")) + gateway_mac + b"\x08\x00"
        self.offloads = net.offloads
        # super-frames: TCP super-packets, counted among the frames as well
        self.counters = {"rx.frames": 0, "tx.frames": 0, "tx.dropped": 0, "rx.super-frames": 0, "tx.super-frames": 0}

    # ---- the wire ---------------------------------------------------------------------------------

    def deliver(self, packet: bytes) -> None:
        """An IPv4 packet for the pod, written to its eth0 as an Ethernet frame."""
        self.deliver_frame(self._eth_ipv4 + packet)

    def deliver_frame(self, frame: bytes) -> None:
        try:
            os.write(self.fd, PLAIN_VNET_HDR + frame if self.offloads else frame)
            self.counters["tx.frames"] += 1
        except OSError:  # the device's queue is full or it is going away: dropped, as a wire would
            self.counters["tx.dropped"] += 1

    def deliver_super(self, packet: bytes, mss: int) -> None:
        """A super-packet for the pod (TCP segments of `mss` payload bytes as one IPv4 packet, its checksum
        whole), written to a wire with offloads as one frame whose checksum the kernel finishes, for the
        pod's kernel to take as the segments it stands for; cut into them for a wire without. The kernel
        takes such a frame's data as sound, so its checksum is verified here first: one joined from a
        segment that came damaged is dropped, as the pod's kernel would have dropped that segment."""
        if not self.offloads:
            for segment in tcp_segments(packet, mss):
                self.deliver(segment)
            return
        if not tcp_checksum_ok(packet):
            self.counters["tx.dropped-bad-checksum"] = self.counters.get("tx.dropped-bad-checksum", 0) + 1
            return
        at = (packet[0] & 0x0F) * 4 + TCP_CHECKSUM_AT
        view = memoryview(packet)
        try:
            os.writev(self.fd, (super_vnet_header(packet, mss) + self._eth_ipv4, view[:at],
                                partial_checksum_field(packet), view[at + 2 :]))
            self.counters["tx.frames"] += 1
            self.counters["tx.super-frames"] += 1
        except OSError:
            self.counters["tx.dropped"] += 1

    def read_frames(self) -> list[tuple[bytes, int]]:
        """What the pod's kernel sent since the last call, up to one batch: (frame, mss), where mss is 0
        for a frame as it goes on a wire and the segment size of a TCP super-packet (offloads on). A
        frame whose checksum the kernel left partial gets it completed here, as a NIC would; a super-packet
        keeps its partial one, for the pipeline, which makes each segment's."""
        frames: list[tuple[bytes, int]] = []
        append = frames.append
        offloads = self.offloads
        for _ in range(_READ_BATCH):
            try:
                data = os.read(self.read_fd, _FRAME_MAX)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    log.warning("pod %s: reading its wire: %s", self.net.netns, exc)
                break
            if not offloads:
                append((data, 0))
                continue
            try:
                flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(data)
                if gso_type == GSO_TCPV4:  # its checksum partial: the pipeline makes the segments' own
                    append((data[VNET_HDR_LEN:], gso_size))
                    self.counters["rx.super-frames"] += 1
                elif gso_type != GSO_NONE:
                    self.counters["rx.dropped-gso-type"] = self.counters.get("rx.dropped-gso-type", 0) + 1
                elif flags & F_NEEDS_CSUM:
                    frame = bytearray(data[VNET_HDR_LEN:])
                    complete_checksum(frame, csum_start, csum_offset)
                    append((bytes(frame), 0))
                else:
                    append((data[VNET_HDR_LEN:], 0))
            except (struct.error, DecodeError):
                self.counters["rx.dropped-bad-vnet-header"] = self.counters.get("rx.dropped-bad-vnet-header", 0) + 1
        self.counters["rx.frames"] += len(frames)
        return frames

    # ---- processes ------------------------------------------------------------------------------

    def container_status(self, container: str) -> dict:
        """What the pod's status says of `container`; nothing for one without a command."""
        entry = self.containers.get(container)
        return entry.status() if entry else {}

    def phase(self) -> str | None:
        """Succeeded or Failed once every container has run to completion, else None."""
        if not self.containers or not all(c.finished for c in self.containers.values()):
            return None
        codes = [(c.last_terminated or {}).get("exitCode") for c in self.containers.values()]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"

    def save(self) -> None:
        data = {
            "uid": self.uid,
            "ip": self.net.ip,
            "containers": {name: c.as_data() for name, c in self.containers.items()},
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.state_path)

    def signal_processes(self, sig: int) -> None:
        """Stops restarting the containers and sends `sig` to each one's process group."""
        for container in self.containers.values():
            if container.task is not None:
                container.task.cancel()
            if container.pid and start_time(container.pid) == container.pid_start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(container.pid, sig)

    def running(self) -> bool:
        """Whether any container's process is still alive (reaping those that ended)."""
        self._reap()
        return any(c.pid and start_time(c.pid) == c.pid_start for c in self.containers.values())

    def stop_processes(self) -> None:
        self.signal_processes(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and self.running():
            time.sleep(0.02)
        self._reap()

    def _reap(self) -> None:
        for container in self.containers.values():
            if container.pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(container.pid, os.WNOHANG)


def _kill_recorded(state_path: Path) -> None:
    """SIGKILLs the process group of every container a pod's state records that still runs (same PID and
    start time): a pod's processes outlive its namespace's name (`ip netns delete` only unmounts it), and
    once the name is gone nothing else finds them."""
    try:
        containers = json.loads(state_path.read_text()).get("containers") or {}
    except (OSError, ValueError, AttributeError):
        return
    for entry in containers.values() if isinstance(containers, dict) else ():
        pid = entry.get("pid") if isinstance(entry, dict) else None
        if isinstance(pid, int) and pid > 0 and start_time(pid) == entry.get("pid_start"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


async def _wait_exit(pid: int) -> int | None:
    """Waits for `pid` to end, whether or not it is our child (a pod process adopted after a restart);
    returns its exit code when it was our child."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    ended = loop.create_future()
    loop.add_reader(pidfd, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


class NetnsPods:
    """The netns pods of one node agent: created, adopted after a restart, deleted, garbage-collected.

    `on_frames(pod, frames)` receives what a pod's kernel sends; `on_change(key)` is told when a pod's
    container status changed (a restart)."""

    def __init__(
        self,
        node: str,
        state_dir: Path,
        on_frames: Callable[[NetnsPod, list[bytes]], None],
        on_change: Callable[[str], None],
        *,
        dns: str = CLUSTER_DNS,
        domain: str = CLUSTER_DOMAIN,
    ):
        self.node = node
        self.directory = state_dir / "netns"
        self.on_frames = on_frames
        self.on_change = on_change
        self.dns = dns
        self.domain = domain
        # Set by the agent once the ConfigMap and Secret caches exist; without it pods have no volumes.
        self.make_volumes: Volumes | None = None
        # What no pod may see: the agent's state (tokens, keys, other pods' volumes) and podnet's home.
        self.hidden = tuple(dict.fromkeys((str(state_dir), str(podnet_home()))))
        self.pods: dict[str, NetnsPod] = {}  # netns name -> pod
        self._shims: set[asyncio.Task] = set()  # waits that reap the containers' log shims

    def prepare(self, uid: str, net: PodNetwork, obj: dict | None = None) -> dict | None:
        """The pod's namespace, before its network is attached: the one a previous run of this agent left
        for the same pod (same uid and address) is adopted, with its processes, and its recorded state is
        returned; any other is made anew (None)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state_path = self.directory / f"{net.netns}.json"
        previous = self._previous(state_path, uid, net.ip)
        if previous is None:
            _kill_recorded(state_path)  # a namespace lost while the agent was away left them running
            if (NETNS_DIR / net.netns).exists():
                delete_namespace(net.netns)  # another pod's, or one whose state was lost: start clean
            # Recorded before the namespace exists, so that a crash from here on leaves nothing that
            # garbage collection cannot find.
            state_path.write_text(json.dumps({"uid": uid, "ip": net.ip, "containers": {}}))
            ip("netns", "add", net.netns)
        write_resolv_conf(net, self.dns, self.domain)
        (ETC_NETNS / net.netns / "hosts").write_text(hosts_file(obj or {}, net.ip, self.domain))
        return previous

    def create(self, key: str, uid: str, net: PodNetwork, gateway_mac: str, containers: list[ContainerSpec],
               fds: tuple[int, int], previous: dict | None, obj: dict | None = None) -> NetnsPod:
        """The pod on its prepared namespace, whose interface's frames go to it through `fds[0]` and come
        from it through `fds[1]` (which the pod's CNI attachment owns): its containers are started, or
        adopted from `previous`."""
        state_path = self.directory / f"{net.netns}.json"
        log_dir = self.directory / net.netns
        log_dir.mkdir(exist_ok=True)
        pod = NetnsPod(net, uid, fds[0], bytes.fromhex(gateway_mac.replace(":", "")), state_path, log_dir, obj, fds[1])
        pod.volumes = asyncio.ensure_future(self._make_volumes(pod))
        for spec in containers:
            container = Container(spec)
            before = (previous or {}).get("containers", {}).get(spec.name) or {}
            container.restarts = int(before.get("restarts") or 0)
            container.started, container.last_terminated = before.get("started"), before.get("last_terminated")
            container.finished = bool(before.get("finished"))
            if before.get("pid") and start_time(before["pid"]) == before.get("pid_start"):
                container.pid, container.pid_start = before["pid"], before["pid_start"]
                container.started_at = time.monotonic()
            pod.containers[spec.name] = container
        pod.save()
        self.pods[net.netns] = pod
        asyncio.get_running_loop().add_reader(pod.read_fd, self._readable, pod)
        for container in pod.containers.values():
            container.task = asyncio.ensure_future(self._supervise(key, pod, container))
        log.info("pod %s: namespace %s, eth0 %s/%d via %s%s", key, net.netns, net.ip, net.prefix_len,
                 net.gateway, " (adopted)" if previous else "")
        return pod

    def start_waiting(self, key: str, pod: NetnsPod, specs: list[ContainerSpec]) -> None:
        """Starts the containers that were waiting for their configuration and now have it (`specs`: the
        pod's containers worked out again)."""
        for spec in specs:
            container = pod.containers.get(spec.name)
            if container is None or container.spec.config_error is None or spec.config_error == container.spec.config_error:
                continue
            if container.task is not None and not container.task.done():
                continue  # waiting for its volumes, which it tries again by itself
            container.spec = spec
            if spec.config_error is None:
                container.task = asyncio.ensure_future(self._supervise(key, pod, container))
            self.on_change(key)

    @staticmethod
    def _previous(state_path: Path, uid: str, address: str) -> dict | None:
        try:
            data = json.loads(state_path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("uid") != uid or data.get("ip") != address or not (NETNS_DIR / state_path.stem).exists():
            return None
        return data

    async def _make_volumes(self, pod: NetnsPod) -> dict[str, Path]:
        if self.make_volumes is None or not pod.obj:
            return {}
        return await self.make_volumes(pod.obj, pod.sandbox_dir / "volumes")

    async def _volumes_ready(self, key: str, pod: NetnsPod, container: Container) -> None:
        """Waits for the pod's volumes (made once for all its containers). While they cannot be made (a
        ConfigMap, a Secret, a token missing), the container waits in ContainerCreating with the reason and
        they are tried again every VOLUME_RETRY seconds, as the kubelet's volume manager does."""
        ready = container.spec
        while True:
            if pod.volumes is None or pod.volumes.done() and pod.volumes.exception() is not None:
                pod.volumes = asyncio.ensure_future(self._make_volumes(pod))
            try:
                await asyncio.shield(pod.volumes)
            except (ContainerConfigError, OSError) as exc:
                message = str(exc) if isinstance(exc, ContainerConfigError) else f"MountVolume.SetUp failed: {exc}"
                if container.spec.config_error != message:
                    container.spec = replace(ready, config_error=message, waiting_reason="ContainerCreating")
                    self.on_change(key)
                await asyncio.sleep(VOLUME_RETRY)
                continue
            if container.spec is not ready:
                container.spec = ready
                self.on_change(key)
            return

    def launch_plan(self, pod: NetnsPod, security: sandbox.Security, mounts: tuple[sandbox.VolumeMount, ...],
                    argv: tuple[str, ...], env: dict[str, str], cwd: str = "", join_pid: int | None = None) -> sandbox.LaunchPlan:
        """The plan of one program in the pod: a container's, or an exec's (`join_pid`: the container's
        process, whose namespaces it enters)."""
        volumes = pod.volumes.result() if pod.volumes is not None and pod.volumes.done() and not pod.volumes.exception() else {}
        etc = ETC_NETNS / pod.net.netns
        binds = [sandbox.Bind(str(etc / "hosts"), "/etc/hosts", True, False),
                 sandbox.Bind(str(etc / "resolv.conf"), "/etc/resolv.conf", True, False)]
        declared = {v.get("name"): v for v in (pod.obj.get("spec") or {}).get("volumes") or []}
        for mount in mounts:
            source = volumes.get(mount.volume)
            if source is None:
                continue
            source = source / mount.sub_path if mount.sub_path else source
            read_only = mount.read_only or any(kind in declared.get(mount.volume, {}) for kind in _READ_ONLY_VOLUMES)
            binds.append(sandbox.Bind(str(source), mount.path, read_only, source.is_dir()))
        scratch = pod.sandbox_dir / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        return sandbox.plan(argv, env, security, netns=str(NETNS_DIR / pod.net.netns),
                            hostname=pod_hostname(pod.obj) or pod.net.netns, cwd=cwd, hidden=self.hidden,
                            binds=tuple(binds), scratch=str(scratch), join_pid=join_pid)

    def exec_command(self, pod: NetnsPod, obj: dict, container_name: str, argv: list[str]) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run `argv` in a container of the pod, as `kubectl exec`
        does: in the namespaces of its process when it has one, else in a sandbox of its own."""
        container = next((c for c in (obj.get("spec") or {}).get("containers") or [] if c.get("name") == container_name), {})
        running = pod.containers.get(container_name)
        join = running.pid if running and running.pid and start_time(running.pid) == running.pid_start else None
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": pod_hostname(obj) or pod.net.netns,
               **dict(running.spec.env if running else ContainerSpec.literal_env(container))}
        plan = self.launch_plan(pod, sandbox.security(obj, container), sandbox.volume_mounts(container), tuple(argv), env,
                                str(container.get("workingDir") or ""), join)
        return launcher_command(), {launch.PLAN_VARIABLE: plan.to_json()}

    def _readable(self, pod: NetnsPod) -> None:
        frames = pod.read_frames()
        if frames:
            self.on_frames(pod, frames)

    async def _supervise(self, key: str, pod: NetnsPod, container: Container) -> None:
        """Runs the container's command, and again after each exit its restart policy allows, with doubling
        backoff."""
        backoff = BACKOFF_FIRST
        if container.pid is None:
            await self._volumes_ready(key, pod, container)
        while not container.finished and container.spec.config_error is None:
            if container.pid is None:
                self._start(pod, container)
            code = await _wait_exit(container.pid)
            ran = time.monotonic() - container.started_at
            if ran >= BACKOFF_RESET_AFTER:
                backoff = BACKOFF_FIRST
            restarting = container.spec.restarts_after(code)
            log.info("pod %s: container %s (pid %d) exited%s after %.1fs; %s", key, container.spec.name,
                     container.pid, "" if code is None else f" with {code}", ran,
                     f"restarting in {backoff:.1f}s" if restarting else f"done (restartPolicy {container.spec.restart_policy})")
            container.last_terminated = {
                # An adopted process is not our child: its exit code is unknown, which the kubelet reports so.
                "exitCode": 137 if code is None else code,
                "reason": "ContainerStatusUnknown" if code is None else "Completed" if code == 0 else "Error",
                "startedAt": container.started,
                "finishedAt": _rfc3339(),
            }
            container.pid = container.pid_start = None
            if not restarting:
                container.finished = True
                pod.save()
                self.on_change(key)
                return
            container.backoff = backoff
            pod.save()
            self.on_change(key)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            container.restarts += 1
            container.backoff = None
            self._start(pod, container)
            self.on_change(key)

    def _start(self, pod: NetnsPod, container: Container) -> None:
        spec = container.spec
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": pod_hostname(pod.obj) or pod.net.netns, **dict(spec.env)}
        security = spec.security or sandbox.security(pod.obj, {"name": spec.name})
        plan = self.launch_plan(pod, security, spec.mounts, spec.argv, env, spec.working_dir)
        shim, stdout, stderr = start_log_shim(pod.log_dir / container.spec.name, container.restarts)
        reaping = asyncio.ensure_future(_wait_exit(shim))  # it ends when the container's pipes do
        self._shims.add(reaping)
        reaping.add_done_callback(self._shims.discard)
        # posix_spawn rather than Popen: the process is reaped by _wait_exit, which also watches the
        # processes adopted after a restart, so nothing else may wait for it.
        try:
            container.pid = os.posix_spawn(
                sys.executable, launcher_command(), {launch.PLAN_VARIABLE: plan.to_json()},
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, stdout, 1),
                    (os.POSIX_SPAWN_DUP2, stderr, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(stdout)
            os.close(stderr)
        container.pid_start = start_time(container.pid)
        container.started_at = time.monotonic()
        container.started = _rfc3339()
        pod.save()

    def stop(self, pod: NetnsPod) -> None:
        """Pod deleted, first step: its processes are stopped and its frames no longer read; its namespace
        stays for the CNI DEL of its network, after which `remove` removes it."""
        self.pods.pop(pod.net.netns, None)
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(pod.read_fd)
        pod.stop_processes()

    def remove(self, net: PodNetwork, *, keep_logs: bool = False) -> None:
        """The namespace of a pod that is gone, and its state, logs (unless kept, for `remove_logs` to take
        later) and volumes (or what a failed setup made)."""
        delete_namespace(net.netns)
        state_path = self.directory / f"{net.netns}.json"
        state_path.unlink(missing_ok=True)
        if not keep_logs:
            self.remove_logs(net)
        shutil.rmtree(state_path.with_suffix(".pod"), ignore_errors=True)

    def remove_logs(self, net: PodNetwork) -> None:
        shutil.rmtree(self.directory / net.netns, ignore_errors=True)

    def collect_garbage(self, claimed: set[str]) -> list[str]:
        """Removes the namespaces of this node that no current pod claims: those with the node's owner
        prefix that this agent's state directory records (another cluster on the machine may have a
        node of the same name; its namespaces are recorded in its own state directory), but for the pods
        held and those `claimed` (whose network is being attached or torn down: a pod adopted after a
        restart is claimed before its namespace is prepared, in a thread, so it is not yet held)."""
        removed = []
        existing = set(list_namespaces())
        for path in self.directory.glob("*.json") if self.directory.exists() else ():
            name = path.stem
            if name in self.pods or name in claimed or not name.startswith(owner_prefix(self.node)):
                continue
            _kill_recorded(path)
            if name in existing:
                delete_namespace(name)
                removed.append(name)
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
            path.unlink(missing_ok=True)
            shutil.rmtree(self.directory / name, ignore_errors=True)
            shutil.rmtree(path.with_suffix(".pod"), ignore_errors=True)
        self._collect_left_directories(claimed)
        return removed

    def _collect_left_directories(self, claimed: set[str]) -> None:
        """The logs that ended pods kept (and any volumes) whose namespace's state is gone: left when the
        agent went away before the pods were deleted."""
        for directory in self.directory.iterdir() if self.directory.exists() else ():
            owner = directory.name.removesuffix(".pod")
            if (not directory.is_dir() or not owner.startswith(owner_prefix(self.node)) or owner in self.pods
                    or owner in claimed or (self.directory / f"{owner}.json").exists()):
                continue
            shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        """Agent shutdown: every pod's processes stopped and its namespace removed, those of pods still being
        torn down or set up included (a deleted pod's teardown the shutdown cut short left its namespace
        behind, with no agent left to collect it)."""
        for pod in list(self.pods.values()):
            self.stop(pod)
            self.remove(pod.net)
        self.collect_garbage(set())
