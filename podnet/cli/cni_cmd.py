"""`podnet cni NODE`: the attachments a CNI runtime made on a node through `podnet-cni` (docs/cni.md),
and with `--check` the CNI CHECK of each: its interface, address and routes still in its namespace.

The node's agent is found at `$PODNET_HOME/nodes/<node>/agent.sock`, as `podnet exec` finds it, or with
`--agent-socket PATH`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
import yaml

from podnet.cli.common import HomeOption, run_async
from podnet.cli.pods_cmd import agent_socket
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcClient, RpcError, call_once

COLUMNS = ("CONTAINER", "IFNAME", "POD", "ADDRESS", "NETNS")


async def attachments(socket: str, check: bool) -> list[dict]:
    async with RpcClient(socket) as agent:
        rows = await agent.call(AgentMethod.CNI_LIST)
        if check:
            for row in rows:
                outcome = await agent.call(AgentMethod.CNI_CHECK, {"container_id": row["container_id"],
                                                                   "ifname": row["ifname"]})
                row["check"] = "; ".join(outcome["problems"]) or "ok"
    return rows


def table(rows: list[dict], check: bool) -> list[str]:
    columns = (*COLUMNS, "CHECK") if check else COLUMNS
    cells = [[r["container_id"], r["ifname"], f"{r['namespace']}/{r['name']}", r["address"], r["netns"],
              *([r["check"]] if check else [])] for r in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(columns, *cells, strict=False)]
    return ["   ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in (columns, *cells)]


async def pod_result_lines(pod: dict) -> list[str]:
    """`podnet describe pod`'s CNI section: the result the node's chain returned for a netns pod; nothing
    for a virtual pod, or when its node's agent is not on this machine."""
    node = (pod.get("spec") or {}).get("nodeName")
    meta = pod.get("metadata") or {}
    result = None
    if node:
        with contextlib.suppress(OSError, RpcError, TimeoutError):
            result = await call_once(agent_socket(node, None), AgentMethod.CNI_RESULT,
                                     {"namespace": meta.get("namespace"), "pod": meta.get("name")}, timeout=5)
    if not result:
        return []
    dumped = yaml.safe_dump(result, sort_keys=False, default_flow_style=False)
    return ["CNI Result:", *("  " + line for line in dumped.rstrip().splitlines())]


def cni(
    node: Annotated[str, typer.Argument(help="The node whose attachments to list.")],
    check: Annotated[bool, typer.Option("--check", help="Run CNI CHECK on each attachment.")] = False,
    agent_socket_path: Annotated[
        Path | None, typer.Option("--agent-socket", help="The node agent's RPC socket (default: by node name).")
    ] = None,
    home: Path | None = HomeOption,
) -> None:
    """List the CNI attachments podnet-cni made on a node; --check verifies each one."""
    rows = run_async(attachments(agent_socket(node, agent_socket_path), check))
    if not rows:
        typer.echo(f"No CNI attachments on {node}.", err=True)
        return
    for line in table(rows, check):
        typer.echo(line)
    if check and any(r["check"] != "ok" for r in rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("cni")(cni)
