"""A pod's wire: a veth pair. Its pod end is the pod's interface (eth0, in the pod's namespace); its host
end stays in the host's namespace, where the agent reads and writes the pod's frames through a packet
socket bound to it, and where the host kernel reaches the pod too. That is what the reference CNI plugins
chained after podnet need: `bandwidth` finds the host end as the pod end's veth peer and shapes it (a tbf
on the host end is the pod's ingress), `portmap` DNATs a hostPort to the pod's address, which the host
routes to the host end.

Two dataplanes share the link, each with frames of its own:
- the agent's: everything the pod sends to its gateway (which the agent answers by proxy ARP), and
  everything the agent writes to the pod;
- the host kernel's: what it routes to the pod (portmap's DNAT) and the pod's replies to it. The host
  end holds HOST_LINK_ADDRESS, the pod has an on-link route to it, and one masquerade rule of the host's
  (HOST_RULES, for every host end) makes it the source of what the host sends a pod, so the replies are
  addressed to the host end's MAC, not to the pod's gateway. Only replies: the host drops any connection
  a pod would open through its host end.
The agent's socket is filtered so that it sees neither the host's frames (PACKET_IGNORE_OUTGOING), nor the
pod's frames to the host end's MAC, nor the pod's ARP for HOST_LINK_ADDRESS (the host answers that).

When a tc filter on the host end's ingress redirects the pod's frames to another device (`bandwidth`
shapes a pod's egress so: a token bucket on an ifb device its frames are redirected to), the agent reads
them where they were sent, once they have passed its qdisc (`open_reader`), and its socket on the host end
only writes: a socket there sees frames before the ingress filters, unshaped.

Without offloads the pod end's checksum offload is off: the pod's kernel then hands the wire whole frames
with their checksums done. With them (the agent's default), it stays on, and a veth passes partial
checksums and 64 KB TSO frames on: the sockets then read and write each frame behind a virtio_net_hdr
(PACKET_VNET_HDR), which says what is left to do (nodeagent/pods/netns.py reads and writes it).
The pair outlives the agent (only the socket closes with it), so a restarted agent opens a new socket on
the host end and the pod never notices.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
from dataclasses import dataclass

from podnet.nodeagent.pods.netns import socket_in_namespace

from podnet.netns.ip import NetnsError, ip, ip_batch
from podnet.netns.names import HOST_END_PREFIX, wire_names

HOST_LINK_ADDRESS = "169.254.1.1"
# The host's rules for every host end, added once (table, chain, rule): what the host sends a pod comes
# from the host end, so that the reply comes back to it; and a pod opens nothing through its host end,
# neither to the host (its programs listening on any address) nor through it (forwarded): its own
# traffic goes through the agent, which guards the host (nodeagent/hostguard.py).
HOST_RULES = (
    ("nat", "POSTROUTING", ("-o", f"{HOST_END_PREFIX}+", "-m", "comment", "--comment",
                            "podnet: what the host sends a pod comes from its host end", "-j", "MASQUERADE")),
    *((("filter", chain, ("-i", f"{HOST_END_PREFIX}+", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment",
                          "--comment", "podnet: a pod opens nothing through its host end", "-j", "DROP")))
      for chain in ("INPUT", "FORWARD")),
)
_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_IGNORE_OUTGOING = 23
_PACKET_VNET_HDR = 15
_SO_ATTACH_FILTER = 26
_SIOCETHTOOL = 0x8946
_ETHTOOL_STXCSUM = 0x17
_ETHTOOL_SGRO = 0x2C
_BUFFER = 4 << 20
_REDIRECT = re.compile(r"Redirect to device (\S+?)\)")


@dataclass(frozen=True, slots=True)
class Wire:
    """The host end of a pod's veth pair."""

    host_ifname: str
    host_mac: str

    def exists(self) -> bool:
        # Asked of `ip`, not /sys: an agent that entered a host's namespace (`--hosts netns`) sees the
        # sysfs of the namespace it started in.
        return ip("link", "show", "dev", self.host_ifname, check=False).returncode == 0


def plumb(netns: str, ifname: str, address: str, prefix_len: int, gateway: str, mac: str, mtu: int,
          offloads: bool = False) -> Wire:
    """A veth pair whose end `ifname` in the namespace at path `netns` has `address`, `mac`, a default
    route via `gateway` and an on-link route to the host end; the host routes `address` to the other end.
    `offloads`: the pod end keeps its checksum and segmentation offloads (see the module text)."""
    host, temporary = wire_names(netns, ifname)
    ip("link", "delete", host, check=False)  # left by a crash: the pair goes with either end
    ip("link", "add", host, "mtu", str(mtu), "type", "veth", "peer", "name", temporary, "mtu", str(mtu))
    try:
        ip("link", "set", temporary, "netns", netns)
        _pod_batch(netns, [f"link set {temporary} name {ifname}", f"link set {ifname} address {mac} addrgenmode none"])
        if not offloads:
            _ethtool(netns, ifname, _ETHTOOL_STXCSUM, 0)
        _pod_batch(netns, [
            f"addr add {address}/{prefix_len} dev {ifname}",
            "link set lo up",
            f"link set {ifname} up",
            f"route add {HOST_LINK_ADDRESS} dev {ifname} scope link",
            f"route add default via {gateway} dev {ifname}",
        ])
        ip_batch([
            f"link set {host} addrgenmode none",
            f"addr add {HOST_LINK_ADDRESS}/32 dev {host}",  # global scope: masquerade picks it
            f"link set {host} up",
            f"route replace {address}/32 dev {host} src {HOST_LINK_ADDRESS}",
            f"neigh replace {address} lladdr {mac} dev {host} nud permanent",
        ])
        _ethtool(None, host, _ETHTOOL_SGRO, 0)
        _ensure_host_rules()
        [link] = json.loads(ip("-json", "link", "show", "dev", host).stdout)
        host_mac = link["address"]
    except (NetnsError, OSError, subprocess.TimeoutExpired):
        ip("link", "delete", host, check=False)
        raise
    return Wire(host, host_mac)


