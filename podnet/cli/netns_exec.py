"""`podnet exec` into a netns pod: the real program runs in the pod's network namespace.

The pod's node agent names the namespace (`pods.list`); the program is started with `ip netns exec`, so
it also sees the pod's resolv.conf, and it inherits this terminal's stdin, stdout and stderr; its exit
code becomes ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import call_once


async def pod_namespace(agent_socket: str, namespace: str, name: str) -> str | None:
    """The network namespace of the pod, or None when it is a virtual pod."""
    for entry in await call_once(agent_socket, AgentMethod.PODS_LIST, timeout=10.0):
        if entry.get("namespace") == namespace and entry.get("name") == name:
            return entry.get("netns")
    return None


def run_in_namespace(netns: str, argv: list[str]) -> int:
    """Runs `argv` in `netns` with this process's standard streams; its exit code (126/127 as a shell
    reports a program that cannot run or is missing)."""
    if os.geteuid() != 0:
        raise PermissionError(f"entering network namespace {netns} needs root")
    if not argv:
        raise ValueError("no command given: podnet exec POD -- CMD [ARGS...]")
    if shutil.which(argv[0]) is None and "/" not in argv[0]:
        return 127
    return subprocess.run(["ip", "netns", "exec", netns, *argv], check=False).returncode
