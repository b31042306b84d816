"""`podnet bgp` runs a node's BGP speaker; `podnet bgp peers` shows its sessions; `podnet routes` shows a
node's forwarding table and BGP RIB."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from podnet.api.printers import format_table
from podnet.cli.common import HomeOption, fail, home, run_async
from podnet.cli.daemon import CaFile, Kubeconfig, Server, TokenFile, api_credentials
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcError, call_once

bgp_app = typer.Typer(help="Run a node's BGP speaker, or look at one.", add_completion=False)

StateDirOption = typer.Option(None, "--state-dir", help="The node's state directory "
                              "(default $PODNET_HOME/nodes/<node>).")
OutputOption = typer.Option("table", "--output", "-o", help="table or json.")


def _state_dir(node: str, state_dir: Path | None) -> Path:
    return state_dir if state_dir is not None else home() / "nodes" / node


def _dash(value: object) -> str:
    return "-" if value in (None, "") else str(value)


@bgp_app.callback(invoke_without_command=True)
def bgp(
    ctx: typer.Context,
    node: str = typer.Option(None, "--node", help="This node's name."),
    address: str = typer.Option(None, "--address", help="The node address to listen on and connect from."),
    asn: int = typer.Option(64512, "--asn", help="Our AS number."),
    port: int = typer.Option(None, "--port", help="BGP port (default 179 as root, else 1790; 0 picks one)."),
    peer: list[str] = typer.Option([], "--peer", help="ADDR, ADDR:PORT, ADDR/ASN or ADDR:PORT/ASN; replaces the full mesh of Nodes."),
    server: Server = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    kubeconfig: Kubeconfig = None,
    agent_socket: str = typer.Option(None, "--agent-socket", help="The node agent's RPC socket."),
    state_dir: Path = StateDirOption,
    hold_time: int = typer.Option(9, "--hold-time", help="Hold time offered, seconds (0 or 3..65535)."),
    graceful_restart_time: int = typer.Option(120, "--graceful-restart-time",
                                              help="Graceful restart time advertised, seconds (0: off)."),
    pod_cidr: str = typer.Option(None, "--pod-cidr", help="Originate this prefix (default: the Node's podCIDR)."),
    connect_retry: float = typer.Option(5.0, "--connect-retry", help="ConnectRetry time, seconds."),
    router_id: str = typer.Option(None, "--router-id", help="BGP identifier (default: --address)."),
    cluster_cidr: str = typer.Option("10.244.0.0/16", "--cluster-cidr",
                                     help="Take only routes inside this pod network (\"\": any prefix)."),
    max_prefixes: int = typer.Option(1024, "--max-prefixes",
                                     help="Close a session whose peer sends more routes than this (RFC 4486)."),
    any_next_hop: bool = typer.Option(False, "--any-next-hop",
                                      help="Take routes whose next hop is not the peer itself (from a route reflector)."),
    password_file: Path = typer.Option(None, "--password-file",
                                       help="A file holding the TCP MD5 password of every session (RFC 2385)."),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Run the BGP speaker of one node (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    from podnet import logs, process
    from podnet.overlay.bgp.speaker import PeerConfig, SpeakerConfig, default_port, serve

    if not node or not address:
        raise fail("error: give --node NAME and --address ADDR")
    api = api_credentials(server, token_file, ca_file, kubeconfig)
    if api is None and not peer:
        raise fail("error: give --kubeconfig FILE or --server URL (full mesh of Nodes), or --peer ADDR[:PORT][/ASN]")
    port = default_port() if port is None else port
    try:
        peers = tuple(PeerConfig.parse(text, port) for text in peer)
        config = SpeakerConfig(
            node=node, address=address, asn=asn, port=port, peers=peers, server=api.server if api else None,
            token=api.token if api else None, tls=api.tls if api else None, fallbacks=api.fallbacks if api else (),
            agent_socket=agent_socket, state_dir=_state_dir(node, state_dir), hold_time=hold_time,
            graceful_restart_time=graceful_restart_time, pod_cidr=pod_cidr, connect_retry_time=connect_retry,
            router_id=router_id, cluster_cidr=cluster_cidr or None, max_prefixes=max_prefixes,
            any_next_hop=any_next_hop, password=password_file.read_bytes().strip() if password_file else None,
        )
    except (ValueError, OSError) as exc:
        raise fail(f"error: {exc}") from None
    logs.setup("bgp", log_level)
    process.run(lambda shutdown: serve(config, shutdown_trigger=shutdown))


@bgp_app.command("peers")
def peers(
    node: str = typer.Option(..., "--node", help="The node whose speaker to ask."),
    state_dir: Path = StateDirOption,
    home: Path | None = HomeOption,
    output: str = OutputOption,
) -> None:
    """Show a node's BGP sessions and their states."""
    sessions = run_async(call_once(str(_state_dir(node, state_dir) / "bgp.sock"), "peers", timeout=5.0))
    if output == "json":
        typer.echo(json.dumps(sessions, indent=2))
        return
    rows = [["PEER", "ASN", "STATE", "UPTIME", "HOLD", "PREFIXES", "STALE", "LAST ERROR"]]
    for s in sessions:
        rows.append([f"{s['peer']}:{s['port']}", str(s["asn"]), s["state"], _dash(s["uptime"]),
                     str(s["hold_time"]), str(s["prefixes_received"]), "yes" if s["stale"] else "no",
                     _dash(s["last_error"])])
    typer.echo(format_table(rows))


