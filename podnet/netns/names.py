"""The names of podnet's network namespaces, pure: whose each one is, from its name alone, so that what a
crashed run left behind can be found again by prefix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

NAME_PREFIX = "podnet-"
HOST_PREFIX = "podnet-host-"
NETNS_DIR = Path("/run/netns")
# The host end of a pod's veth pair (nodeagent/pods/wire.py); the pod end carries a name with
# POD_END_PREFIX in the host's namespace until it is moved into the pod's and renamed.
HOST_END_PREFIX = "pnw"
POD_END_PREFIX = "pnt"
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


def wire_names(netns: str, ifname: str) -> tuple[str, str]:
    """The host end's name and the pod end's name before it becomes `ifname` in the namespace at path
    `netns`: at most 15 bytes each (the kernel's limit), one pair per namespace and interface."""
    digest = hashlib.sha256(f"{netns}/{ifname}".encode()).hexdigest()[:11]
    return HOST_END_PREFIX + digest, POD_END_PREFIX + digest


def enter_command(name: str) -> list[str]:
    """The command prefix that runs a program in network namespace `name` and in this mount namespace.
    Not `ip netns exec`, whose private mount namespace would keep the pod namespaces a node's agent
    creates (bind mounts under /run/netns) from ever being seen outside it."""
    return ["nsenter", f"--net={NETNS_DIR / name}", "--"]
