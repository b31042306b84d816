"""The BGP speaker of one node: the asyncio adapter around the pure FSM, messages and RIB.

It listens on the node address, peers with every other node (full mesh from the API's Node list) or with
configured peers, originates the node's podCIDR, and installs the best routes into its node agent over
the agent's RPC (`routes.apply`, source "bgp"), resending them whenever the agent comes back. A local RPC
socket `<state_dir>/bgp.sock` answers `ping`, `info`, `peers` and `rib`.

What peers announce passes the import policy (policy.py: cluster-CIDR prefixes with the peer as next hop,
at most `max_prefixes` a peer, counted in `counters` when refused); connections are taken only from peers'
addresses, and with a password every segment with a peer is signed with TCP MD5 (md5.py).

Connection collisions (both speakers connecting at once) keep the connection that already carried the
peer's OPEN, else the one opened by the speaker with the higher BGP identifier, as RFC 4271 6.8 does; the
peer's address stands in for its identifier until its OPEN has arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.overlay.bgp import fsm as f
from podnet.overlay.bgp import messages as m
from podnet.overlay.bgp.md5 import set_password
from podnet.overlay.bgp.policy import DEFAULT_MAX_PREFIXES, ImportPolicy, filter_update, over_limit
from podnet.overlay.bgp.rib import BestChanged, PeerInfo, Rib
from podnet.overlay.bgp.rib import Path as RibPath

from podnet.client import ApiClient, Informer
from podnet.kubeconfig import ClientTls
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcClient, RpcError, RpcServer
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DEFAULT_ASN = 64512
CONNECT_TIMEOUT = 3.0
AGENT_RETRY = 0.5
UNKNOWN_PEER_GRACE = 2.0
# Without graceful restart there is nothing to wait for; with it, a restarted speaker waits for End-of-RIB
# from its peers (at most this long) before it replaces the routes its agent still holds.
MAX_SELECTION_DEFERRAL = 60.0


def default_port() -> int:
    return 179 if hasattr(os, "geteuid") and os.geteuid() == 0 else 1790


@dataclass(frozen=True, slots=True)
class PeerConfig:
    address: str
    port: int
    asn: int | None = None  # None: our own AS (iBGP)

    @classmethod
    def parse(cls, text: str, default_port: int) -> PeerConfig:
        """ADDR[:PORT][/ASN]"""
        rest, _, asn = text.partition("/")
        address, _, port = rest.partition(":")
        m.Prefix.parse(address)  # validates the address
        return cls(address, int(port) if port else default_port, int(asn) if asn else None)


@dataclass(frozen=True, slots=True)
class SpeakerConfig:
    node: str
    address: str
    asn: int = DEFAULT_ASN
    port: int = 1790
    peers: tuple[PeerConfig, ...] = ()  # when empty and `server` is set: every other Node, full mesh
    server: str | None = None
    token: str | None = None
    tls: ClientTls | None = None  # the API server's CA (and our certificate)
    fallbacks: tuple[str, ...] = ()  # the cluster's other API servers, tried when `server` does not answer
    agent_socket: str | None = None
    state_dir: Path | None = None
    hold_time: int = 9
    graceful_restart_time: int = 120
    pod_cidr: str | None = None
    connect_retry_time: float = 5.0
    idle_hold_time: float = 1.0
    router_id: str | None = None
    cluster_cidr: str | None = "10.244.0.0/16"  # routes outside it are refused (None: any prefix)
    max_prefixes: int = DEFAULT_MAX_PREFIXES
    any_next_hop: bool = False  # take routes whose next hop is not the announcing peer (from a reflector)
    password: bytes | None = None  # TCP MD5 signatures with every peer (RFC 2385)

    def __post_init__(self) -> None:
        m.Prefix.parse(self.address)
        if self.max_prefixes < 1:
            raise ValueError("the prefix limit must be at least 1")
        # The FSM's own checks of the timers, before any peer exists.
        f.SessionConfig(self.asn, self.identifier, hold_time=self.hold_time,
                        graceful_restart_time=self.graceful_restart_time)
        if self.pod_cidr:
            m.Prefix.parse(self.pod_cidr)

    @property
    def import_policy(self) -> ImportPolicy:
        cidr = m.Prefix.parse(self.cluster_cidr) if self.cluster_cidr else None
        return ImportPolicy(cidr, self.max_prefixes, self.any_next_hop)

    @property
    def identifier(self) -> str:
        return self.router_id or self.address

    @property
    def rpc_socket(self) -> Path | None:
        return self.state_dir / "bgp.sock" if self.state_dir else None


def _address_key(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split("."))


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    outbound: bool
    task: asyncio.Task | None = None

    def close(self) -> None:
        self.writer.close()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


@dataclass(eq=False)
class _Peer:
    config: PeerConfig
    fsm: f.Fsm
    info: PeerInfo | None = None
    connection: _Connection | None = None
    connecting: asyncio.Task | None = None
    timer: asyncio.TimerHandle | None = None
    adj_out: dict[m.Prefix, tuple[m.Attribute, ...]] = field(default_factory=dict)
    end_of_rib: bool = False
    treat_as_withdraw: int = 0


class Speaker:
    def __init__(self, config: SpeakerConfig):
        self.config = config
        self.rib = Rib(config.asn, config.identifier)
        self.peers: dict[str, _Peer] = {}
        self.port = config.port
        self.pod_cidr: m.Prefix | None = None
        self._server: asyncio.AbstractServer | None = None
        self._unknown: dict[str, _Connection] = {}  # connections from addresses not (yet) peers
        self._install_wanted = asyncio.Event()
        self._installed: list[dict] | None = None
        self._deferring = config.graceful_restart_time > 0
        self._started_at = 0.0
        self._loop = asyncio.get_running_loop()
        self.policy = config.import_policy
        self.counters = {"updates_received": 0, "notifications_sent": 0, "agent_applies": 0,
                         "routes_rejected.next-hop-not-peer": 0, "routes_rejected.outside-cluster-cidr": 0,
                         "sessions_closed.max-prefixes": 0}

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._started_at = self._loop.time()
        self._server = await asyncio.start_server(self._accept, self.config.address, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        for peer in self.config.peers:
            self.add_peer(peer)
        if self.config.pod_cidr:
            self.originate(self.config.pod_cidr)
        log.info("bgp: listening", extra={"fields": {"address": self.config.address, "port": self.port}})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in self._unknown.values():
            connection.close()
        self._unknown.clear()
        for address in list(self.peers):
            self.remove_peer(address)
        # Let the Cease NOTIFICATIONs reach the peers before the connections close.
        await asyncio.sleep(0)

    def add_peer(self, peer_config: PeerConfig, *, mesh: bool = False) -> None:
        """Starts a session. Between two speakers of the mesh only the one with the higher address
        connects, so they never collide; configured peers (which may be anything) are always connected to."""
        if peer_config.address in self.peers or peer_config.address == self.config.address:
            return
        session = f.SessionConfig(
            local_asn=self.config.asn, router_id=self.config.identifier,
            peer_asn=peer_config.asn if peer_config.asn is not None else self.config.asn,
            hold_time=self.config.hold_time, connect_retry_time=self.config.connect_retry_time,
            idle_hold_time=self.config.idle_hold_time, graceful_restart_time=self.config.graceful_restart_time,
            passive=mesh and _address_key(self.config.address) < _address_key(peer_config.address),
        )
        peer = _Peer(peer_config, f.Fsm(session))
        self.peers[peer_config.address] = peer
        self._sign_with(peer_config.address, self.config.password or b"")
        self._execute(peer, peer.fsm.start(self._loop.time()))
        waiting = self._unknown.pop(peer_config.address, None)
        if waiting is not None:
            self._offer(peer, waiting)

    def remove_peer(self, address: str) -> None:
        peer = self.peers.get(address)
        if peer is None:
            return
        self._execute(peer, peer.fsm.stop(self._loop.time()))
        del self.peers[address]
        if peer.connecting is not None:
            peer.connecting.cancel()
        if peer.timer is not None:
            peer.timer.cancel()
        self._apply_changes(self.rib.drop_peer(address))
        self._check_deferral()
        self._sign_with(address, b"")

    def _sign_with(self, address: str, password: bytes) -> None:
        """Sets (or with b"" removes) the peer's password on the listening socket, whose accepted
        connections inherit it."""
        if self.config.password and self._server is not None:
            for sock in self._server.sockets:
                set_password(sock, address, password)  # type: ignore[arg-type]

    def originate(self, cidr: str) -> None:
        prefix = m.Prefix.parse(cidr)
        if prefix == self.pod_cidr:
            return
        changes = self.rib.stop_originating(self.pod_cidr) if self.pod_cidr else []
        self.pod_cidr = prefix
        self._apply_changes(changes + self.rib.originate(prefix, self.config.address, self._loop.time()))

    # ---- connections ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")[0]
        peer = self.peers.get(address)
        connection = _Connection(reader, writer, outbound=False)
        if peer is not None:
            self._offer(peer, connection)
            return
        # A new node's speaker often connects before this speaker has seen its Node: hold the connection
        # a moment rather than refuse it and leave both sides waiting for their ConnectRetry timers.
        previous = self._unknown.pop(address, None)
        if previous is not None:
            previous.close()
        self._unknown[address] = connection
        self._loop.call_later(UNKNOWN_PEER_GRACE, self._refuse, address, connection)

    def _refuse(self, address: str, connection: _Connection) -> None:
        if self._unknown.get(address) is connection:
            del self._unknown[address]
            log.info("bgp: refusing a connection from %s, not a peer", address)
            connection.close()

    async def _connect(self, peer: _Peer) -> None:
        try:
            reader, writer = await asyncio.wait_for(self._open(peer.config), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            peer.connecting = None
            if peer.connection is None and self.peers.get(peer.config.address) is peer:
                log.debug("bgp: connect to %s failed: %s", peer.config.address, exc)
                self._execute(peer, peer.fsm.connection_lost(self._loop.time()))
            return
        peer.connecting = None
        if self.peers.get(peer.config.address) is not peer:
            writer.close()
            return
        self._offer(peer, _Connection(reader, writer, outbound=True))

    async def _open(self, peer: PeerConfig) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not self.config.password:
            return await asyncio.open_connection(peer.address, peer.port, local_addr=(self.config.address, 0))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind((self.config.address, 0))
            set_password(sock, peer.address, self.config.password)  # before the SYN, which is signed too
            await self._loop.sock_connect(sock, (peer.address, peer.port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    def _offer(self, peer: _Peer, connection: _Connection) -> None:
        """A connection to or from the peer; with two at once, both speakers keep the same one. An
        outbound attempt still under way when an inbound connection is taken is left to finish and meets
        this rule too: cancelling it could close a connection the peer has already chosen."""
        current = peer.connection
        if current is not None:
            remote_id = peer.fsm.peer_open.router_id if peer.fsm.peer_open else peer.config.address
            keep_outbound = _address_key(self.config.identifier) > _address_key(remote_id)
            # A connection that has carried the peer's OPEN is kept whatever the identifiers say: the peer
            # may already be Established on it and would close the newcomer.
            if peer.fsm.state >= f.State.OPEN_CONFIRM or current.outbound == keep_outbound:
                log.debug("bgp: collision with %s: keeping the %s connection", peer.config.address,
                          "outbound" if current.outbound else "inbound")
                connection.writer.close()
                return
            log.debug("bgp: collision with %s: taking the %s connection", peer.config.address,
                      "outbound" if connection.outbound else "inbound")
            self._execute(peer, peer.fsm.connection_lost(self._loop.time()))
        peer.connection = connection
        connection.task = asyncio.create_task(self._read(peer, connection))
        self._execute(peer, peer.fsm.connection_made(self._loop.time()))

    async def _read(self, peer: _Peer, connection: _Connection) -> None:
        try:
            while data := await connection.reader.read(65536):
                self._execute(peer, peer.fsm.receive_data(data, self._loop.time()))
                if peer.connection is not connection:
                    return
        except (ConnectionError, OSError):
            pass
        if peer.connection is connection:
            log.debug("bgp: %s closed the %s connection", peer.config.address,
                      "outbound" if connection.outbound else "inbound")
            peer.connection = None
            connection.writer.close()
            self._execute(peer, peer.fsm.connection_lost(self._loop.time()))

    def _disconnect(self, peer: _Peer) -> None:
        if peer.connection is not None:
            connection, peer.connection = peer.connection, None
            connection.close()

    # ---- FSM actions -------------------------------------------------------------------------------

    def _execute(self, peer: _Peer, actions: Iterable[f.Action]) -> None:
        now = self._loop.time()
        for action in actions:
            if isinstance(action, f.Send):
                if peer.connection is not None:
                    peer.connection.writer.write(action.data)
                    if action.data[18] == m.MessageType.NOTIFICATION:
                        self.counters["notifications_sent"] += 1
                        notification = m.decode(action.data)
                        level = logging.INFO if notification.code == m.ErrorCode.CEASE else logging.WARNING
                        log.log(level, "bgp: NOTIFICATION to %s: %s", peer.config.address, notification)
            elif isinstance(action, f.Connect):
                if peer.connecting is None and peer.connection is None:
                    peer.connecting = asyncio.create_task(self._connect(peer))
            elif isinstance(action, f.Disconnect):
                self._disconnect(peer)
            elif isinstance(action, f.SessionUp):
                self._session_up(peer, action)
            elif isinstance(action, f.SessionDown):
                log.info("bgp: session with %s down: %s", peer.config.address, action.reason)
                peer.adj_out.clear()
            elif isinstance(action, f.RoutesReceived):
                self._routes_received(peer, action, now)
            elif isinstance(action, f.EndOfRib):
                peer.end_of_rib = True
                self._check_deferral()
            elif isinstance(action, f.RoutesStale):
                self._apply_changes(self.rib.mark_stale(peer.config.address))
            elif isinstance(action, f.StaleRoutesDropped):
                self._apply_changes(self.rib.drop_stale(peer.config.address))
            elif isinstance(action, f.PeerRoutesDropped):
                self._apply_changes(self.rib.drop_peer(peer.config.address))
        self._rearm(peer)

    def _rearm(self, peer: _Peer) -> None:
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        deadline = peer.fsm.next_deadline()
        if deadline is not None and self.peers.get(peer.config.address) is peer:
            peer.timer = self._loop.call_at(deadline, self._on_timer, peer)

    def _on_timer(self, peer: _Peer) -> None:
        peer.timer = None
        self._execute(peer, peer.fsm.handle_timer(self._loop.time()))

    def _session_up(self, peer: _Peer, up: f.SessionUp) -> None:
        asn = up.peer_open.asn
        peer.info = PeerInfo(peer.config.address, asn, up.peer_open.router_id, asn == self.config.asn)
        log.info("bgp: session with %s established", peer.config.address,
                 extra={"fields": {"asn": asn, "hold_time": up.hold_time}})
        peer.adj_out.clear()
        updates = self._updates_for(peer, self.rib.best.keys())
        self._execute_sends(peer, updates + [m.encode(m.END_OF_RIB)])

    def _execute_sends(self, peer: _Peer, updates: list[bytes]) -> None:
        for action in peer.fsm.announce(updates, self._loop.time()):
            if peer.connection is not None:
                peer.connection.writer.write(action.data)

    def _routes_received(self, peer: _Peer, received: f.RoutesReceived, now: float) -> None:
        self.counters["updates_received"] += 1
        if peer.info is None or peer.fsm.state != f.State.ESTABLISHED:
            return  # e.g. an UPDATE read together with one that closed the session
        if received.error is not None:
            peer.treat_as_withdraw += 1
            log.warning("bgp: UPDATE from %s treated as withdraw: %s", peer.config.address, received.error)
        next_hop = next((a.address for a in received.attributes if isinstance(a, m.NextHop)), None)
        filtered = filter_update(self.policy, peer.config.address, received.announced, next_hop)
        for reason, count in filtered.rejected.items():
            self.counters[f"routes_rejected.{reason}"] += count
            log.warning("bgp: refused %d route(s) from %s: %s (next hop %s)", count, peer.config.address, reason,
                        next_hop)
        # A refused route is withdrawn too: the peer's earlier announcement of it is no longer believed.
        rejected = [p for p in received.announced if p not in filtered.accepted]
        self._apply_changes(self.rib.receive(peer.info, filtered.accepted, received.attributes,
                                             [*received.withdrawn, *rejected], now))
        error = over_limit(self.policy, len(self.rib.adj_in.get(peer.config.address, {})))
        if error is not None:
            self.counters["sessions_closed.max-prefixes"] += 1
            log.warning("bgp: %s sent more than %d prefixes: closing the session", peer.config.address,
                        self.policy.max_prefixes)
            self._execute(peer, peer.fsm.close_session(error, now))

    # ---- export ------------------------------------------------------------------------------------

    def _export(self, peer: _Peer, path: RibPath | None) -> tuple[m.Attribute, ...] | None:
        """The attributes `path` is advertised to `peer` with, or None when it is not advertised."""
        if path is None or peer.info is None or path.peer == peer.config.address:
            return None
        to_ibgp = peer.info.ibgp
        if to_ibgp and not path.local and path.ibgp:
            return None  # iBGP routes are not passed to other iBGP peers (no route reflection here)
        as_path = path.as_path if to_ibgp else path.as_path.prepend(self.config.asn)
        attributes: tuple[m.Attribute, ...] = (m.OriginAttribute(path.origin), as_path,
                                               m.NextHop(self.config.address))
        if to_ibgp:
            attributes += (m.LocalPref(path.local_pref),)
        attributes += tuple(m.OtherAttribute(a.type_code, a.value, a.flags | m.PARTIAL)
                            for a in path.attributes if isinstance(a, m.OtherAttribute) and a.flags & m.OPTIONAL)
        return attributes

    def _updates_for(self, peer: _Peer, prefixes: Iterable[m.Prefix]) -> list[bytes]:
        announce: dict[tuple[m.Attribute, ...], list[m.Prefix]] = {}
        withdraw: list[m.Prefix] = []
        for prefix in prefixes:
            attributes = self._export(peer, self.rib.best.get(prefix))
            if attributes == peer.adj_out.get(prefix):
                continue
            if attributes is None:
                del peer.adj_out[prefix]
                withdraw.append(prefix)
            else:
                peer.adj_out[prefix] = attributes
                announce.setdefault(attributes, []).append(prefix)
        updates = m.build_updates((), [], withdraw) if withdraw else []
        for attributes, nlri in announce.items():
            updates += m.build_updates(attributes, nlri)
        return updates

    def _apply_changes(self, changes: list[BestChanged]) -> None:
        if not changes:
            return
        prefixes = [change.prefix for change in changes]
        for peer in self.peers.values():
            if peer.fsm.state == f.State.ESTABLISHED:
                self._execute_sends(peer, self._updates_for(peer, prefixes))
        self._install_wanted.set()

    # ---- installing into the node agent ----------------------------------------------------------

    def _check_deferral(self) -> None:
        if self._deferring and all(p.end_of_rib for p in self.peers.values()):
            self._end_deferral("End-of-RIB from every peer")

    def _end_deferral(self, why: str) -> None:
        if self._deferring:
            self._deferring = False
            log.info("bgp: installing routes (%s)", why)
            self._install_wanted.set()

    def desired_routes(self) -> list[dict]:
        return sorted(({"prefix": str(prefix), "next_hop": path.next_hop}
                       for prefix, path in self.rib.best.items() if not path.local),
                      key=lambda r: (m.Prefix.parse(r["prefix"]), r["next_hop"]))

    async def install_routes(self, shutdown: asyncio.Event) -> None:
        """Keeps the agent's "bgp" routes equal to the best routes; reconnects and resends when the agent
        restarts (a new agent starts without them)."""
        socket_path = self.config.agent_socket
        if not socket_path:
            return
        deferral = min(float(self.config.graceful_restart_time), MAX_SELECTION_DEFERRAL)
        self._loop.call_at(self._started_at + deferral, self._end_deferral, "selection deferral timer")
        client: RpcClient | None = None
        failure = ""
        try:
            while not shutdown.is_set():
                # Wakes on a change, and every AGENT_RETRY anyway to notice a lost agent or retry a failure.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._install_wanted.wait(), AGENT_RETRY)
                self._install_wanted.clear()
                if self._deferring:
                    continue
                try:
                    if client is None or not client.connected:
                        self._installed = None
                        if client is not None:
                            await client.close()
                        client = None
                        client = await RpcClient(socket_path).connect()
                    desired = self.desired_routes()
                    if desired != self._installed:
                        await client.call(AgentMethod.ROUTES_APPLY, {"source": "bgp", "routes": desired}, timeout=5.0)
                        self._installed = desired
                        self.counters["agent_applies"] += 1
                    failure = ""
                except (OSError, TimeoutError, RpcError) as exc:
                    if str(exc) != failure:
                        failure = str(exc)
                        log.warning("bgp: cannot install routes into the node agent: %s", exc)
                    if client is not None:
                        await client.close()
                    client = None
        finally:
            if client is not None:
                await client.close()

    # ---- the API: peers and podCIDR from Nodes ---------------------------------------------------

    def on_node(self, event: str, old: dict | None, new: dict | None) -> None:
        obj = new if event != "DELETED" else old
        if not obj:
            return
        name = obj.get("metadata", {}).get("name")
        if name == self.config.node:
            cidr = (obj.get("spec") or {}).get("podCIDR")
            if event != "DELETED" and cidr and not self.config.pod_cidr:
                self.originate(cidr)
            return
        if self.config.peers:
            return
        address = _internal_ip(obj)
        old_address = _internal_ip(old) if old else None
        if old_address and (event == "DELETED" or old_address != address):
            self.remove_peer(old_address)
        if event != "DELETED" and address:
            self.add_peer(PeerConfig(address, self.config.port), mesh=True)

    # ---- local RPC -----------------------------------------------------------------------------------

    def rpc_handlers(self) -> dict[str, Any]:
        async def info(params: Any) -> dict:
            return {"node": self.config.node, "address": self.config.address, "port": self.port,
                    "asn": self.config.asn, "router_id": self.config.identifier,
                    "pod_cidr": str(self.pod_cidr) if self.pod_cidr else None,
                    "installing": not self._deferring, "counters": dict(self.counters)}

        async def peers(params: Any) -> list[dict]:
            return [self.peer_status(peer) for peer in self.peers.values()]

        async def rib(params: Any) -> list[dict]:
            return self.rib_entries()

        return {"info": info, "peers": peers, "rib": rib}

    def peer_status(self, peer: _Peer) -> dict:
        now = self._loop.time()
        up = peer.fsm.established_at
        table = self.rib.adj_in.get(peer.config.address, {})
        stale = sum(1 for p in table.values() if p.stale) if peer.fsm.stale else 0
        return {
            "peer": peer.config.address, "port": peer.config.port,
            "asn": peer.info.asn if peer.info else peer.config.asn or self.config.asn,
            "state": peer.fsm.state.name, "uptime": round(now - up, 1) if up is not None else None,
            "hold_time": peer.fsm.hold_time, "prefixes_received": len(table) - stale, "prefixes_stale": stale,
            "stale": peer.fsm.stale, "treat_as_withdraw": peer.treat_as_withdraw,
            "last_error": peer.fsm.last_error,
        }

    def rib_entries(self) -> list[dict]:
        now = self._loop.time()
        entries = []
        for path in self.rib.paths():
            best = self.rib.best.get(path.prefix) is path
            entries.append({
                "prefix": str(path.prefix), "next_hop": path.next_hop, "as_path": str(path.as_path),
                "peer": path.peer or "local", "best": best, "stale": path.stale,
                "state": ("stale" if path.stale else "best" if best else "candidate"),
                "age": round(now - path.learned_at, 1), "local_pref": path.local_pref,
                "origin": path.origin.name.lower(),
            })
        return sorted(entries, key=lambda e: (m.Prefix.parse(e["prefix"]), not e["best"], e["peer"]))


def _internal_ip(node: dict | None) -> str | None:
    for entry in ((node or {}).get("status") or {}).get("addresses") or []:
        if entry.get("type") == "InternalIP":
            return entry.get("address")
    return None


async def serve(config: SpeakerConfig, *, shutdown_trigger: asyncio.Event | None = None) -> None:
    shutdown = shutdown_trigger or asyncio.Event()
    speaker = Speaker(config)
    async with contextlib.AsyncExitStack() as stack:
        await speaker.start()
        stack.push_async_callback(speaker.close)
        if config.rpc_socket is not None:
            config.rpc_socket.parent.mkdir(parents=True, exist_ok=True)
            rpc = RpcServer(str(config.rpc_socket), speaker.rpc_handlers())
            await rpc.start()
            stack.push_async_callback(rpc.close)
        tasks = [asyncio.create_task(speaker.install_routes(shutdown))]
        if config.server:
            client = ApiClient(config.server, config.token, encoding="msgpack", tls=config.tls, fallbacks=config.fallbacks)
            stack.push_async_callback(client.close)
            informer = Informer(client, "nodes")
            informer.add_handler(speaker.on_node)
            tasks.append(asyncio.create_task(informer.run()))
        try:
            await shutdown.wait()
        finally:
            await cancel_and_wait(*tasks)
