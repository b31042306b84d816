"""Starts one program of a netns pod as its launch plan says (`sandbox.LaunchPlan`), then becomes it.

Run by the node agent as root, `python -I -S launch.py`, with the plan as JSON in the environment variable
PODNET_LAUNCH_PLAN (only root can read a root process's environment; the program gets `plan.env` alone).
It uses nothing but the standard library, so that it starts quickly and without the agent's imports.

The order matters: the bind sources are opened (O_PATH) before anything hides them (and after the root
changes, if it does); the mount points that
do not exist are made before anything is bound (an overlay on a directory of the node's filesystem, whose
upper layer lives on a scratch tmpfs, so the node's own files are never changed; for a new top-level
directory such as /data, a root of its own: a tmpfs holding binds of the node's top-level entries, and
the layers in its /.podnet, covered once the overlays are made, since overlayfs takes its layers only
from mounts of the caller's namespace); the seccomp filter goes
in while the process still holds CAP_SYS_ADMIN, and the user changes last, which leaves a non-root user
with no capability in effect.

Whatever fails before the program runs is told on stderr (the container's log) and exits with 128, as a
runtime's failure to start a container does; a program that is not found exits with 127.
"""

import ctypes
import json
import os
import signal
import sys

PLAN_VARIABLE = "PODNET_LAUNCH_PLAN"
LAYERS = "/.podnet"  # where the overlays' layers live in a root of the pod's own

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWPID = 0x20000000
# What the pod's init passes on to its program (the host signals the whole process group anyway).
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2
_SYS_PIVOT_ROOT = 155  # x86-64; glibc has no wrapper
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 1
_MOUNT_ATTR_NOSUID = 2
_PR_SET_SECCOMP = 22
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                       data and data.encode()), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = (("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64))


def _set_attributes(path, *, recursive=False, set_=0, clear=0):
    attributes = _MountAttr(set_, clear, 0, 0)
    _check(_libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, path.encode(), _AT_RECURSIVE if recursive else 0,
                         ctypes.byref(attributes), ctypes.sizeof(attributes)), f"mount_setattr {path}")


def _enter(*namespaces):
    """setns into each (path, flag) in order; all are opened first, since entering a mount namespace
    changes what /proc shows."""
    opened = [(os.open(path, os.O_RDONLY), path, flag) for path, flag in namespaces]
    try:
        for fd, path, flag in opened:
            _check(_libc.setns(fd, flag), f"entering {path}")
    finally:
        for fd, _, _ in opened:
            os.close(fd)


def _is_private(path, private):
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d.rstrip("/") + "/") for d in private)


class _MountPoints:
    """Makes the mount points that are missing, without touching the node's files."""

    def __init__(self, private, scratch, own_root):
        self.private = [os.path.realpath(d) for d in private if os.path.isdir(d)]
        self.scratch = scratch  # an O_PATH descriptor of the scratch tmpfs, or None
        self.own_root = own_root  # "/" is a tmpfs of ours: new top-level entries may be made in it
        self.overlays = 0

    def ensure(self, target, directory):
        if os.path.lexists(target):
            return
        missing = []
        ancestor = target
        while not os.path.exists(ancestor):
            missing.append(os.path.basename(ancestor))
            ancestor = os.path.dirname(ancestor)
        if not (ancestor == "/" and self.own_root or _is_private(ancestor, self.private)):
            self._overlay(ancestor)
        path = ancestor
        for index, part in enumerate(reversed(missing)):
            path = os.path.join(path, part)
            if index == len(missing) - 1 and not directory:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            else:
                os.mkdir(path, 0o755)

    def _overlay(self, directory):
        if self.scratch is None:
            raise OSError(0, f"cannot make a mount point under {directory}")
        self.overlays += 1
        layer = f"/proc/self/fd/{self.scratch}/{self.overlays}"
        os.makedirs(f"{layer}/upper")
        os.makedirs(f"{layer}/work")
        _mount("overlay", directory, "overlay", 0, f"lowerdir={directory},upperdir={layer}/upper,workdir={layer}/work")
        self.private.append(os.path.realpath(directory))


def _set_sysctls(sysctls):
    """In the pod's network namespace (a net.* sysctl is the namespace of whoever writes it)."""
    for name, value in sysctls:
        with open("/proc/sys/" + name.replace(".", "/"), "w") as knob:
            knob.write(value)


