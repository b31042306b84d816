"""`podnet exec`, `probe`, `trace` and `capture`: what a pod sees of the network, asked of the agent of
the pod's node over its RPC socket.

The pod's node comes from the API (`spec.nodeName`); the node's agent socket is
`$PODNET_HOME/nodes/<node>/agent.sock`, or `--agent-socket`.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated

import typer

from podnet.cli.common import KubeconfigOption, ServerOption, TokenOption, client_for, fail, home, run_async
from podnet.cli.netns_exec import pod_namespace, run_in_namespace
from podnet.client import ApiClient, ApiError
from podnet.rpc.session import RpcClient, call_once

NamespaceOption = typer.Option("default", "--namespace", "-n", help="Namespace of the pod.")
AgentSocketOption = typer.Option(None, "--agent-socket", help="The node agent's RPC socket (default: found by node name).")

EXEC_USAGE = "usage: podnet exec POD -- http URL | connect HOST:PORT [--udp] [--timeout S] | ping IP [--count N]"


def agent_socket(node: str, override: Path | None) -> str:
    return str(override) if override else str(home() / "nodes" / node / "agent.sock")


async def running_pod(client: ApiClient, namespace: str, name: str) -> dict:
    """The pod, which must be Running on a node; otherwise a one-line error."""
    try:
        pod = await client.get("pods", name, namespace)
    except ApiError as exc:
        if exc.code == 404:
            raise fail(f'Error from server (NotFound): pods "{name}" not found in namespace {namespace}') from None
        raise
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    node = (pod.get("spec") or {}).get("nodeName")
    if phase != "Running" or not node:
        where = f" on {node}" if node else ", not scheduled"
        raise fail(f"error: pod {namespace}/{name} is not Running (phase {phase}{where})")
    return pod


def _split_pod(text: str, namespace: str) -> tuple[str, str]:
    ns, _, name = text.rpartition("/")
    return (ns or namespace), name


def _parse_exec(args: list[str]) -> tuple[str, dict]:
    """`http URL`, `connect HOST:PORT [--udp] [--timeout S]`, `ping IP [--count N]` -> (method, params)."""
    if not args:
        raise fail(EXEC_USAGE)
    verb, rest = args[0], list(args[1:])
    options: dict[str, str | bool] = {}
    positional: list[str] = []
    while rest:
        item = rest.pop(0)
        if item == "--udp":
            options["udp"] = True
        elif item in ("--timeout", "--count") and rest:
            options[item[2:]] = rest.pop(0)
        elif item.startswith("--timeout=") or item.startswith("--count="):
            key, _, value = item[2:].partition("=")
            options[key] = value
        else:
            positional.append(item)
    if len(positional) != 1:
        raise fail(EXEC_USAGE)
    try:
        timeout = float(options["timeout"]) if "timeout" in options else None
        count = int(options.get("count", 3))
    except ValueError:
        raise fail(f"error: --timeout and --count take numbers\n{EXEC_USAGE}") from None
    target = positional[0]
    if verb == "http":
        return "pod.http", {"url": target, "timeout": timeout or 10.0}
    if verb == "connect":
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise fail(f"error: connect needs HOST:PORT, not {target!r}")
        protocol = "UDP" if options.get("udp") else "TCP"
        return "pod.connect", {"host": host, "port": int(port), "protocol": protocol, "timeout": timeout or 5.0}
    if verb == "ping":
        return "pod.ping", {"ip": target, "count": count, "timeout": timeout}
    raise fail(f"error: unknown exec command {verb!r}\n{EXEC_USAGE}")


def exec_(
    ctx: typer.Context,
    pod: Annotated[str, typer.Argument(help="The pod (NAME or NAMESPACE/NAME).")],
    namespace: str = NamespaceOption,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    kubeconfig: Path | None = KubeconfigOption,
    agent_socket_path: Path | None = AgentSocketOption,
) -> None:
    """Run a command in a pod: a real program in a netns pod; in a virtual pod http URL, connect
    HOST:PORT [--udp], ping IP."""
    namespace, name = _split_pod(pod, namespace)

    async def netns_of_pod() -> str | None:
        async with client_for(server, token, kubeconfig) as client:
            obj = await running_pod(client, namespace, name)
        return await pod_namespace(agent_socket(obj["spec"]["nodeName"], agent_socket_path), namespace, name)

    netns = run_async(netns_of_pod())
    if netns is not None:
        raise typer.Exit(exec_in_netns(netns, list(ctx.args)))
    method, params = _parse_exec(list(ctx.args))

    async def run() -> dict:
        async with client_for(server, token, kubeconfig) as client:
            obj = await running_pod(client, namespace, name)
        socket = agent_socket(obj["spec"]["nodeName"], agent_socket_path)
        return await call_once(socket, method, {"namespace": namespace, "pod": name, **params}, timeout=60.0)

    result = run_async(run())
    if method == "pod.http":
        if "status" not in result:
            raise fail(f"error: {params['url']}: {result['reason']}")
        body = result["body"]
        sys.stdout.write(body.decode(errors="replace") if isinstance(body, bytes) else str(body))
        if body and not body.endswith(b"\n" if isinstance(body, bytes) else "\n"):
            sys.stdout.write("\n")
        if not result["ok"]:
            raise fail(f"error: HTTP {result['status']} {result['reason']}")
    elif method == "pod.connect":
        target = f"{params['host']}:{params['port']}"
        if not result["ok"]:
            raise fail(f"error: {params['protocol']} {target}: {result['reason']}")
        if params["protocol"] == "UDP":
            reply = result["reply"]
            typer.echo(f"answered by {result['peer']}: {reply.decode(errors='replace') if isinstance(reply, bytes) else reply}")
        else:
            typer.echo(f"connected to {result['remote']} from {result['local']}")
    else:
        _print_ping(params["ip"], result)


def exec_in_netns(netns: str, argv: list[str]) -> int:
    try:
        code = run_in_namespace(netns, argv)
    except (PermissionError, ValueError) as exc:
        raise fail(f"error: {exc}") from None
    if code == 127:
        typer.echo(f"error: {argv[0]}: command not found", err=True)
    return code


def _print_ping(ip: str, result: dict) -> None:
    transmitted, received = result["transmitted"], result["received"]
    loss = 100 * (transmitted - received) // max(transmitted, 1)
    for index, rtt in enumerate(result["rtts"]):
        typer.echo(f"reply from {ip}: icmp_seq={index + 1} time={rtt * 1000:.3f} ms")
    typer.echo(f"--- {ip} ping statistics ---")
    typer.echo(f"{transmitted} packets transmitted, {received} received, {loss}% packet loss")
    if result["rtts"]:
        rtts = [r * 1000 for r in result["rtts"]]
        typer.echo(f"rtt min/avg/max = {min(rtts):.3f}/{sum(rtts) / len(rtts):.3f}/{max(rtts):.3f} ms")
    if not result["ok"]:
        raise fail(f"error: {result.get('reason') or 'no reply'}")


async def _resolve_destination(client: ApiClient, text: str, namespace: str) -> tuple[str, str | None]:
    """(IP, node of the pod or None): an IP as given, else a pod's IP, else a service's ClusterIP."""
    try:
        ipaddress.IPv4Address(text)
        return text, None
    except ValueError:
        pass
    ns, name = _split_pod(text, namespace)
    try:
        pod = await client.get("pods", name, ns)
        if ip := (pod.get("status") or {}).get("podIP"):
            return ip, (pod.get("spec") or {}).get("nodeName")
    except ApiError as exc:
        if exc.code != 404:
            raise
    try:
        service = await client.get("services", name, ns)
    except ApiError as exc:
        if exc.code == 404:
            raise fail(f"error: {text} is neither an IP address, a pod nor a service in namespace {ns}") from None
        raise
    return service["spec"]["clusterIP"], None


async def _node_of_ip(client: ApiClient, ip: str) -> str | None:
    """The node whose pod has `ip`, if any: for the destination half of a trace."""
    pods = await client.list("pods", field_selector=f"status.podIP={ip}")
    for pod in pods.get("items") or []:
        if (pod.get("status") or {}).get("podIP") == ip:
            return (pod.get("spec") or {}).get("nodeName")
    return None


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
) -> None:
    """Can SRC reach DST on PORT? Exit 0 when it connects (TCP) or is answered (UDP)."""
    namespace_src, name = _split_pod(src, namespace)
    protocol = protocol.upper()
    if protocol not in ("TCP", "UDP"):
        raise fail("error: --protocol must be TCP or UDP")

    async def run() -> tuple[str, dict]:
        async with client_for(server, token, kubeconfig) as client:
            obj = await running_pod(client, namespace_src, name)
            ip, _ = await _resolve_destination(client, dst, namespace)
        socket = agent_socket(obj["spec"]["nodeName"], agent_socket_path)
        params = {"src": f"{namespace_src}/{name}", "dst": ip, "port": port, "protocol": protocol, "timeout": timeout}
        return ip, await call_once(socket, "probe", params, timeout=timeout + 30)

    ip, result = run_async(run())
    if result["ok"]:
        typer.echo(f"{namespace_src}/{name} → {ip}:{port}/{protocol}: {result['reason']}")
        return
    dropped = f" (dropped: {', '.join(result['dropped'])})" if result.get("dropped") else ""
    raise fail(f"{namespace_src}/{name} → {ip}:{port}/{protocol}: {result['reason']}{dropped}")


def trace(
    src: Annotated[str, typer.Argument(help="Source pod (NAME or NAMESPACE/NAME).")],
    destination: Annotated[str, typer.Argument(metavar="DST:PORT", help="Destination IP, pod or service, and port.")],
    protocol: Annotated[str, typer.Option(help="TCP or UDP.")] = "TCP",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 2.0,
    namespace: str = NamespaceOption,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    kubeconfig: Path | None = KubeconfigOption,
    agent_socket_path: Path | None = AgentSocketOption,
) -> None:
    """Print a packet's journey from SRC to DST:PORT stage by stage, and its reply's."""
    namespace_src, name = _split_pod(src, namespace)
    dst, _, port_text = destination.rpartition(":")
    if not dst or not port_text.isdigit():
        raise fail(f"error: the destination is DST:PORT, not {destination!r}")
    protocol = protocol.upper()

    async def run() -> tuple[str, list[dict], list[dict]]:
        import asyncio

        async with client_for(server, token, kubeconfig) as client:
            obj = await running_pod(client, namespace_src, name)
            ip, dst_node = await _resolve_destination(client, dst, namespace)
            src_ip = obj["status"]["podIP"]
            src_node = obj["spec"]["nodeName"]
            if dst_node is None:
                dst_node = await _node_of_ip(client, ip)
        params = {"src": f"{namespace_src}/{name}", "dst": ip, "port": int(port_text), "protocol": protocol,
                  "timeout": timeout}
        remote: asyncio.Task | None = None
        if dst_node and dst_node != src_node and not agent_socket_path:
            path = agent_socket(dst_node, None)
            if Path(path).exists():
                watcher = await RpcClient(path).connect()
                watch = {"src": src_ip, "dst": ip, "port": int(port_text), "protocol": protocol, "timeout": timeout}
                remote = asyncio.create_task(watcher.call("trace.watch", watch, timeout=timeout + 10))
                await asyncio.sleep(0.05)  # the watch is registered before the first packet leaves
        try:
            local = await call_once(agent_socket(src_node, agent_socket_path), "trace", params, timeout=timeout + 30)
            far = await remote if remote is not None else []
        finally:
            if remote is not None:
                remote.cancel()
                await watcher.close()
        return ip, local, far

    ip, local, far = run_async(run())
    typer.echo(f"trace {namespace_src}/{name} → {ip}:{port_text}/{protocol}")
    split = next((i + 1 for i, s in enumerate(local) if s["stage"] in ("vxlan-encap", "fou-encap", "drop")), len(local))
    number = 0
    for stage in [*local[:split], *far, *local[split:]]:
        number += 1
        typer.echo(f"{number:>3}. {stage['stage']:<15} {stage['detail']}")
    if local and local[-1]["stage"] == "result" and not local[-1]["detail"].startswith("answered"):
        raise typer.Exit(1)


def capture(
    node: Annotated[str, typer.Option("--node", help="The node whose underlay traffic to capture.")],
    write: Annotated[Path, typer.Option("-w", "--write", help="pcap file to write.")],
    count: Annotated[int, typer.Option("--count", "-c", help="Stop after this many datagrams.")] = 0,
    seconds: Annotated[float, typer.Option("--seconds", help="Stop after this many seconds.")] = 0.0,
    agent_socket_path: Path | None = AgentSocketOption,
) -> None:
    """Capture a node's VXLAN datagrams into a pcap file that Wireshark and tshark decode."""
    from podnet.overlay.wire import pcap

    if not count and not seconds:
        raise fail("error: give --count or --seconds")

    async def run() -> int:
        written = 0
        with write.open("wb") as file:
            writer = pcap.PcapWriter(file, pcap.LinkType.ETHERNET)
            async with RpcClient(agent_socket(node, agent_socket_path)) as rpc:
                async for item in rpc.stream("capture", {"count": count, "seconds": seconds}):
                    frame = pcap.underlay_frame(
                        item["data"], (item["src"], item["sport"]), (item["dst"], item["dport"]), identification=written
                    )
                    writer.write(item["ts"], frame)
                    written += 1
        return written

    written = run_async(run())
    typer.echo(f"{written} datagrams written to {write}", err=True)


DATAPLANE_TABLES = {"counters": "counters", "routes": "routes.list", "conntrack": "conntrack.list", "pods": "pods.list"}


def dataplane(
    node: Annotated[str, typer.Argument(help="The node whose dataplane to show.")],
    table: Annotated[str, typer.Argument(help="counters, routes, conntrack or pods.")] = "counters",
    agent_socket_path: Path | None = AgentSocketOption,
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
