"""What the UI follows while someone looks: the API objects (informers, with the user's token) and the
node agents (flow logs followed live, tunnel counters read every few seconds, the processes of the local
cluster from its state file). Each feed bumps a `Changes` version when something moved; the page's event
streams wait on it and send a new view when it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from pathlib import Path

from podnet.backends import ROUTING_BACKENDS
from podnet.client import ApiClient, Informer
from podnet.cluster.supervisor import ClusterState, SupervisorError, healthy
from podnet.kubeconfig import ClientTls
from podnet.nodeagent.policy.flowlog import FlowRecord
from podnet.observe.policy import home_sockets, read_flows
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcError, call_once
from podnet.ui import model

log = logging.getLogger(__name__)

KINDS = ("nodes", "pods", "services", "namespaces")
FLOW_MEMORY = 5000  # connections' verdicts the UI keeps (the agents' own rings start anew with them)
FLOW_REPLAY = 1000  # verdicts asked of an agent's ring when (re)connecting to it


class Changes:
    """A version number that waiters can wait to see move."""

    def __init__(self) -> None:
        self.version = 0
        self._moved = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._moved.set()
        self._moved = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> int:
        if self.version == seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), timeout)
        return self.version


class ClusterFeed:
    """Informers on nodes, pods, Services and Namespaces with one user's token: what that user sees."""

    def __init__(self, server: str, token: str, tls: ClientTls | None, changes: Changes):
        self.client = ApiClient(server, token, tls=tls, user_agent="podnet-ui")
        self.informers = {kind: Informer(self.client, kind) for kind in KINDS}
        for informer in self.informers.values():
            informer.add_handler(lambda *_: changes.bump())
        self._tasks = [asyncio.create_task(i.run()) for i in self.informers.values()]

    def objects(self, kind: str) -> list[dict]:
        return list(self.informers[kind].store.values())

    @property
    def synced(self) -> bool:
        return all(i.synced for i in self.informers.values())

    async def wait_synced(self, timeout: float) -> None:
        await asyncio.gather(*(i.wait_synced(timeout) for i in self.informers.values()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.close()


class AgentFeed:
    """The node agents and processes of the local cluster in `home`."""

    def __init__(self, home: Path, changes: Changes, *, counters_interval: float = 2.0,
                 process_interval: float = 0.5):
        self.home = Path(home)
        self.process_interval = process_interval
        self.changes = changes
        self.socket_for = home_sockets(self.home)
        self.counters_interval = counters_interval
        self.flows: OrderedDict[tuple, FlowRecord] = OrderedDict()
        self.processes: list[model.ProcessState] = []
        self.rates: dict[str, dict[str, float]] = {}
        self.bgp: dict[str, list[dict]] = {}  # node -> its speaker's sessions, when the cluster routes by BGP
        self.backend = ROUTING_BACKENDS["vxlan"]  # the cluster's routing backend, as cluster.json names it
        self._followed: dict[str, asyncio.Task] = {}
        self._checks: dict[str, dict] = {}  # running process -> its health check (cluster.json's)
        self._health: dict[str, bool] = {}

    def nodes(self) -> list[str]:
        return [p.name.partition("/")[0] for p in self.processes if p.name.endswith("/agent")]

    def add_flow(self, record: FlowRecord) -> bool:
        key = (record.node, record.time, record.direction, record.protocol, record.src, record.src_port,
               record.dst, record.port)
        if key in self.flows:
            return False
        self.flows[key] = record
        while len(self.flows) > FLOW_MEMORY:
            self.flows.popitem(last=False)
        return True

    def records(self) -> list[FlowRecord]:
        return list(self.flows.values())

    def _read_processes(self) -> None:
        """The processes of cluster.json, each running or not by its PID (read often: cheap), with its health
        check's last answer (asked less often, by `_check_health`)."""
        try:
            state = ClusterState.load(self.home)
        except SupervisorError:
            self._checks = {}
            processes: list[model.ProcessState] = []
        else:
            self.backend = ROUTING_BACKENDS.get(state.topology.get("backend"), ROUTING_BACKENDS["vxlan"])
            self._checks = {p.name: p.health for p in state.processes if p.alive}
            processes = [model.ProcessState(p.name, p.alive, self._health.get(p.name) if p.alive else None)
                         for p in state.processes]
        if processes != self.processes:
            self.processes = processes
            self.changes.bump()

    async def _check_health(self) -> None:
        checks = dict(self._checks)
        answers = await asyncio.gather(*(healthy(check, timeout=1.0) for check in checks.values()))
        self._health = dict(zip(checks, answers, strict=True))

    async def _follow(self, node: str) -> None:
        """The node's flow log, live; after the agent goes away, again once it is back."""
        while True:
            try:
                async for record in read_flows(self.socket_for(node), limit=FLOW_REPLAY, follow=True):
                    if self.add_flow(record):
                        self.changes.bump()
            except (OSError, RpcError, ValueError) as exc:
                log.debug("flow log of %s: %s", node, exc)
            await asyncio.sleep(1.0)

    async def _counters(self) -> dict[str, dict[str, int]]:
        async def one(node: str) -> tuple[str, dict | None]:
            try:
                return node, await call_once(self.socket_for(node), AgentMethod.COUNTERS, timeout=1.0)
            except (OSError, RpcError, TimeoutError):
                return node, None

        found = await asyncio.gather(*(one(node) for node in self.nodes()))
        return {node: counters for node, counters in found if counters is not None}

    async def _sessions(self) -> dict[str, list[dict]]:
        async def one(node: str) -> tuple[str, list | None]:
            try:
                return node, await call_once(str(self.home / "nodes" / node / "bgp.sock"), "peers", timeout=1.0)
            except (OSError, RpcError, TimeoutError):
                return node, None

        found = await asyncio.gather(*(one(node) for node in self.nodes()))
        return {node: peers for node, peers in found if peers is not None}

    async def run(self) -> None:
        before: dict[str, dict[str, int]] = {}
        then = next_counters = 0.0
        while True:
            self._read_processes()
            for node in self.nodes():
                if node not in self._followed:
                    self._followed[node] = asyncio.create_task(self._follow(node))
            if time.monotonic() >= next_counters:
                now_counters = await self._counters()
                now = time.monotonic()
                fresh = model.rates(before, now_counters, now - then)
                before, then, next_counters = now_counters, now, now + self.counters_interval
                sessions = await self._sessions() if self.backend.runs_speaker else {}
                await self._check_health()
                if fresh != self.rates or sessions != self.bgp:
                    self.rates, self.bgp = fresh, sessions
                    self.changes.bump()
            await asyncio.sleep(self.process_interval)

    async def close(self) -> None:
        for task in self._followed.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