def _own_root(scratch_path):
    """Moves this mount namespace to a root of its own: a tmpfs under the scratch directory with each
    top-level entry of the node's root bound (or linked) into it, so that new top-level directories can be
    made without touching the node's."""
    root = os.path.join(scratch_path, "root")
    os.mkdir(root, 0o755)
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
    for entry in os.listdir("/"):
        source, target = "/" + entry, os.path.join(root, entry)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
            continue
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(source, target, None, _MS_BIND | _MS_REC)
    os.mkdir(os.path.join(root, LAYERS[1:]), 0o700)
    os.chdir(root)
    _check(_libc.syscall(_SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "detaching the old root")
    os.chdir("/")


def _needs_own_root(plan):
    return any(not os.path.lexists("/" + bind["target"].strip("/").split("/")[0]) for bind in plan["binds"])


def _build_mount_namespace(plan):
    _check(_libc.unshare(_CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWIPC), "unshare")
    _set_sysctls(plan["sysctls"])  # in the pod's IPC namespace too, for kernel.shm_*
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    scratch = None
    own_root = False
    if plan["scratch"]:
        _mount("tmpfs", plan["scratch"], "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0700")
        own_root = _needs_own_root(plan)
        if own_root:
            _own_root(plan["scratch"])
        scratch = os.open(LAYERS if own_root else plan["scratch"], os.O_PATH)
    # Opened in whichever root is in force (a bind takes its source from a mount of this namespace),
    # before anything hides them.
    sources = [os.open(bind["source"], os.O_PATH) for bind in plan["binds"]]
    for directory in plan["private"]:
        if os.path.isdir(directory) and not os.path.islink(directory):
            _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755" if directory == "/run" else "mode=1777")
    for directory in plan["hidden"]:
        if os.path.isdir(directory):
            _mount("tmpfs", directory, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=0755,size=4k")
    points = _MountPoints(plan["private"], scratch, own_root)
    for bind in plan["binds"]:
        points.ensure(bind["target"], bind["directory"])
    if own_root:
        _mount("tmpfs", LAYERS, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=0700,size=4k")
    if plan["read_only_root"]:
        # The node's files, as a container's image would be with readOnlyRootFilesystem: no user of the
        # pod, root included, changes them. The private directories and writable volumes are the pod's.
        _set_attributes("/", recursive=True, set_=_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID)
        for directory in plan["private"]:
            if os.path.ismount(directory):
                _set_attributes(directory, clear=_MOUNT_ATTR_RDONLY)
    for bind, source in zip(plan["binds"], sources, strict=True):
        _mount(f"/proc/self/fd/{source}", bind["target"], None, _MS_BIND | _MS_REC)
        if bind["read_only"]:
            _mount(None, bind["target"], None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        elif plan["read_only_root"]:
            _set_attributes(bind["target"], clear=_MOUNT_ATTR_RDONLY)
        os.close(source)
    hostname = plan["hostname"].encode()
    _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
    _check(_libc.unshare(_CLONE_NEWPID), "unshare (pid)")


def _mount_proc(plan):
    """The pod's own /proc (its PID namespace's), with the host-wide knobs masked or read-only."""
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    for path in plan["masked"]:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", _MS_RDONLY, "size=0")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, _MS_BIND)
    for path in plan["read_only"]:
        if os.path.exists(path):
            _mount(path, path, None, _MS_BIND | _MS_REC)
            _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)


def _drop_privileges(plan):
    keep = set(plan["capabilities"])
    with open("/proc/sys/kernel/cap_last_cap") as last:
        for capability in range(int(last.read()) + 1):
            if capability not in keep:
                _check(_libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0), "dropping a capability")
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
    if plan["no_new_privs"]:
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if plan["seccomp"]:
        program = bytes.fromhex(plan["seccomp"])
        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
        _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")
    os.setgroups(plan["groups"])
    os.setresgid(plan["gid"], plan["gid"], plan["gid"])
    os.setresuid(plan["uid"], plan["uid"], plan["uid"])


def _failed(exc):
    sys.stderr.write(f"podnet: cannot start the container: {exc}\n")
    sys.stderr.flush()
    os._exit(128)


def _exit_like(status):
    """Ends this process as the child whose wait status this is ended (a signal as 128+N, as a shell)."""
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


def _wait_for(child):
    """Waits for `child`, reaping whatever else ends meanwhile (an init's duty), and ends as it did."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            _exit_like(status)


def _run(plan):
    """In the pod's PID namespace: drop to the container's user and execute the program."""
    try:
        _drop_privileges(plan)
        os.chdir(plan["cwd"])
    except OSError as exc:
        _failed(exc)
    _execute(plan["argv"], plan["env"])


def main():
    """Three processes: this one, which the agent waits for, stays outside the pod's PID namespace and ends
    as the pod's init does; the init (PID 1 in it) mounts the pod's /proc, passes signals on, reaps orphans
    and ends as the program does; the program, never PID 1, so that SIGTERM works on it as anywhere."""
    plan = json.loads(os.environ.pop(PLAN_VARIABLE))
    for forwarded in _FORWARDED:  # the process group's signals reach the program itself
        signal.signal(forwarded, signal.SIG_IGN)
    try:
        if plan["join_pid"]:  # an exec: in the namespaces of the container's launcher and its init
            _enter((plan["netns"], _CLONE_NEWNET), *((f"/proc/{plan['join_pid']}/ns/{name}", flag) for name, flag in (
                ("ipc", _CLONE_NEWIPC), ("uts", _CLONE_NEWUTS), ("mnt", _CLONE_NEWNS), ("pid_for_children", _CLONE_NEWPID))))
        else:
            _enter((plan["netns"], _CLONE_NEWNET))
            _build_mount_namespace(plan)
    except OSError as exc:
        _failed(exc)
    init = os.fork()
    if init:
        _wait_for(init)
    if plan["join_pid"]:
        _run(plan)
    try:
        _mount_proc(plan)
    except OSError as exc:
        _failed(exc)
    program = os.fork()
    if program == 0:
        for forwarded in _FORWARDED:
            signal.signal(forwarded, signal.SIG_DFL)
        _run(plan)
    for forwarded in _FORWARDED:
        signal.signal(forwarded, lambda number, _frame: os.kill(program, number))
    _wait_for(program)


def _execute(argv, env):
    """execvpe without its lazy imports (the interpreter's own files may be hidden by now): the first
    PATH entry that holds the program runs it."""
    name = argv[0]
    candidates = [name] if "/" in name else [os.path.join(d or ".", name) for d in env.get("PATH", "").split(":")]
    denied = None
    for candidate in candidates:
        try:
            os.execve(candidate, argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            denied = denied or exc
    if denied is None:
        sys.stderr.write(f'exec: "{name}": executable file not found in $PATH\n')
        code = 127
    else:
        sys.stderr.write(f'exec: "{name}": {denied.strerror}\n')
        code = 126
    sys.stderr.flush()
    os._exit(code)

if __name__ == "__main__":
    main()
