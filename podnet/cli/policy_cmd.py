"""`podnet flows`, `matrix` and `explain`: what NetworkPolicies do to real traffic, and why.

`flows` reads the node agents' flow logs (every verdict of the policy hook); `matrix` probes every pod
from every pod through the agents and prints who reaches whom, beside what the policies alone say
(`--static` prints only that); `explain` names the policy and rule that decide one connection, from the
API objects and, when the agents answer, from what their flow logs saw.

Agents are found at `$PODNET_HOME/nodes/<node>/agent.sock`, as `podnet exec` finds them.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer

from podnet.cli.common import (
    HomeOption,
    KubeconfigOption,
    ServerOption,
    TokenOption,
    client_for,
    fail,
    home,
    run_async,
)
from podnet.cli.pods_cmd import AgentSocketOption, agent_socket
from podnet.client import ApiClient
from podnet.nodeagent.policy import Explanation, Matrix, compile_objects, explain, render_table, static_matrix
from podnet.nodeagent.policy.evaluate import Evaluator
from podnet.nodeagent.policy.flowlog import VERDICTS, FlowRecord
from podnet.nodeagent.policy.matrix import Cell
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcClient, RpcError

PROBE_TIMEOUT = 1.0  # seconds a probe waits: a policy drop is silence, so every denied cell costs this
PROBE_CONCURRENCY = 64
SELF_NOTE = "a pod reaching its own address loops back inside the pod and meets no policy"


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
        pods[f"{meta['namespace']}/{meta['name']}"] = (status["podIP"], spec["nodeName"])
    return dict(sorted(pods.items()))


def static_evaluator(objects: Iterable[dict]) -> Evaluator:
    """The policies compiled for every pod; a policy the compiler refuses is named on stderr, since the
    agents do not enforce it either."""
    compiler = compile_objects(objects)
    for key, error in sorted(compiler.errors.items()):
        typer.echo(f"warning: NetworkPolicy {key} is not enforced: {error}", err=True)
    return compiler.evaluator()


# ---- probing through the agents -----------------------------------------------------------------


class Agents:
    """One RPC connection per node agent, opened on first use, shared by concurrent calls."""

    def __init__(self, socket_for: Callable[[str], str]):
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


def disagreements(probed: Matrix, static: Matrix) -> tuple[list[tuple], int]:
    """Where probing and the policies differ, leaving out pod-to-self cells; and how many of those
    differed (loopback inside a pod is never filtered, whatever the policies say)."""
    found = probed.disagreements(static)
    return [d for d in found if d[0] != d[1]], sum(1 for d in found if d[0] == d[1])


# ---- flow logs ----------------------------------------------------------------------------------


def known_nodes() -> list[str]:
    """Nodes with an agent socket under $PODNET_HOME/nodes."""
    root = home() / "nodes"
    return sorted(p.parent.name for p in root.glob("*/agent.sock")) if root.is_dir() else []


async def read_flows(
    socket: str, *, verdict: str | None = None, limit: int | None = None, follow: bool = False
):
    async with RpcClient(socket) as rpc:
        async for item in rpc.stream(AgentMethod.FLOWS, {"verdict": verdict, "limit": limit, "follow": follow}):
            yield FlowRecord.from_dict(item)


def _endpoint(pod: str | None, ip: str, port: int | None = None) -> str:
    where = ip if port is None else f"{ip}:{port}"
    return f"{pod}({where})" if pod else where


def format_record(record: FlowRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.time, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]
    return (
        f"{when} {record.node} {record.direction:<7} {record.verdict.upper():<7} {record.protocol} "
        f"{_endpoint(record.src_pod, record.src, record.src_port)} -> {_endpoint(record.dst_pod, record.dst, record.port)}"
        f"  {record.reason}"
    )


def flows(
    node: Annotated[
        list[str] | None, typer.Option("--node", help="Node(s) whose flow log to read (default: all).")
    ] = None,
    verdict: Annotated[str | None, typer.Option("--verdict", help="Only allowed or denied verdicts.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new verdicts.")] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many recent records per node.")
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="text or json (one object per line).")
    ] = "text",
    agent_socket_path: Path | None = AgentSocketOption,
    home: Path | None = HomeOption,
) -> None:
    """Print NetworkPolicy verdicts from the nodes' flow logs, oldest first (the Hubble-like view)."""
    if verdict is not None and verdict not in VERDICTS:
        raise fail(f"error: --verdict must be one of {', '.join(VERDICTS)}")
    if output not in ("text", "json"):
        raise fail("error: --output must be text or json")
    nodes = list(node or []) or ([] if agent_socket_path else known_nodes())
    if agent_socket_path and not nodes:
        nodes = ["(agent)"]
    if not nodes:
        raise fail(f"error: no node agents found under {home() / 'nodes'}")

    def show(record: FlowRecord) -> None:
        text = json.dumps(record.to_dict()) if output == "json" else format_record(record)
        typer.echo(text)

    async def collect(name: str) -> list[FlowRecord]:
        try:
            return [
                r
                async for r in read_flows(agent_socket(name, agent_socket_path), verdict=verdict, limit=limit)
            ]
        except (OSError, RpcError) as exc:
            typer.echo(f"warning: node {name}: {exc}", err=True)
            return []

    async def tail(name: str) -> None:
        try:
            async for record in read_flows(
                agent_socket(name, agent_socket_path), verdict=verdict, limit=limit, follow=True
            ):
                show(record)
                sys.stdout.flush()
        except (OSError, RpcError) as exc:
            typer.echo(f"warning: node {name}: {exc}", err=True)

    async def run() -> None:
        if follow:
            await asyncio.gather(*(tail(name) for name in nodes))
            return
        records = [r for batch in await asyncio.gather(*(collect(name) for name in nodes)) for r in batch]
        for record in sorted(records, key=lambda r: r.time):
            show(record)

    try:
        run_async(run())
    except KeyboardInterrupt:
        pass