async def _node_tables(directory: Path) -> tuple[list[dict] | None, str, list[dict] | None, str]:
    forwarding: list[dict] | None = None
    forwarding_note = ""
    try:
        forwarding = await call_once(str(directory / "agent.sock"), AgentMethod.ROUTES_LIST, timeout=5.0)
    except RpcError as exc:
        forwarding_note = f"the node agent does not list its routes ({exc.message})"
    except (OSError, ConnectionError) as exc:
        forwarding_note = f"cannot reach the node agent: {exc}"
    rib: list[dict] | None = None
    rib_note = ""
    try:
        rib = await call_once(str(directory / "bgp.sock"), "rib", timeout=5.0)
    except (OSError, ConnectionError) as exc:
        rib_note = f"cannot reach the BGP speaker: {exc}"
    return forwarding, forwarding_note, rib, rib_note


def routes(
    node: str = typer.Option(..., "--node", help="The node to show."),
    state_dir: Path = StateDirOption,
    home: Path | None = HomeOption,
    output: str = OutputOption,
) -> None:
    """Show a node's forwarding table and its BGP RIB."""
    forwarding, forwarding_note, rib, rib_note = run_async(_node_tables(_state_dir(node, state_dir)))
    if output == "json":
        typer.echo(json.dumps({"forwarding": forwarding, "bgp": rib}, indent=2))
        return
    typer.echo(f"Forwarding table of {node}:")
    if forwarding is None:
        typer.echo(f"  ({forwarding_note})")
    elif forwarding:
        keys = list(forwarding[0])
        typer.echo(format_table([[k.upper().replace("_", " ") for k in keys]]
                                + [[_dash(r.get(k)) for k in keys] for r in forwarding]))
    typer.echo(f"\nBGP RIB of {node}:")
    if rib is None:
        typer.echo(f"  ({rib_note})")
        return
    rows = [["PREFIX", "NEXT HOP", "AS PATH", "PEER", "STATE", "AGE"]]
    for r in rib:
        rows.append([r["prefix"], r["next_hop"], r["as_path"] or "-", r["peer"], r["state"], f"{r['age']:.0f}s"])
    typer.echo(format_table(rows))


def register(app: typer.Typer) -> None:
    app.add_typer(bgp_app, name="bgp")
    app.command("routes")(routes)
