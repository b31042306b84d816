"""`podnet exec`, `probe`, `trace` and `capture`: what a pod sees of the network, asked of the agent of
the pod's node over its RPC socket.

The pod's node comes from the API (`spec.nodeName`); the node's agent socket is
`$PODNET_HOME/nodes/<node>/agent.sock`, or `--agent-socket`.
"""

from __future__ import annotations

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
    home,
    run_async,
)
from podnet.cli.netns_exec import exec_command, run_in_sandbox
from podnet.client import ApiClient
from podnet.nodeagent.kubelet import commands
from podnet.observe import ObserveError, journey
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcClient, call_once

NamespaceOption = typer.Option("default", "--namespace", "-n", help="Namespace of the pod.")
AgentSocketOption = typer.Option(None, "--agent-socket", help="The node agent's RPC socket (default: found by node name).")

def agent_socket(node: str, override: Path | None) -> str:
    return str(override) if override else str(home() / "nodes" / node / "agent.sock")


async def running_pod(client: ApiClient, namespace: str, name: str) -> dict:
    """The pod, which must be Running on a node; otherwise a one-line error."""
    try:
        return await journey.running_pod(client, namespace, name)
    except ObserveError as exc:
        raise fail(str(exc)) from None


def exec_(
    ctx: typer.Context,
    pod: Annotated[str, typer.Argument(help="The pod (NAME or NAMESPACE/NAME).")],
    namespace: str = NamespaceOption,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    kubeconfig: Path | None = KubeconfigOption,
    agent_socket_path: Path | None = AgentSocketOption,
    home: Path | None = HomeOption,
) -> None:
    """Run a command in a pod: a real program in a netns pod; in a virtual pod http URL, connect
    HOST:PORT [--udp], ping IP, /agnhost connect HOST:PORT, hostname, cat /etc/resolv.conf."""
    namespace, name = journey.split_pod(pod, namespace)

    async def sandbox_command() -> dict | None:
        async with client_for(server, token, kubeconfig) as client:
            obj = await running_pod(client, namespace, name)
        return await exec_command(agent_socket(obj["spec"]["nodeName"], agent_socket_path), namespace, name, list(ctx.args))

    sandboxed = run_async(sandbox_command())
    if sandboxed is not None:
        raise typer.Exit(exec_in_netns(sandboxed, list(ctx.args)))
    command = commands.parse(list(ctx.args))

    async def run() -> commands.Outcome:
        async with client_for(server, token, kubeconfig) as client:
            obj = await running_pod(client, namespace, name)
        if isinstance(command, commands.Outcome):
            return command
        if isinstance(command, commands.Local):
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            return command.answer(commands.PodFacts(name, namespace, spec.get("hostname") or name, status.get("podIP", "")))
        method, params = command.rpc()
        socket = agent_socket(obj["spec"]["nodeName"], agent_socket_path)
        return command.render(await call_once(socket, method, {"namespace": namespace, "pod": name, **params}, timeout=60.0))

    outcome = run_async(run())
    sys.stdout.buffer.write(outcome.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(outcome.stderr)
    raise typer.Exit(outcome.code)


def exec_in_netns(command: dict, argv: list[str]) -> int:
    try:
        code = run_in_sandbox(command, argv)
    except (PermissionError, ValueError) as exc:
        raise fail(f"error: {exc}") from None
    if code == 127:
        typer.echo(f"error: {argv[0]}: command not found", err=True)
    return code


async def _resolve_destination(client: ApiClient, text: str, namespace: str) -> tuple[str, str | None]:
    try:
        return await journey.resolve_destination(client, text, namespace)
    except ObserveError as exc:
        raise fail(str(exc)) from None


def probe(
    src: Annotated[str, typer.Argument(help="Source pod (NAME or NAMESPACE/NAME).")],
    dst: Annotated[str, typer.Argument(help="Destination: an IP, a pod or a service.")],
    port: Annotated[int, typer.Option("--port", "-p", help="Destination port.")],
    protocol: Annotated[str, typer.Option(help="TCP or UDP.")] = "TCP",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 2.0,
    namespace: str = NamespaceOption,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    kubeconfig: Path | None = KubeconfigOption,
    agent_socket_path: Path | None = AgentSocketOption,
    home: Path | None = HomeOption,
) -> None:
    """Can SRC reach DST on PORT? Exit 0 when it connects (TCP) or is answered (UDP)."""
    namespace_src, name = journey.split_pod(src, namespace)
    protocol = protocol.upper()
    if protocol not in ("TCP", "UDP"):
        raise fail("error: --protocol must be TCP or UDP")

    async def run() -> tuple[str, dict]:
        async with client_for(server, token, kubeconfig) as client:
            obj = await running_pod(client, namespace_src, name)
            ip, _ = await _resolve_destination(client, dst, namespace)
        socket = agent_socket(obj["spec"]["nodeName"], agent_socket_path)
        params = {"src": f"{namespace_src}/{name}", "dst": ip, "port": port, "protocol": protocol, "timeout": timeout}
        return ip, await call_once(socket, AgentMethod.PROBE, params, timeout=timeout + 30)

    ip, result = run_async(run())
    if result["ok"]:
        typer.echo(f"{namespace_src}/{name} → {ip}:{port}/{protocol}: {result['reason']}")
        return
    dropped = f" (dropped: {', '.join(result['dropped'])})" if result.get("dropped") else ""
    raise fail(f"{namespace_src}/{name} → {ip}:{port}/{protocol}: {result['reason']}{dropped}")


def trace(
    src: Annotated[str, typer.Argument(help="Source pod (NAME or NAMESPACE/NAME).")],
    destination: Annotated[
        str, typer.Argument(metavar="DST:PORT[/PROTOCOL]",
                            help="Destination IP, pod or service; port number or name; tcp (default) or udp.")
    ],
    protocol: Annotated[str, typer.Option(help="TCP or UDP.")] = "TCP",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 2.0,
    show_bytes: Annotated[bool, typer.Option(
        "--bytes", help="Under each stage that holds the packet, its layers and its bytes in hex (as tshark -x).")
    ] = False,
    namespace: str = NamespaceOption,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    kubeconfig: Path | None = KubeconfigOption,
    agent_socket_path: Path | None = AgentSocketOption,
    home: Path | None = HomeOption,
) -> None:
    """Print a packet's journey from SRC to DST:PORT stage by stage, and its reply's.

    The destination node's half comes from a watch started there before the probe. For a Service, whose
    endpoint the source node picks at random, every other node with a ready endpoint watches, and the one
    the packet reached tells its half."""
    dst, _, port_text = destination.rpartition(":")
    port_text, slash, named_protocol = port_text.partition("/")
    if not dst or not port_text or (slash and not named_protocol):
        raise fail(f"error: the destination is DST:PORT[/PROTOCOL], not {destination!r}")
    protocol = (named_protocol or protocol).upper()
    if protocol not in ("TCP", "UDP"):
        raise fail(f"error: the protocol is TCP or UDP, not {named_protocol or protocol!r}")

    async def run() -> journey.Journey:
        async with client_for(server, token, kubeconfig) as client:
            try:
                return await journey.trace(
                    client, lambda node: agent_socket(node, agent_socket_path), src, dst, port_text, protocol,
                    namespace=namespace, timeout=timeout, watch_far_half=agent_socket_path is None)
            except ObserveError as exc:
                raise fail(str(exc)) from None

    if show_bytes:
        from podnet.overlay.pipeline.model import dissect_stage
        from podnet.overlay.wire import dissect

    path = run_async(run())
    typer.echo(f"trace {path.src} → {path.ip}:{path.port}/{protocol}")
    for number, stage in enumerate(path.stages, start=1):
        typer.echo(f"{number:>3}. {stage['stage']:<15} {stage['detail']}")
        if show_bytes and stage.get("packet") is not None:
            for layer in dissect_stage(stage["stage"], stage["packet"]):
                typer.echo(f"       {layer.title}")
            for line in dissect.hex_dump(stage["packet"]):
                typer.echo(f"       {line}")
    if path.local and not path.answered:
        raise typer.Exit(1)


def capture(
    node: Annotated[str, typer.Option("--node", help="The node whose underlay traffic to capture.")],
    write: Annotated[Path, typer.Option("-w", "--write", help="pcap file to write.")],
    count: Annotated[int, typer.Option("--count", "-c", help="Stop after this many datagrams.")] = 0,
    seconds: Annotated[float, typer.Option("--seconds", help="Stop after this many seconds.")] = 0.0,
    decrypted: Annotated[bool, typer.Option("--decrypted", help="On a node that encrypts: the tunnel's datagrams "
                                            "inside WireGuard, as they would travel unencrypted (default: what is "
                                            "on the wire).")] = False,
    agent_socket_path: Path | None = AgentSocketOption,
    home: Path | None = HomeOption,
) -> None:
    """Capture a node's underlay datagrams (VXLAN, foo-over-UDP or WireGuard) into a pcap file that Wireshark
    and tshark decode."""
    from podnet.overlay.wire import pcap

    if not count and not seconds:
        raise fail("error: give --count or --seconds")

    async def run() -> int:
        written = 0
        with write.open("wb") as file:
            writer = pcap.PcapWriter(file, pcap.LinkType.ETHERNET)
            async with RpcClient(agent_socket(node, agent_socket_path)) as rpc:
                async for item in rpc.stream(AgentMethod.CAPTURE, {"count": count, "seconds": seconds,
                                                                  "decrypted": decrypted}):
                    frame = pcap.underlay_frame(
                        item["data"], (item["src"], item["sport"]), (item["dst"], item["dport"]), identification=written
                    )
                    writer.write(item["ts"], frame)
                    written += 1
        return written

    written = run_async(run())
    typer.echo(f"{written} datagrams written to {write}", err=True)


DATAPLANE_TABLES = {"counters": AgentMethod.COUNTERS, "routes": AgentMethod.ROUTES_LIST, "conntrack": AgentMethod.CONNTRACK_LIST,
                    "pods": AgentMethod.PODS_LIST}


def dataplane(
    node: Annotated[str, typer.Argument(help="The node whose dataplane to show.")],
    table: Annotated[str, typer.Argument(help="counters, routes, conntrack or pods.")] = "counters",
    agent_socket_path: Path | None = AgentSocketOption,
    home: Path | None = HomeOption,
) -> None:
    """Show a node's dataplane state: its counters, routes, tracked connections or pod ports."""
    method = DATAPLANE_TABLES.get(table)
    if method is None:
        raise fail(f"error: TABLE is one of {', '.join(DATAPLANE_TABLES)}, not {table!r}")
    result = run_async(call_once(agent_socket(node, agent_socket_path), method))
    if table == "counters":
        for name, value in sorted(result.items()):
            typer.echo(f"{name:<40} {value}")
    elif table == "routes":
        for route in result:
            via = f"via {route['next_hop']}" if route["next_hop"] else "local"
            typer.echo(f"{route['prefix']:<20} {via:<22} {route['source']}")
    elif table == "conntrack":
        for entry in result:
            note = f"  [{entry['note']}]" if entry["note"] else ""
            typer.echo(f"{entry['original']:<52} {entry['state']:<12} {entry['expires_in']:>9}s "
                       f"reply {entry['reply']}{note}")
    else:
        for pod in result:
            typer.echo(f"{pod['namespace']}/{pod['name']:<30} {pod['ip']:<16} {pod['mac']}")


def register(app: typer.Typer) -> None:
    app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(exec_)
    app.command("probe")(probe)
    app.command("trace")(trace)
    app.command("capture")(capture)
    app.command("dataplane")(dataplane)
