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
    run_async,
)
from podnet.cli.pods_cmd import AgentSocketOption, agent_socket
from podnet.client import podnet_home
from podnet.nodeagent.l7.explain import parse_request_line
from podnet.nodeagent.policy import Matrix, render_table
from podnet.nodeagent.policy.flowlog import VERDICTS, FlowRecord
from podnet.observe import ObserveError
from podnet.observe import policy as observe
from podnet.rpc.session import RpcError


def warn_refused(refused: dict[str, str]) -> None:
    for key, error in refused.items():
        typer.echo(f"warning: NetworkPolicy {key} is not enforced: {error}", err=True)


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
    nodes = list(node or []) or ([] if agent_socket_path else observe.known_nodes(podnet_home()))
    if agent_socket_path and not nodes:
        nodes = ["(agent)"]
    if not nodes:
        raise fail(f"error: no node agents found under {podnet_home() / 'nodes'}")

    def show(record: FlowRecord) -> None:
        text = json.dumps(record.to_dict()) if output == "json" else format_record(record)
        typer.echo(text)

    async def collect(name: str) -> list[FlowRecord]:
        try:
            return [
                r
                async for r in observe.read_flows(agent_socket(name, agent_socket_path), verdict=verdict, limit=limit)
            ]
        except (OSError, RpcError) as exc:
            typer.echo(f"warning: node {name}: {exc}", err=True)
            return []

    async def tail(name: str) -> None:
        try:
            async for record in observe.read_flows(
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


def _print_tables(matrix: Matrix, request: str = "") -> None:
    for port, protocol in matrix.combinations():
        typer.echo(f"{port}/{protocol}{' ' + request if request else ''}:")
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
    http: Annotated[
        str | None,
        typer.Option("--http", metavar='"METHOD /PATH"', help="Whose HTTP request gets through (TCP ports)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each probe waits for an answer.")] = observe.PROBE_TIMEOUT,
    concurrency: Annotated[int, typer.Option(help="Probes in flight at once.")] = observe.PROBE_CONCURRENCY,
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
    try:
        request = None if http is None else parse_request_line(http)
    except ValueError as exc:
        raise fail(f"error: {exc}") from None

    async def run() -> observe.Matrices:
        async with client_for(server, token, kubeconfig) as client:
            try:
                return await observe.matrices(
                    client, lambda node: agent_socket(node, agent_socket_path), namespaces=namespace, ports=ports,
                    protocols=protocols, probe=not static, timeout=timeout, concurrency=concurrency, http=request)
            except ObserveError as exc:
                raise fail(f"error: {exc}") from None

    found = run_async(run())
    warn_refused(found.refused_policies)
    shown = found.probed or found.static
    if output == "json":
        typer.echo(json.dumps(shown.to_json()))
    else:
        _print_tables(shown, " ".join(request or ()))
    if found.probed is None:
        return
    differing, self_cells = observe.disagreements(found.probed, found.static)
    if self_cells:
        typer.echo(f"note: {self_cells} pod-to-self cells differ from the policies: {observe.SELF_NOTE}", err=True)
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
    http: Annotated[
        str | None,
        typer.Option("--http", metavar='"METHOD /PATH"', help="Also which rule decides this HTTP request."),
    ] = None,
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
    try:
        request = None if http is None else parse_request_line(http)
    except ValueError as exc:
        raise fail(f"error: {exc}") from None

    def key(who: str) -> str:
        return who if _is_ip(who) or "/" in who else f"{namespace}/{who}"

    async def run() -> observe.ConnectionStory:
        async with client_for(server, token, kubeconfig) as client:
            try:
                return await observe.explain_connection(
                    client, lambda node: agent_socket(node, agent_socket_path), key(src), key(dst), port, protocol,
                    nodes=["(agent)"] if agent_socket_path else None, http=request)
            except ObserveError as exc:
                raise fail(f"error: {exc}") from None

    story = run_async(run())
    answer = story.explanation
    typer.echo(f"policies: {answer.text()}")
    if story.request is not None:
        typer.echo(story.request.text())
    for note in story.unreachable:
        typer.echo(note)
    what = f"{answer.src} -> {answer.dst} {port}/{answer.protocol}"
    if not story.records:
        typer.echo(f"flow log: no connection {what} seen")
        return
    typer.echo(f"flow log: {len(story.records)} verdicts on connections {what}, the latest of each direction:")
    for record in story.latest():
        typer.echo(f"  {format_record(record)}")


def register(app: typer.Typer) -> None:
    app.command("flows")(flows)
    app.command("matrix")(matrix)
    app.command("explain")(explain_cmd)
