"""`podnet exec` into a netns pod: the real program runs in the pod's container sandbox, as `kubectl exec`
does (nodeagent/pods/sandbox.py: the container's mount namespace, user, capabilities and seccomp filter).

The pod's node agent gives the command line that does it (`pod.exec_command`); it is started here, as root,
inheriting this terminal's stdin, stdout and stderr; its exit code becomes ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from podnet.nodeagent.pods.netns import DEFAULT_PATH
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import call_once


async def exec_command(agent_socket: str, namespace: str, name: str, argv: list[str]) -> dict | None:
    """`{"argv", "env"}` that run `argv` in the pod's first container, or None when it is a virtual pod."""
    return await call_once(agent_socket, AgentMethod.POD_EXEC_COMMAND, {"namespace": namespace, "pod": name, "argv": argv},
                           timeout=10.0)


def run_in_sandbox(command: dict, argv: list[str]) -> int:
    """Runs the agent's command line with this process's standard streams; its exit code (127, as a shell
    reports it, for a program that is missing)."""
    if os.geteuid() != 0:
        raise PermissionError("entering a pod's namespaces needs root")
    if not argv:
        raise ValueError("no command given: podnet exec POD -- CMD [ARGS...]")
    if shutil.which(argv[0], path=DEFAULT_PATH) is None and "/" not in argv[0]:
        return 127
    return subprocess.run(command["argv"], env=command["env"], check=False).returncode
