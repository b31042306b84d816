"""NetworkPolicies at work: the objects they read, the static and the probed matrix, explanations of one
connection, and the nodes' flow logs (every verdict of the policy hook).

Agents are reached by their RPC socket, which `socket_for(node)` names (the cluster home's
`nodes/<node>/agent.sock` for a local cluster).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from podnet.api.ciliumpolicy import CILIUM_KINDS
from podnet.api.keys import object_key
from podnet.client import ApiClient, ApiError
from podnet.nodeagent.l7.explain import RequestExplanation, explain_request
from podnet.nodeagent.l7.verdict import ACCESS_DENIED_BODY
from podnet.nodeagent.policy import Explanation, Matrix, compile_objects, explain, static_matrix
from podnet.nodeagent.policy.evaluate import Evaluator
from podnet.nodeagent.policy.flowlog import FlowRecord
from podnet.nodeagent.policy.matrix import Cell
from podnet.observe import ObserveError
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcClient, RpcError

PROBE_TIMEOUT = 1.0  # seconds a probe waits: a policy drop is silence, so every denied cell costs this
PROBE_CONCURRENCY = 64
SELF_NOTE = "a pod reaching its own address loops back inside the pod and meets no policy"

SocketFor = Callable[[str], str]


def home_sockets(home: Path) -> SocketFor:
    """The agents of a local cluster: `<home>/nodes/<node>/agent.sock`."""
    return lambda node: str(Path(home) / "nodes" / node / "agent.sock")


def known_nodes(home: Path) -> list[str]:
    """Nodes with an agent socket under `<home>/nodes`."""
    root = Path(home) / "nodes"
    return sorted(p.parent.name for p in root.glob("*/agent.sock")) if root.is_dir() else []


# ---- the cluster as the policies see it ----------------------------------------------------------


async def cluster_objects(client: ApiClient) -> list[dict]:
    """Namespaces, Pods and NetworkPolicies, each carrying its kind (list items do not)."""
    objects = []
    for kind, resource in (
        ("Namespace", "namespaces"),
        ("Pod", "pods"),
        ("NetworkPolicy", "networkpolicies"),
    ):
        for item in (await client.list(resource)).get("items") or []:
            item["kind"] = kind
            objects.append(item)
    return objects


def running_pods(
    objects: Iterable[dict], namespaces: Iterable[str] | None = None
) -> dict[str, tuple[str, str]]:
    """ "ns/name" -> (pod IP, node) for Running pods with their own address, sorted by key."""
    wanted = set(namespaces) if namespaces else None
    pods = {}
    for obj in objects:
        if obj.get("kind") != "Pod":
            continue
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        if wanted is not None and meta.get("namespace") not in wanted:
            continue
        if status.get("phase") != "Running" or not status.get("podIP") or spec.get("hostNetwork"):
            continue
        if not spec.get("nodeName"):
            continue
        pods[object_key(obj)] = (status["podIP"], spec["nodeName"])
    return dict(sorted(pods.items()))


def static_evaluator(objects: Iterable[dict]) -> tuple[Evaluator, dict[str, str]]:
    """The policies compiled for every pod, and the policies the compiler refuses ("ns/name" -> why),
    which the agents do not enforce either."""
    compiler = compile_objects(objects)
    return compiler.evaluator(), dict(sorted(compiler.errors.items()))


# ---- probing through the agents -----------------------------------------------------------------


class Agents:
    """One RPC connection per node agent, opened on first use, shared by concurrent calls."""

    def __init__(self, socket_for: SocketFor):
        self.socket_for = socket_for
        self._clients: dict[str, RpcClient] = {}
        self._lock = asyncio.Lock()

    async def client(self, node: str) -> RpcClient:
        async with self._lock:
            client = self._clients.get(node)
            if client is None or not client.connected:
                client = await RpcClient(self.socket_for(node)).connect()
                self._clients[node] = client
            return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def __aenter__(self) -> Agents:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def probe_matrix(
    agents: Agents,
    pods: dict[str, tuple[str, str]],
    ports: Iterable[int],
    protocols: Iterable[str],
    *,
    timeout: float = PROBE_TIMEOUT,
    concurrency: int = PROBE_CONCURRENCY,
) -> Matrix:
    """Every pod to every pod on every port and protocol, by real connections from the source pod
    (TCP connects, UDP gets an answer); at most `concurrency` probes in flight."""
    gate = asyncio.Semaphore(concurrency)
    keys = list(pods)
    combos = [(port, protocol.upper()) for protocol in protocols for port in ports]

    async def one(src: str, dst: str, port: int, protocol: str) -> Cell:
        params = {"src": src, "dst": pods[dst][0], "port": port, "protocol": protocol, "timeout": timeout}
        async with gate:
            rpc = await agents.client(pods[src][1])
            result = await rpc.call(AgentMethod.PROBE, params, timeout=timeout + 10)
        return Cell(src, dst, port, protocol, bool(result.get("ok")))

    cells = await asyncio.gather(
        *(one(src, dst, port, protocol) for port, protocol in combos for src in keys for dst in keys)
    )
    return Matrix(tuple(keys), tuple(cells))


def http_static_matrix(
    objects: list[dict], pods: dict[str, tuple[str, str]], ports: Iterable[int], method: str, target: str
) -> Matrix:
    """Every pod to every pod on every port for one HTTP request, from the policies alone (Cilium's
    included): allowed when the connection is and the request passes the HTTP rules that filter it."""
    keys = list(pods)
    cells = []
    for port in ports:
        for src in keys:
            for dst in keys:
                ip = pods[dst][0]
                answer = explain_request(objects, pods[src][0], ip, port, method, target, host=f"{ip}:{port}")
                cells.append(Cell(src, dst, port, "TCP", answer.allowed))
    return Matrix(tuple(keys), tuple(cells))


async def probe_http_matrix(
    agents: Agents,
    pods: dict[str, tuple[str, str]],
    ports: Iterable[int],
    method: str,
    target: str,
    *,
    timeout: float = PROBE_TIMEOUT,
    concurrency: int = PROBE_CONCURRENCY,
) -> Matrix:
    """Every pod sends the request to every pod on every port; a cell is reachable when the request got
    an answer other than the L7 proxy's 403."""
    gate = asyncio.Semaphore(concurrency)
    keys = list(pods)

    async def one(src: str, dst: str, port: int) -> Cell:
        namespace, name = src.split("/", 1)
        params = {"namespace": namespace, "pod": name, "url": f"http://{pods[dst][0]}:{port}{target}",
                  "method": method, "timeout": timeout}
        async with gate:
            rpc = await agents.client(pods[src][1])
            result = await rpc.call(AgentMethod.POD_HTTP, params, timeout=timeout + 10)
        refused = result.get("status") == 403 and result.get("body") == ACCESS_DENIED_BODY
        return Cell(src, dst, port, "TCP", "status" in result and not refused)

    cells = await asyncio.gather(*(one(src, dst, port) for port in ports for src in keys for dst in keys))
    return Matrix(tuple(keys), tuple(cells))


