"""Hosts as network namespaces (`podnet up --hosts netns`, root, Linux), and removing what podnet made.

Each node's processes (agent, kube-proxy, BGP speaker) run in their own network namespace
`podnet-host-<node>`, joined to the bridge `podnet-br0` in the root namespace by a veth pair whose inner
end is the host's eth0. The lab subnet is 203.0.113.0/24 (TEST-NET-3, a documentation range that is
never routed; TEST-NET-1 is taken by the uplink of some virtual machines): node N is 203.0.113.(10+N),
and the bridge itself holds 203.0.113.10, the control-plane address, where the API server, DNS and the
cloud load balancer listen in the root namespace. A subnet that the machine already routes somewhere
else is refused, so lab traffic can never leave through a real interface. So every host has its
own kernel view of the network and VXLAN crosses real interfaces between namespaces.

What podnet makes is found again by name: namespaces `podnet-*`, the bridge `podnet-br0`, host veths
`pnv*`, the host ends of pods' veth pairs `pnw*` (and their pod ends `pnt*`, in the root namespace only while being set up). `clean_home` removes a cluster
home's own (its host namespaces, and the pod namespaces its agents recorded); `clean_all` removes every
one of them on the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from podnet.cluster.supervisor import SupervisorError
from podnet.cni.conflist import CONFLIST_NAME
from podnet.cni.runtime import undo_chained
from podnet.netns.ip import NetnsError, delete_namespace, ip, ip_batch, list_namespaces
from podnet.netns.names import (
    HOST_END_PREFIX,
    HOST_PREFIX,
    NAME_PREFIX,
    NETNS_DIR,
    POD_END_PREFIX,
    host_namespace,
)

BRIDGE = "podnet-br0"
LAB_PREFIX = "203.0.113"
PREFIX_LEN = 24
VETH_PREFIX = "pnv"


class HostsError(SupervisorError):
    pass


def require_root(what: str) -> None:
    if not sys.platform.startswith("linux"):
        raise HostsError(f"{what} needs Linux network namespaces")
    if os.geteuid() != 0:
        raise HostsError(f"{what} needs root (network namespaces and TAP devices)")


def veth_name(node: str) -> str:
    """The root end of a host's veth pair (at most 15 bytes, the kernel's limit for a link name)."""
    return VETH_PREFIX + hashlib.sha256(node.encode()).hexdigest()[:11]


# With br_netfilter loaded (Docker loads it), bridged frames traverse iptables' FORWARD chain, whose
# policy Docker sets to DROP: VXLAN between two host namespaces would vanish there. This rule lets
# traffic between ports of podnet's own bridge through, and nothing else.
_FORWARD_RULE = ("FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", "podnet lab bridge",
                 "-j", "ACCEPT")
_BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def _iptables(*args: str) -> int:
    if shutil.which("iptables") is None:
        return 1
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, timeout=15).returncode


def _allow_bridged() -> None:
    try:
        enabled = _BRIDGE_NF.read_text().strip() == "1"
    except OSError:
        return  # br_netfilter is not loaded: bridged frames never meet iptables
    if enabled and _iptables("-C", *_FORWARD_RULE) != 0:
        _iptables("-I", *_FORWARD_RULE)


def _remove_bridged_rule() -> bool:
    removed = False
    while _iptables("-C", *_FORWARD_RULE) == 0 and _iptables("-D", *_FORWARD_RULE) == 0:
        removed = True
    return removed


def _link_exists(name: str) -> bool:
    return ip("link", "show", name, check=False).returncode == 0


def setup(bridge_address: str, nodes: list[tuple[str, str]]) -> None:
    """The bridge with `bridge_address`, and per (node, address) a namespace joined to it. Safe to run
    again over what a previous run left: each piece is made afresh."""
    try:
        _setup(bridge_address, nodes)
    except NetnsError as exc:
        raise HostsError(f"setting up the host namespaces: {exc}") from None


def _setup(bridge_address: str, nodes: list[tuple[str, str]]) -> None:
    subnet = f"{bridge_address.rsplit('.', 1)[0]}.0/{PREFIX_LEN}"
    routed = [line for line in ip("-4", "route", "show", "match", subnet).stdout.splitlines()
              if not line.startswith("default") and f"dev {BRIDGE}" not in line]
    if routed:
        raise HostsError(f"{subnet} is already routed on this machine ({routed[0].strip()}); "
                         "choose another lab subnet with --prefix")
    if not _link_exists(BRIDGE):
        ip_batch([f"link add {BRIDGE} type bridge", f"addr add {bridge_address}/{PREFIX_LEN} dev {BRIDGE}",
                  f"link set {BRIDGE} up"])
    _allow_bridged()
    for node, address in nodes:
        name, veth = host_namespace(node), veth_name(node)
        if (NETNS_DIR / name).exists():
            delete_namespace(name)
        ip("link", "delete", veth, check=False)
        ip("netns", "add", name)
        ip_batch([f"link add {veth} type veth peer name eth0 netns {name}",
                  f"link set {veth} master {BRIDGE}", f"link set {veth} up"])
        ip_batch([f"addr add {address}/{PREFIX_LEN} dev eth0", "link set lo up", "link set eth0 up",
                  f"route add default via {bridge_address}"], namespace=name)


def teardown(nodes: list[str]) -> list[str]:
    """Removes the nodes' host namespaces (their processes with them) and their veths; the bridge goes
    when no podnet host is left on it. Returns what it removed."""
    removed = []
    for node in nodes:
        name = host_namespace(node)
        if (NETNS_DIR / name).exists():
            delete_namespace(name)
            removed.append(name)
        if ip("link", "delete", veth_name(node), check=False).returncode == 0:
            removed.append(veth_name(node))
    if _link_exists(BRIDGE) and not [n for n in list_namespaces() if n.startswith(HOST_PREFIX)]:
        ip("link", "delete", BRIDGE, check=False)
        removed.append(BRIDGE)
        if _remove_bridged_rule():
            removed.append("iptables FORWARD rule of " + BRIDGE)
    return removed


def recorded_pod_namespaces(home: Path) -> list[str]:
    """The pod namespaces the agents of the cluster in `home` recorded (`nodes/*/netns/*.json`)."""
    return sorted({p.stem for p in home.glob("nodes/*/netns/*.json") if p.stem.startswith(NAME_PREFIX)})


def clean_home(home: Path, topology: dict | None) -> list[str]:
    """Removes the namespaces, veths and bridge of the cluster in `home`, whether or not its processes
    are still running (they die with their namespaces)."""
    existing = set(list_namespaces())
    removed = []
    for conflist in home.glob(f"nodes/*/cni/net.d/{CONFLIST_NAME}"):
        removed += [f"the chain of {c}" for c in undo_chained(conflist, conflist.parent.parent / "results")]
    for name in recorded_pod_namespaces(home):
        if name in existing:
            delete_namespace(name)
            removed.append(name)
    for path in home.glob("nodes/*/netns/*.json"):
        path.unlink(missing_ok=True)
    if topology and topology.get("host_mode") == "netns":
        removed += teardown([n["name"] for n in topology.get("nodes") or []])
    return removed


def _podnet_links() -> list[str]:
    done = ip("-o", "link", "show", check=False)
    names = []
    for line in done.stdout.splitlines():
        fields = line.split(":", 2)
        if len(fields) < 2:
            continue
        name = fields[1].strip().split("@", 1)[0]
        if name == BRIDGE or name.startswith((VETH_PREFIX, HOST_END_PREFIX, POD_END_PREFIX)):
            names.append(name)
    return names


def clean_all() -> list[str]:
    """Removes every namespace, veth, TAP and bridge podnet made on this machine, by name."""
    removed = []
    # Pods first: a host namespace's agent may be holding their TAPs.
    for name in sorted(list_namespaces(), key=lambda n: n.startswith(HOST_PREFIX)):
        if name.startswith(NAME_PREFIX):
            delete_namespace(name)
            removed.append(name)
    for link in _podnet_links():
        if ip("link", "delete", link, check=False).returncode == 0:
            removed.append(link)
    if _remove_bridged_rule():
        removed.append("iptables FORWARD rule of " + BRIDGE)
    return removed


def leftovers() -> list[str]:
    """What of podnet's is still on this machine (namespaces and links), for tests and `clean --all`."""
    return [n for n in list_namespaces() if n.startswith(NAME_PREFIX)] + _podnet_links()


def topology_of(home: Path) -> dict | None:
    try:
        return json.loads((home / "cluster.json").read_text()).get("topology")
    except (OSError, ValueError):
        return None

