"""What a netns pod's program may do: the launch plan, worked out from the pod spec (pure).

A container of a netns pod has no image: its programs come from the node's own filesystem. What keeps
them from becoming the host is the plan that `launch.py` carries out before it executes the program:
- a mount namespace of its own: the node's filesystem read-only (unless privileged), private tmpfs on
  /tmp, /var/tmp, /dev/shm and /run; an empty read-only tmpfs over podnet's home and the agent's state
  directory; the pod's /etc/hosts and /etc/resolv.conf
  bound over the node's; the pod's volumes at their mountPath; /proc's host-wide knobs masked (as a
  container runtime masks them) unless the container is privileged;
- a UTS, an IPC and a PID namespace (the pod's hostname, no System V IPC shared with the host, and no
  process of the node or of another pod in sight or in reach of a signal; the launcher stays as the
  pod's init, PID 1, so that the program is never PID 1 and SIGTERM works on it as anywhere);
- the pod's network namespace gets containerd 2's defaults, unprivileged ICMP echo sockets
  (`net.ipv4.ping_group_range`) and low ports for every user (`net.ipv4.ip_unprivileged_port_start=0`),
  then the pod's own `securityContext.sysctls`;
- the securityContext's user: `runAsUser`/`runAsGroup` (container over pod), `fsGroup` and
  `supplementalGroups` as supplementary groups. Unset, the user is 65534 (nobody/nogroup): a container
  image names its own user and most run as root, but here the "image" is the node's filesystem, where
  root is the node's root; so podnet gives what a non-root image would. An explicit `runAsUser: 0` is
  honoured (baseline allows it), and `runAsNonRoot: true` with uid 0 keeps the container waiting in
  CreateContainerConfigError with the kubelet's message;
- capabilities: the container runtime's default set, less `drop`, plus `add` (`ALL` in either), all of
  them for a privileged container. They are the bounding set; a non-root user holds none of them in
  effect (no ambient capabilities), as on Kubernetes;
- `no_new_privs` unless `allowPrivilegeEscalation: true` or privileged (Kubernetes leaves it off when
  unset; here the node's setuid programs are all in reach, so podnet turns it on by default);
- a seccomp filter when the profile is RuntimeDefault or unset (as kubelet's `--seccomp-default`): the
  system calls Docker's default profile refuses to an unprivileged container (mount, namespaces, kernel
  modules, kexec, bpf, ptrace, keyrings, clock setting, ...) answer EPERM; clone3 answers ENOSYS so
  that libc falls back to clone, whose namespace flags are refused. `Localhost` profiles are not read:
  they get the default filter. x86-64 only; elsewhere no filter is installed (and the plan says so).
"""

from __future__ import annotations

import json
import platform
import struct
from dataclasses import asdict, dataclass, field

DEFAULT_UID = 65534
DEFAULT_GID = 65534
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)  # in the kernel's numbering: CAP_CHOWN is 0
# containerd's default set for a container that is not privileged.
DEFAULT_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
RUNTIME_SYSCTLS = {"net.ipv4.ping_group_range": "0 2147483647", "net.ipv4.ip_unprivileged_port_start": "0"}
# What a container runtime hides of /proc and /sys from a container that is not privileged.
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READ_ONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def _context(obj: dict) -> dict:
    context = obj.get("securityContext")
    return context if isinstance(context, dict) else {}


def pod_ref(pod: dict) -> str:
    """The kubelet's name for a pod in its messages (format.Pod): `name_namespace(uid)`."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name')}_{meta.get('namespace')}({meta.get('uid', '')})"


@dataclass(frozen=True, slots=True)
class Security:
    """Who the container's programs are and what they may do."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    capabilities: tuple[str, ...]  # the bounding set, sorted by number
    sysctls: tuple[tuple[str, str], ...]  # for the pod's network namespace, in order
    no_new_privs: bool
    seccomp: bool  # the default filter
    privileged: bool
    error: str | None = None  # why the kubelet would not start it (runAsNonRoot and root)


def security(pod: dict, container: dict) -> Security:
    spec = pod.get("spec") or {}
    pod_context, context = _context(spec), _context(container)

    def setting(name: str):
        value = context.get(name)
        return pod_context.get(name) if value is None else value

    privileged = context.get("privileged") is True
    uid = setting("runAsUser")
    uid = DEFAULT_UID if uid is None else int(uid)
    gid = setting("runAsGroup")
    gid = (0 if uid == 0 else DEFAULT_GID) if gid is None else int(gid)
    groups = []
    if pod_context.get("fsGroup") is not None:
        groups.append(int(pod_context["fsGroup"]))
    groups += [int(g) for g in pod_context.get("supplementalGroups") or [] if int(g) not in groups]
    if privileged:
        capabilities = set(CAPABILITIES)
    else:
        requested = context.get("capabilities") if isinstance(context.get("capabilities"), dict) else {}
        drop = {str(c).removeprefix("CAP_") for c in requested.get("drop") or []}
        add = {str(c).removeprefix("CAP_") for c in requested.get("add") or []}
        capabilities = set() if "ALL" in drop else DEFAULT_CAPABILITIES - drop
        capabilities |= set(CAPABILITIES) if "ALL" in add else add & set(CAPABILITIES)
    escalation = context.get("allowPrivilegeEscalation")
    profile = setting("seccompProfile")
    profile_type = profile.get("type") if isinstance(profile, dict) else None
    error = None
    if setting("runAsNonRoot") is True and uid == 0:
        error = f'container\'s runAsUser breaks non-root policy (pod: "{pod_ref(pod)}", container: {container.get("name")})'
    sysctls = dict(RUNTIME_SYSCTLS)
    sysctls.update((str(s["name"]), str(s.get("value") or "")) for s in pod_context.get("sysctls") or []
                   if isinstance(s, dict) and s.get("name"))
    return Security(
        uid=uid, gid=gid, groups=tuple(groups), sysctls=tuple(sysctls.items()),
        capabilities=tuple(c for c in CAPABILITIES if c in capabilities),
        no_new_privs=not privileged and escalation is not True,
        seccomp=not privileged and profile_type != "Unconfined",
        privileged=privileged, error=error,
    )