def disagreements(probed: Matrix, static: Matrix) -> tuple[list[tuple], int]:
    """Where probing and the policies differ, leaving out pod-to-self cells; and how many of those
    differed (loopback inside a pod is never filtered, whatever the policies say)."""
    found = probed.disagreements(static)
    return [d for d in found if d[0] != d[1]], sum(1 for d in found if d[0] == d[1])


@dataclass(frozen=True)
class Matrices:
    """The policies' matrix of some pods, and (unless only that was asked for) the probed one."""

    pods: dict[str, tuple[str, str]]
    static: Matrix
    probed: Matrix | None
    refused_policies: dict[str, str]


async def matrices(
    client: ApiClient,
    socket_for: SocketFor,
    *,
    namespaces: Iterable[str] | None = None,
    ports: Iterable[int] = (80,),
    protocols: Iterable[str] = ("TCP",),
    probe: bool = True,
    timeout: float = PROBE_TIMEOUT,
    concurrency: int = PROBE_CONCURRENCY,
    http: tuple[str, str] | None = None,
) -> Matrices:
    """Who reaches whom among the Running pods (of `namespaces`): from the policies alone and, with
    `probe`, from real connections through the agents. With `http` (method, target), whose request gets
    through, over TCP on `ports`."""
    namespaces = list(namespaces or [])
    ports, protocols = list(ports), [p.upper() for p in protocols]
    objects = await cluster_objects(client)
    pods = running_pods(objects, namespaces)
    if not pods:
        raise ObserveError("no Running pods with an address" + (f" in {', '.join(namespaces)}" if namespaces else ""))
    evaluator, refused = static_evaluator(objects)
    if http is not None:
        computed = http_static_matrix(objects + await cilium_policies(client), pods, ports, *http)
    else:
        computed = static_matrix(evaluator, pods=list(pods), ports=ports, protocols=protocols)
    probed = None
    if probe:
        async with Agents(socket_for) as agents:
            if http is not None:
                probed = await probe_http_matrix(
                    agents, pods, ports, *http, timeout=timeout, concurrency=concurrency
                )
            else:
                probed = await probe_matrix(
                    agents, pods, ports, protocols, timeout=timeout, concurrency=concurrency
                )
    return Matrices(pods, computed, probed, refused)