def _ensure_host_rules() -> None:
    """HOST_RULES, each once, first in its chain. A host without iptables has no portmap either."""
    for table, chain, rule in HOST_RULES:
        try:
            present = subprocess.run(["iptables", "-w", "-t", table, "-C", chain, *rule], capture_output=True).returncode == 0
        except FileNotFoundError:
            return
        if not present:
            done = subprocess.run(["iptables", "-w", "-t", table, "-I", chain, *rule], capture_output=True, text=True)
            if done.returncode:
                raise NetnsError(f"iptables: {done.stderr.strip()}")


def unplumb(wire: Wire) -> None:
    """Removes the pair (deleting one end deletes the other, and the host's route to the pod with it)."""
    ip("link", "delete", wire.host_ifname, check=False)


def open_socket(wire: Wire, offloads: bool = False) -> int:
    """A non-blocking packet socket on the host end, filtered as the module says: reading it gives the
    frames the pod sends the agent, writing to it sends a frame to the pod; with `offloads`, each behind
    a virtio_net_hdr. The caller owns it."""
    return _packet_socket(wire.host_ifname, wire.host_mac, ignore_outgoing=True, offloads=offloads)


def redirect_target(wire: Wire) -> str | None:
    """The device a tc filter on the host end's ingress redirects the pod's frames to, if any."""
    done = subprocess.run(["tc", "filter", "show", "dev", wire.host_ifname, "ingress"], capture_output=True,
                          text=True, timeout=10)
    match = _REDIRECT.search(done.stdout)
    return match.group(1) if match else None


def open_reader(wire: Wire, device: str, offloads: bool = False) -> int:
    """A non-blocking packet socket that reads the pod's frames as `device` sends them (the target of
    redirect_target), filtered as the host end's socket is; that one should then only write (write_only)."""
    return _packet_socket(device, wire.host_mac, ignore_outgoing=False, offloads=offloads)


def _packet_socket(device: str, host_mac: str, *, ignore_outgoing: bool, offloads: bool) -> int:
    # Made with protocol 0, which takes in no frame until bind names the protocol and the device: a socket
    # made for ETH_P_ALL takes every interface's frames (the host's loopback traffic too) from its first
    # instant, before its filter is attached.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
    try:
        _attach(sock, _filter(host_mac))
        if ignore_outgoing:
            sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        if offloads:
            sock.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
        sock.bind((device, _ETH_P_ALL))
    except OSError:
        sock.close()
        raise
    return sock.detach()


def write_only(fd: int) -> None:
    """Makes the packet socket `fd` take in no more frames (it still sends)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        _attach(sock, ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0)))  # ret #0: drop every frame


def _attach(sock: socket.socket, program: ctypes.Array) -> None:
    """Attaches a classic BPF program (the kernel copies it during setsockopt)."""
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, struct.pack("HL", len(program) // 8,
                                                                       ctypes.addressof(program)))


def _filter(host_mac: str) -> ctypes.Array:
    """A classic BPF program that keeps a frame unless it is for the host kernel: ARP asking for
    HOST_LINK_ADDRESS, or a frame to the host end's MAC."""
    mac = bytes.fromhex(host_mac.replace(":", ""))
    link = int(ipaddress.IPv4Address(HOST_LINK_ADDRESS))
    ld_h, ld_w, jeq, ret = 0x28, 0x20, 0x15, 0x06
    program = [
        (ld_h, 0, 0, 12),  # 0: the EtherType
        (jeq, 0, 2, 0x0806),  # 1: ARP? on to 2, else to 4
        (ld_w, 0, 0, 38),  # 2: ARP's target address
        (jeq, 5, 0, link),  # 3: the host's: drop (9)
        (ld_w, 0, 0, 0),  # 4: the destination MAC, first four bytes
        (jeq, 0, 2, int.from_bytes(mac[:4], "big")),  # 5: on to 6, else keep (8)
        (ld_h, 0, 0, 4),  # 6: its last two
        (jeq, 1, 0, int.from_bytes(mac[4:], "big")),  # 7: the host end's: drop (9)
        (ret, 0, 0, 0x40000),  # 8: keep
        (ret, 0, 0, 0),  # 9: drop
    ]
    return ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))


def _ethtool(netns: str | None, ifname: str, command: int, value: int) -> None:
    """ETHTOOL_S* `command` with `value` on `ifname`, in the namespace at path `netns` (None: here)."""
    data = ctypes.create_string_buffer(struct.pack("II", command, value))
    request = struct.pack("16sP", ifname.encode(), ctypes.addressof(data)).ljust(40, b"\0")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if netns is None else socket_in_namespace(netns, socket.SOCK_DGRAM)
    with sock:
        fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, request)


def in_namespace(netns: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Runs `argv` in the network namespace at path `netns` (any path: /run/netns/x, /proc/PID/ns/net)."""
    return subprocess.run(["nsenter", f"--net={netns}", "--", *argv], input=stdin, capture_output=True,
                          text=True, timeout=10)


def _pod_batch(netns: str, lines: list[str]) -> None:
    done = in_namespace(netns, "ip", "-batch", "-", stdin="\n".join(lines) + "\n")
    if done.returncode:
        raise NetnsError(f"in {netns}: {done.stderr.strip()}")