@dataclass(frozen=True, slots=True)
class VolumeMount:
    volume: str
    path: str
    sub_path: str = ""
    read_only: bool = False


def volume_mounts(container: dict) -> tuple[VolumeMount, ...]:
    return tuple(
        VolumeMount(str(m["name"]), str(m["mountPath"]), str(m.get("subPath") or ""), m.get("readOnly") is True)
        for m in container.get("volumeMounts") or [] if isinstance(m, dict) and m.get("name") and m.get("mountPath")
    )


# --- seccomp ----------------------------------------------------------------------------------------------

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
# x86-64 numbers of what the default filter refuses (asm/unistd_64.h).
_REFUSED = {
    "ptrace": 101, "uselib": 134, "ustat": 136, "sysfs": 139, "pivot_root": 155, "_sysctl": 156, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172,
    "ioperm": 173, "create_module": 174, "init_module": 175, "delete_module": 176, "get_kernel_syms": 177,
    "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212, "clock_settime": 227,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "quotactl_fd": 443,
}
_CLONE, _CLONE3 = 56, 435
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080
_EPERM, _ENOSYS = 1, 38
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
# classic BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
# offsets in struct seccomp_data
_NR, _ARCH, _ARG0 = 0, 4, 16


def seccomp_filter() -> bytes | None:
    """The default filter as a BPF program (struct sock_filter[]), or None off x86-64."""
    if platform.machine() != "x86_64":
        return None
    return _assemble(sorted(_REFUSED.values()))


def _assemble(refused: list[int]) -> bytes:
    """Assembled from the returns backwards, so each jump is a distance to a known label."""
    returns = [(_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, _RET_ERRNO | _EPERM), (_RET_K, 0, 0, _RET_ERRNO | _ENOSYS)]
    body: list[tuple[int, int, int, int]] = []
    # (code, where to go when true, when false, k); a place is the next instruction or one of the returns.
    checks: list[tuple[int, str, str, int]] = [
        (_LD_W_ABS, "next", "next", _ARCH),
        (_JEQ_K, "next", "eperm", _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, "next", "next", _NR),
        (_JGE_K, "eperm", "next", _X32_BIT),
        *[(_JEQ_K, "eperm", "next", n) for n in refused],
        (_JEQ_K, "enosys", "next", _CLONE3),
        (_JEQ_K, "next", "allow", _CLONE),
        (_LD_W_ABS, "next", "next", _ARG0),
        (_JSET_K, "eperm", "allow", _CLONE_NAMESPACES),
    ]
    labels = {"allow": len(checks), "eperm": len(checks) + 1, "enosys": len(checks) + 2}
    for index, (code, when_true, when_false, k) in enumerate(checks):
        if code == _LD_W_ABS:
            body.append((code, 0, 0, k))
            continue

        def distance(target: str, index: int = index) -> int:
            return 0 if target == "next" else labels[target] - index - 1

        body.append((code, distance(when_true), distance(when_false), k))
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in body + returns)


# --- the plan ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bind:
    source: str
    target: str
    read_only: bool
    directory: bool


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """What `launch.py` does, in order: enter `netns` (and, for an exec, the namespaces of `join_pid`),
    else make the mount, UTS and IPC namespaces with `private` tmpfs dirs, `hidden` dirs, `binds` and
    the masks; then the credentials, `no_new_privs`, the seccomp program, and execute `argv`."""

    argv: tuple[str, ...]
    env: dict[str, str]
    netns: str
    hostname: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    capabilities: tuple[int, ...]  # the bounding set, by number
    no_new_privs: bool
    seccomp: str  # the BPF program, hex; "" for none
    sysctls: tuple[tuple[str, str], ...] = ()
    cwd: str = "/"
    join_pid: int | None = None
    private: tuple[str, ...] = PRIVATE_DIRS
    hidden: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    masked: tuple[str, ...] = MASKED_PATHS
    read_only: tuple[str, ...] = READ_ONLY_PATHS
    scratch: str = ""  # an empty directory of the agent's, where the overlays that make missing mount points live
    read_only_root: bool = True
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def plan(argv: tuple[str, ...], env: dict[str, str], security_: Security, *, netns: str, hostname: str,
         cwd: str = "", hidden: tuple[str, ...] = (), binds: tuple[Bind, ...] = (), scratch: str = "",
         join_pid: int | None = None) -> LaunchPlan:
    """The launch plan of one program of a container."""
    program = seccomp_filter() if security_.seccomp else None
    notes = ("no seccomp filter on this architecture",) if security_.seccomp and program is None else ()
    return LaunchPlan(
        argv=tuple(argv), env=dict(env), netns=netns, hostname=hostname, uid=security_.uid, gid=security_.gid,
        groups=security_.groups, capabilities=tuple(CAPABILITIES.index(c) for c in security_.capabilities),
        no_new_privs=security_.no_new_privs, seccomp=program.hex() if program else "",
        sysctls=() if join_pid else security_.sysctls, cwd=cwd or "/",
        join_pid=join_pid, hidden=hidden, binds=binds, scratch=scratch,
        masked=() if security_.privileged else MASKED_PATHS, read_only=() if security_.privileged else READ_ONLY_PATHS,
        read_only_root=not security_.privileged,
        notes=notes,
    )
