"""The names of podnet's network namespaces, pure: whose each one is, from its name alone, so that what a
crashed run left behind can be found again by prefix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

NAME_PREFIX = "podnet-"
HOST_PREFIX = "podnet-host-"
NETNS_DIR = Path("/run/netns")
# A pod's TAP carries this name in the agent's namespace until it is moved into the pod's.
TAP_PREFIX = "pnt"
# A namespace name is a file name under /run/netns and /etc/netns; keep it readable in `ip netns list`.
MAX_NAME = 60


def owner_prefix(node: str) -> str:
    """Every pod namespace of `node` starts with this."""
    return f"{NAME_PREFIX}{node}-"


def namespace_name(node: str, namespace: str, pod: str) -> str:
    """`podnet-<node>-<namespace>.<pod>`, one name for one pod and never another's: a namespace name holds
    no dot, so the first dot says where it ends (joined by `-`, namespace `a` / pod `b-c` and namespace
    `a-b` / pod `c` were one name, and creating the second pod deleted the first's namespace). Longer than
    MAX_NAME, the tail becomes `_` and 64 bits of a hash of `namespace/pod`: no API name holds `_`, so a
    shortened name is never a whole one, and finding two pods with one hash is out of a tenant's reach.
    The owner prefix is always kept whole so garbage collection finds it."""
    prefix = owner_prefix(node)
    text = f"{namespace}.{pod}"
    limit = max(MAX_NAME - len(prefix), 32)
    if len(text) <= limit:
        return prefix + text
    digest = hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()[:16]
    return f"{prefix}{text[: limit - 17]}_{digest}"


def host_namespace(node: str) -> str:
    """The namespace a node's own processes run in when hosts are namespaces (`podnet up --hosts netns`)."""
    return HOST_PREFIX + node


def tap_name(netns: str) -> str:
    """A temporary name (at most 15 bytes, the kernel's limit) for the TAP before it becomes eth0."""
    return TAP_PREFIX + hashlib.sha256(netns.encode()).hexdigest()[:11]


def enter_command(name: str) -> list[str]:
    """The command prefix that runs a program in network namespace `name` and in this mount namespace.
    Not `ip netns exec`, whose private mount namespace would keep the pod namespaces a node's agent
    creates (bind mounts under /run/netns) from ever being seen outside it."""
    return ["nsenter", f"--net={NETNS_DIR / name}", "--"]
