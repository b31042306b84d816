"""A WireGuard nobody here wrote: Debian's wireguard-go on a TUN device `wgpn0` in a network namespace,
joined to this one by a veth pair, its key made with `wg genkey` and set with `wg set`.

`wireguard_go_namespace(tmp_path, host_underlay=, peer_underlay=, listen_port=, tunnel_address=)` yields a
`WireGuardGo` (namespace, public key, host-side veth); `run(*argv, netns=)` runs a tool (in the
namespace), `wg_dump(netns)` reads the peer line of `wg show wgpn0 dump`.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INTERFACE = "wgpn0"


def run(*argv: str, netns: str | None = None, stdin: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, *argv], input=stdin, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def wg_dump(netns: str) -> dict[str, str]:
    """`wg show wgpn0 dump`'s peer line: public key, psk, endpoint, allowed ips, handshake, rx, tx, keepalive."""
    peer_line = run("wg", "show", INTERFACE, "dump", netns=netns).splitlines()[1].split("\t")
    names = ("public_key", "preshared_key", "endpoint", "allowed_ips", "latest_handshake", "rx", "tx", "keepalive")
    return dict(zip(names, peer_line, strict=True))


@dataclass(frozen=True)
class WireGuardGo:
    netns: str
    public_key: bytes
    host_veth: str


@contextmanager
def wireguard_go_namespace(
    tmp_path: Path, *, host_underlay: str, peer_underlay: str, listen_port: int, tunnel_address: str,
) -> Iterator[WireGuardGo]:
    """The veth pair holds host_underlay/30 here and peer_underlay/30 there; wgpn0 holds `tunnel_address`
    (ADDRESS/PREFIX) and listens on `listen_port`, with no peer yet."""
    for tool in ("wireguard-go", "wg"):
        assert shutil.which(tool), f"{tool} is missing: install Debian's wireguard-go and wireguard-tools"
    tag = f"{os.getpid() % 100000}"
    # "podnet-" namespaces are what `podnet clean --all` removes; the veth pair dies with the namespace.
    # (not "pnw…": the agent drops what a pod's host end, named so, opens towards the host)
    netns, host_veth, peer_veth = f"podnet-wgtest{tag}", f"wgvh{tag}", f"wgvp{tag}"
    run("ip", "netns", "add", netns)
    daemon = None
    try:
        run("ip", "link", "add", host_veth, "type", "veth", "peer", "name", peer_veth)
        run("ip", "link", "set", peer_veth, "netns", netns)
        run("ip", "addr", "add", f"{host_underlay}/30", "dev", host_veth)
        run("ip", "link", "set", host_veth, "up")
        run("ip", "addr", "add", f"{peer_underlay}/30", "dev", peer_veth, netns=netns)
        run("ip", "link", "set", peer_veth, "up", netns=netns)
        run("ip", "link", "set", "lo", "up", netns=netns)
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", netns, "wireguard-go", "-f", INTERFACE],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "netns", "exec", netns, "wg", "show", INTERFACE], capture_output=True).returncode:
            assert daemon.poll() is None, daemon.stderr.read().decode()
            assert time.monotonic() < deadline, "wireguard-go did not bring up its interface"
            time.sleep(0.05)
        private = run("wg", "genkey").strip()
        public = run("wg", "pubkey", stdin=private + "\n").strip()
        key_file = tmp_path / "peer.key"
        key_file.write_text(private + "\n")
        key_file.chmod(0o600)
        run("wg", "set", INTERFACE, "private-key", str(key_file), "listen-port", str(listen_port), netns=netns)
        run("ip", "addr", "add", tunnel_address, "dev", INTERFACE, netns=netns)
        run("ip", "link", "set", INTERFACE, "up", netns=netns)
        yield WireGuardGo(netns, base64.b64decode(public), host_veth)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_veth], capture_output=True)
