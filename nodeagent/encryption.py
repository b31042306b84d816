"""Transparent encryption between nodes (`--encryption wireguard`), as Cilium does it.

Invariants a reader must keep:
- The node's private key is made once, in `<state_dir>/wireguard.key` (mode 0600, written whole and then
  linked into place, so a crash leaves no half key and two starts cannot both make one), and read back on
  every restart: the node keeps its identity, and
  peers that still hold its public key re-handshake with it without waiting for the Node to change.
- The public key is published on the Node (`network.cilium.io/wg-pub-key`, Cilium's annotation) when the
  agent registers it; every other Node with a key becomes a WireGuard peer: its InternalIP the endpoint,
  its InternalIP and its podCIDR the allowed IPs.
- Nothing crosses the underlay in clear: a datagram for a node without a published key is dropped and
  counted (`drop.wireguard-no-key`).
- Pods see an MTU lowered by WireGuard's overhead, so what they send fits once sealed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from podnet.nodeagent.config import AgentConfig
from podnet.overlay.pipeline.forward import Pipeline
from podnet.overlay.pipeline.model import POD_MTU, Encapsulation, Stage
from podnet.overlay.tunnel import Tunnel
from podnet.overlay.wireguard import crypto
from podnet.overlay.wireguard.inner import IPV4_UDP_HEADER
from podnet.overlay.wireguard.messages import TRANSPORT_HEADER_SIZE
from podnet.overlay.wireguard.tunnel import OVERHEAD, WireGuardTunnel

log = logging.getLogger(__name__)

WG_PUBKEY_ANNOTATION = "network.cilium.io/wg-pub-key"
KEY_FILE = "wireguard.key"
WIREGUARD = "wireguard"


def encrypted(config: AgentConfig) -> bool:
    return config.encryption == WIREGUARD


def private_key(state_path: Path) -> bytes:
    """The node's WireGuard private key, made on first use; stored base64 as `wg genkey` prints it."""
    path = state_path / KEY_FILE
    if not path.exists():
        temporary = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(base64.b64encode(crypto.private_bytes(crypto.X25519PrivateKey.generate())).decode() + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)  # whole or not at all, and only if no other start made one meanwhile
        os.unlink(temporary)
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by others: chmod 600 it")
    try:
        raw = base64.b64decode(path.read_text().strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{path} does not hold a base64 WireGuard private key")
    return raw


def node_annotations(config: AgentConfig) -> dict[str, str]:
    """What the agent adds to its Node's annotations: its public key when it encrypts."""
    if not encrypted(config):
        return {}
    public = crypto.public_bytes(crypto.private_key(private_key(config.state_path)))
    return {WG_PUBKEY_ANNOTATION: base64.b64encode(public).decode()}


def pod_mtu(config: AgentConfig) -> int:
    return POD_MTU - OVERHEAD if encrypted(config) else POD_MTU


def underlay(config: AgentConfig, pipeline: Pipeline, on_batch: Callable[[list[tuple[bytes, str]]], None]) -> Tunnel:
    """The tunnel the pipeline's datagrams go through: the plain one on the encapsulation's port, or
    WireGuard around it (whose stages the pipeline's traces then show)."""
    fou = pipeline.node.encapsulation is Encapsulation.FOU
    port = config.fou_port if fou else config.vxlan_port
    if not encrypted(config):
        return Tunnel(config.address, port, on_batch=on_batch, whole_runs=True)
    tunnel = WireGuardTunnel(config.address, private_key(config.state_path), port=config.wireguard_port,
                             inner_port=port, bare=fou, on_batch=on_batch)
    pipeline.carrier_stage = lambda direction, address, datagram: _stage(tunnel, direction, address, datagram)
    return tunnel


def _stage(tunnel: WireGuardTunnel, direction: str, address: str, datagram: bytes) -> Stage:
    """What WireGuard does with a traced datagram: the peer, its session's age and the sizes."""
    peer = tunnel.peers.get(address)
    if direction == "decap":
        session = tunnel.session_of(address)
        age = f", session key {tunnel.now() - session.created:.1f} s old" if session is not None else ""
        name = peer.name if peer is not None else "?"
        return Stage("wireguard-decrypt", f"from {name} ({address}:{tunnel.peer_port}){age}: authenticated, "
                                          f"counter new to the replay window, source in the peer's allowed IPs; "
                                          f"{len(datagram)} B datagram inside")
    if peer is None:
        return Stage("wireguard-encrypt", f"{address} has published no WireGuard key: dropped, never sent in clear")
    inner = len(datagram) + (0 if tunnel.bare else IPV4_UDP_HEADER)
    sealed = TRANSPORT_HEADER_SIZE + -(-inner // 16) * 16 + 16
    where = f"to {peer.name} ({address}:{tunnel.peer_port}), key {base64.b64encode(peer.public_key).decode()[:8]}…"
    session = tunnel.session_of(address)
    if session is None or session.expired(tunnel.now()):
        return Stage("wireguard-encrypt", f"{where}: no session yet, the datagram waits for the handshake")
    what = "packet" if tunnel.bare else "VXLAN datagram in its IPv4/UDP header"
    return Stage("wireguard-encrypt",
                 f"{where}, session key {tunnel.now() - session.created:.1f} s old "
                 f"({'initiated' if session.initiator else 'answered'} here), counter {session.send_counter}: "
                 f"{inner} B {what} sealed in {sealed} B of transport data, "
                 f"{sealed + IPV4_UDP_HEADER} B on the underlay")


def carried_port(tunnel: Tunnel) -> int:
    """The port of the tunnel's own datagrams (VXLAN's or foo-over-UDP's), inside WireGuard or not."""
    return tunnel.inner_port if isinstance(tunnel, WireGuardTunnel) else tunnel.port


def subscribe(tunnel: Tunnel, decrypted: bool) -> asyncio.Queue:
    """A capture's queue: what the tunnel puts on the wire, or what travels inside WireGuard."""
    if not decrypted:
        return tunnel.subscribe()
    if not isinstance(tunnel, WireGuardTunnel):
        raise ValueError("this node does not encrypt (--encryption none): its underlay is the decrypted traffic")
    return tunnel.subscribe_decrypted()


def published_key(node: dict) -> bytes | None:
    text = ((node.get("metadata") or {}).get("annotations") or {}).get(WG_PUBKEY_ANNOTATION)
    try:
        raw = base64.b64decode(text or "", validate=True)
    except binascii.Error:
        return None
    return raw if len(raw) == 32 else None


def learn_peer(tunnel: Tunnel, name: str, address: str | None, node: dict | None) -> None:
    """One Node event for the WireGuard peers: a node with an address and a key is (re)configured, one
    that went away or has no key any more is forgotten (and traffic to it dropped)."""
    if not isinstance(tunnel, WireGuardTunnel):
        return
    key = published_key(node) if node is not None else None
    if node is None or address is None or key is None:
        for peer in [p for p in tunnel.peers.values() if p.name == name]:
            tunnel.remove_peer(peer.address)
            log.info("wireguard: node %s has no key any more: traffic to it is dropped", name)
        return
    for moved in [p for p in tunnel.peers.values() if p.name == name and p.address != address]:
        tunnel.remove_peer(moved.address)
    pod_cidr = (node.get("spec") or {}).get("podCIDR")
    if tunnel.set_peer(name, address, key, pod_cidr):
        log.info("wireguard: peer %s at %s:%d, key %s, allowed %s/32 %s", name, address, tunnel.peer_port,
                 base64.b64encode(key).decode(), address, pod_cidr or "")