# ---- matrix -------------------------------------------------------------------------------------


def _print_tables(matrix: Matrix) -> None:
    for port, protocol in matrix.combinations():
        typer.echo(f"{port}/{protocol}:")
        typer.echo(render_table(matrix.table(port, protocol)))
        typer.echo("")


def matrix(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Only pods of these namespaces.")
    ] = None,
    port: Annotated[
        list[int] | None, typer.Option("--port", "-p", help="Ports to probe (default 80).")
    ] = None,
    protocol: Annotated[
        list[str] | None, typer.Option("--protocol", help="TCP and/or UDP (default TCP).")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    static: Annotated[
        bool, typer.Option("--static", help="From the policies alone, without probing.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds each probe waits for an answer.")] = PROBE_TIMEOUT,
    concurrency: Annotated[int, typer.Option(help="Probes in flight at once.")] = PROBE_CONCURRENCY,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    kubeconfig: Path | None = KubeconfigOption,
    agent_socket_path: Path | None = AgentSocketOption,
    home: Path | None = HomeOption,
) -> None:
    """Who reaches whom: rows from, columns to ("." reachable, "X" not), probed with real traffic."""
    ports = list(port or [80])
    protocols = [p.upper() for p in (protocol or ["TCP"])]
    if any(p not in ("TCP", "UDP") for p in protocols):
        raise fail("error: --protocol takes TCP or UDP")
    if output not in ("table", "json"):
        raise fail("error: --output must be table or json")

    async def run() -> tuple[Matrix, Matrix | None]:
        async with client_for(server, token, kubeconfig) as client:
            objects = await cluster_objects(client)
        pods = running_pods(objects, namespace)
        if not pods:
            raise fail(
                "error: no Running pods with an address"
                + (f" in {', '.join(namespace)}" if namespace else "")
            )
        computed = static_matrix(static_evaluator(objects), pods=list(pods), ports=ports, protocols=protocols)
        if static:
            return computed, None
        async with Agents(lambda node: agent_socket(node, agent_socket_path)) as agents:
            probed = await probe_matrix(
                agents, pods, ports, protocols, timeout=timeout, concurrency=concurrency
            )
        return probed, computed

    shown, computed = run_async(run())
    if output == "json":
        typer.echo(json.dumps(shown.to_json()))
    else:
        _print_tables(shown)
    if computed is None:
        return
    differing, self_cells = disagreements(shown, computed)
    if self_cells:
        typer.echo(f"note: {self_cells} pod-to-self cells differ from the policies: {SELF_NOTE}", err=True)
    if differing:
        typer.echo(f"probed and static matrices disagree in {len(differing)} cells:", err=True)
        for src, dst, cell_port, cell_protocol, probed, policies in differing:
            typer.echo(
                f"  {src} -> {dst} {cell_port}/{cell_protocol}: probed {'reachable' if probed else 'unreachable'}, "
                f"policies say {'allowed' if policies else 'denied'}",
                err=True,
            )
        raise typer.Exit(1)
    typer.echo("probed and static matrices agree", err=True)


