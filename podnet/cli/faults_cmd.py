"""`podnet partition`: cut the underlay between two nodes, lift the cut, or list the cuts in force.

A cut is made by both nodes' agents (`faults.partition`): each drops the tunnel datagrams to and from
the other's address, counted as `tunnel.drop.partitioned`, so neither side can send through. Node names
become addresses through the Node objects (their InternalIP, the address the agents tunnel between).
Agents are found at `$PODNET_HOME/nodes/<node>/agent.sock`, as `podnet exec` finds them, or with
`--agent-socket NODE=PATH` once per node. Both agents are asked before either is changed, so a node
whose agent does not answer leaves nothing half cut.
"""

from __future__ import annotations

import asyncio
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
from podnet.cli.pods_cmd import agent_socket
from podnet.client import ApiClient
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import call_once

AGENT_TIMEOUT = 5.0  # seconds an agent has to answer; a stopped agent accepts and then never answers

# (healing, the agent dropped the peer before) -> what the agent does now
CHANGES = {
    (False, False): "now drops tunnel traffic to and from {peer}",
    (False, True): "already drops tunnel traffic to and from {peer}",
    (True, True): "forwards tunnel traffic to and from {peer} again",
    (True, False): "was not dropping tunnel traffic to and from {peer}",
}


def socket_overrides(values: list[str]) -> dict[str, Path]:
    """`--agent-socket NODE=PATH` values, by node."""
    overrides = {}
    for value in values:
        node, sep, path = value.partition("=")
        if not sep or not node or not path:
            raise fail(f"error: --agent-socket takes NODE=PATH, not {value!r}")
        overrides[node] = Path(path)
    return overrides


def internal_ip(node: dict) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return address.get("address")
    return None


async def node_addresses(client: ApiClient) -> dict[str, str | None]:
    """Every Node's name and InternalIP (None when it has none)."""
    nodes = (await client.list("nodes")).get("items") or []
    return {node["metadata"]["name"]: internal_ip(node) for node in nodes}


def cut_lines(cuts: dict[str, set[str]], addresses: dict[str, str | None]) -> list[str]:
    """One line per cut node pair, from each asked node's dropped peer addresses: `a <-> b`, noting when
    only one of the two agents drops the other (that alone already cuts both directions)."""
    name_of = {address: node for node, address in addresses.items() if address}
    pairs: dict[tuple[str, str], set[str]] = {}
    for node, peers in cuts.items():
        for peer_address in peers:
            peer = name_of.get(peer_address, peer_address)
            pairs.setdefault(tuple(sorted((node, peer))), set()).add(node)
    lines = []
    for (first, second), cut_by in sorted(pairs.items()):
        note = "" if cut_by == {first, second} else f"  (cut by {first if first in cut_by else second} only)"
        lines.append(f"{first} <-> {second}{note}")
    return lines


async def dropped_peers(path: str) -> set[str]:
    """The peer addresses the agent at `path` drops now (OSError or TimeoutError when it does not answer)."""
    return set((await call_once(path, AgentMethod.FAULTS_PARTITIONS, timeout=AGENT_TIMEOUT))["partitioned"])


def not_answering(node: str, path: str, exc: OSError | TimeoutError) -> str:
    reason = f"no answer in {AGENT_TIMEOUT:g}s" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
    return f"the agent of node {node} is not reachable at {path}: {reason}"


async def cut_or_heal(
    client: ApiClient, first: str, second: str, *, heal: bool, sockets: dict[str, Path]
) -> None:
    """Makes (or lifts) the cut on both agents, printing one line per agent as it changes."""
    addresses = await node_addresses(client)
    for node in (first, second):
        if node not in addresses:
            raise fail(f'Error from server (NotFound): nodes "{node}" not found')
        if not addresses[node]:
            raise fail(f"error: node {node} has no InternalIP address")
    paths = {node: agent_socket(node, sockets.get(node)) for node in (first, second)}
    before = {}
    for node, path in paths.items():
        try:
            before[node] = await dropped_peers(path)
        except (OSError, TimeoutError) as exc:
            raise fail(f"error: {not_answering(node, path, exc)}") from None
    for node, peer in ((first, second), (second, first)):
        address = addresses[peer]
        try:
            await call_once(
                paths[node], AgentMethod.FAULTS_PARTITION, {"peer": address, "drop": not heal}, timeout=AGENT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            # it answered a moment ago; any line printed above says what did change before it went away
            raise fail(f"error: {not_answering(node, paths[node], exc)}") from None
        what = CHANGES[heal, address in before[node]]
        typer.echo(f"{node}: {what.format(peer=f'{peer} ({address})')}")


async def list_cuts(client: ApiClient, sockets: dict[str, Path]) -> tuple[list[str], list[str]]:
    """Asks every Node's agent: (the cut pairs, one line per agent that did not answer)."""
    addresses = await node_addresses(client)

    async def ask(node: str) -> set[str] | str:
        path = agent_socket(node, sockets.get(node))
        try:
            return await dropped_peers(path)
        except (OSError, TimeoutError) as exc:
            return f"warning: {not_answering(node, path, exc)}; its cuts are not listed"

    answers = dict(zip(addresses, await asyncio.gather(*(ask(node) for node in addresses)), strict=True))
    cuts = {node: answer for node, answer in answers.items() if isinstance(answer, set)}
    silent = [answer for answer in answers.values() if isinstance(answer, str)]
    return cut_lines(cuts, addresses), silent


def partition(
    nodes: Annotated[
        list[str] | None, typer.Argument(metavar="NODE NODE", help="The two nodes to cut apart.")
    ] = None,
    heal: Annotated[bool, typer.Option("--heal", help="Lift the cut between the two nodes.")] = False,
    list_: Annotated[
        bool, typer.Option("--list", help="List the node pairs cut now (asks every agent).")
    ] = False,
    agent_sockets: Annotated[
        list[str] | None,
        typer.Option(
            "--agent-socket",
            metavar="NODE=PATH",
            help="A node agent's RPC socket (default: found by node name).",
        ),
    ] = None,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    kubeconfig: Path | None = KubeconfigOption,
    home: Path | None = HomeOption,
) -> None:
    """Cut the underlay between two nodes (both agents drop each other's tunnel traffic), or --heal it."""
    nodes = list(nodes or [])
    sockets = socket_overrides(list(agent_sockets or []))
    if list_:
        if nodes or heal:
            raise fail("error: --list takes no nodes and no --heal")

        async def listed() -> tuple[list[str], list[str]]:
            async with client_for(server, token, kubeconfig) as client:
                return await list_cuts(client, sockets)

        lines, silent = run_async(listed())
        for line in lines:
            typer.echo(line)
        if not lines and not silent:
            typer.echo("No partitions.", err=True)
        for line in silent:
            typer.echo(line, err=True)
        if silent:
            raise typer.Exit(1)
        return
    if len(nodes) != 2:
        raise fail("error: give two nodes (podnet partition NODE NODE [--heal]), or --list")
    if nodes[0] == nodes[1]:
        raise fail(f"error: a node cannot be cut from itself ({nodes[0]} given twice)")

    async def change() -> None:
        async with client_for(server, token, kubeconfig) as client:
            await cut_or_heal(client, nodes[0], nodes[1], heal=heal, sockets=sockets)

    run_async(change())


def register(app: typer.Typer) -> None:
    app.command("partition")(partition)