# ---- flow logs and explanations -----------------------------------------------------------------


async def read_flows(
    socket: str, *, verdict: str | None = None, limit: int | None = None, follow: bool = False
) -> AsyncIterator[FlowRecord]:
    async with RpcClient(socket) as rpc:
        async for item in rpc.stream(AgentMethod.FLOWS, {"verdict": verdict, "limit": limit, "follow": follow}):
            yield FlowRecord.from_dict(item)


@dataclass(frozen=True)
class ConnectionStory:
    """Why a connection is allowed or denied: the policies' answer, the flow logs' verdicts on it, and
    the nodes whose flow log could not be read."""

    explanation: Explanation
    records: list[FlowRecord]
    unreachable: list[str]
    request: RequestExplanation | None = None

    def latest(self) -> list[FlowRecord]:
        """The latest verdict of each direction: what the dataplane decided last."""
        return list({r.direction: r for r in sorted(self.records, key=lambda r: r.time)}.values())


async def cilium_policies(client: ApiClient) -> list[dict]:
    """Cilium's policies, each carrying its kind; none when Cilium's CRDs are not installed."""
    found = []
    for kind in CILIUM_KINDS.values():
        try:
            items = (await client.list(kind)).get("items") or []
        except ApiError as exc:
            if exc.code != 404:
                raise
            items = []
        found += [item | {"kind": kind.kind} for item in items]
    return found


async def explain_connection(
    client: ApiClient, socket_for: SocketFor, src: str, dst: str, port: int, protocol: str = "TCP",
    *, nodes: Iterable[str] | None = None, http: tuple[str, str] | None = None,
) -> ConnectionStory:
    """Which policy and rule decide `src` -> `dst`:`port` (each "ns/name" or an IP): from the API
    objects, and from the flow logs of the nodes of both ends (or `nodes`); with `http` (method,
    target), which rule decides that request, Cilium's policies included."""
    objects = await cluster_objects(client)
    evaluator, _ = static_evaluator(objects)
    try:
        answer = explain(evaluator, src, dst, port, protocol)
    except ValueError as exc:
        raise ObserveError(str(exc)) from None
    request = None
    if http is not None:
        method, target = http
        host = f"{answer.dst.split('/')[-1]}:{port}"
        request = explain_request(
            objects + await cilium_policies(client), answer.src_ip, answer.dst_ip, port, method, target,
            host=host, protocol=protocol,
        )
    if nodes is None:
        pods = running_pods(objects)
        nodes = {pods[p][1] for p in (answer.src, answer.dst) if p in pods}
    wanted = (answer.src_ip, answer.dst_ip, port, answer.protocol)
    records, unreachable = [], []
    for node in sorted(nodes):
        try:
            async for record in read_flows(socket_for(node)):
                if (record.src, record.dst, record.port, record.protocol) == wanted:
                    records.append(record)
        except (OSError, RpcError) as exc:
            unreachable.append(f"node {node}: flow log not reachable ({exc})")
    return ConnectionStory(answer, records, unreachable, request)