# ---- explain ------------------------------------------------------------------------------------


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def explain_cmd(
    src: Annotated[str, typer.Argument(help="Source pod (NAMESPACE/NAME, or NAME with -n) or IP.")],
    destination: Annotated[str, typer.Argument(metavar="DST:PORT", help="Destination pod or IP, and port.")],
    protocol: Annotated[str, typer.Option(help="TCP, UDP or SCTP.")] = "TCP",
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="Namespace of pods named without one.")
    ] = "default",
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    kubeconfig: Path | None = KubeconfigOption,
    agent_socket_path: Path | None = AgentSocketOption,
    home: Path | None = HomeOption,
) -> None:
    """Which policy and rule decide a connection: from the API objects, and from the flow logs."""
    dst, _, port_text = destination.rpartition(":")
    if not dst or not (port_text.isascii() and port_text.isdigit()):
        raise fail(f"error: the destination is DST:PORT, not {destination!r}")
    port = int(port_text)

    def key(who: str) -> str:
        return who if _is_ip(who) or "/" in who else f"{namespace}/{who}"

    async def run() -> tuple[Explanation, list[FlowRecord], list[str]]:
        async with client_for(server, token, kubeconfig) as client:
            objects = await cluster_objects(client)
        try:
            answer = explain(static_evaluator(objects), key(src), key(dst), port, protocol)
        except ValueError as exc:
            raise fail(f"error: {exc}") from None
        pods = running_pods(objects)
        nodes = (
            {"(agent)"} if agent_socket_path else {pods[p][1] for p in (answer.src, answer.dst) if p in pods}
        )
        wanted = (answer.src_ip, answer.dst_ip, port, answer.protocol)
        records, unreachable = [], []
        for node in sorted(nodes):
            try:
                async for record in read_flows(agent_socket(node, agent_socket_path)):
                    if (record.src, record.dst, record.port, record.protocol) == wanted:
                        records.append(record)
            except (OSError, RpcError) as exc:
                unreachable.append(f"node {node}: flow log not reachable ({exc})")
        return answer, records, unreachable

    answer, records, unreachable = run_async(run())
    typer.echo(f"policies: {answer.text()}")
    for note in unreachable:
        typer.echo(note)
    what = f"{answer.src} -> {answer.dst} {port}/{answer.protocol}"
    if not records:
        typer.echo(f"flow log: no connection {what} seen")
        return
    # The latest verdict of each direction is what the dataplane decided last.
    latest = {r.direction: r for r in sorted(records, key=lambda r: r.time)}
    typer.echo(f"flow log: {len(records)} verdicts on connections {what}, the latest of each direction:")
    for record in latest.values():
        typer.echo(f"  {format_record(record)}")


def register(app: typer.Typer) -> None:
    app.command("flows")(flows)
    app.command("matrix")(matrix)
    app.command("explain")(explain_cmd)
