"""`podnet exec`, `probe`, `trace` and `capture`: what a pod sees of the network, asked of the agent of
the pod's node over its RPC socket.

The pod's node comes from the API (`spec.nodeName`); the node's agent socket is
`$PODNET_HOME/nodes/<node>/agent.sock`, or `--agent-socket`.
"""

from __future__ import annotations

import asyncio
import ipaddress
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
from podnet.client import ApiClient, ApiError
from podnet.nodeagent.kubelet import commands
from podnet.rpc.session import RpcClient, call_once

NamespaceOption = typer.Option("default", "--namespace", "-n", help="Namespace of the pod.")
AgentSocketOption = typer.Option(None, "--agent-socket", help="The node agent's RPC socket (default: found by node name).")

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
    namespace, name = _split_pod(pod, namespace)

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


async def _visible(client: ApiClient, kind: str, namespace: str, **selectors: str) -> list[dict]:
    """The objects of `kind` in every namespace, or in `namespace` alone for a user whose role covers no
    more (an `edit:<namespace>` token)."""
    try:
        listed = await client.list(kind, **selectors)
    except ApiError as exc:
        if exc.code != 403:
            raise
        listed = await client.list(kind, namespace, **selectors)
    return listed.get("items") or []


async def _node_of_ip(client: ApiClient, ip: str, namespace: str) -> str | None:
    """The node whose pod has `ip`, if any: for the destination half of a trace."""
    for pod in await _visible(client, "pods", namespace, field_selector=f"status.podIP={ip}"):
        if (pod.get("status") or {}).get("podIP") == ip:
            return (pod.get("spec") or {}).get("nodeName")
    return None


async def _service_at(client: ApiClient, ip: str, namespace: str) -> dict | None:
    """The Service whose ClusterIP is `ip`, if any."""
    for service in await _visible(client, "services", namespace):
        spec = service.get("spec") or {}
        if ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]):
            return service
    return None


def _service_port(service: dict, port: str, protocol: str) -> dict | None:
    """The port of the Service that a trace names, by number or by name."""
    for service_port in (service.get("spec") or {}).get("ports") or []:
        named = (str(service_port.get("port")), service_port.get("name"))
        if service_port.get("protocol", "TCP") == protocol and port in named:
            return service_port
    return None


async def _endpoints_by_node(client: ApiClient, service: dict, service_port: dict) -> dict[str, list[dict]]:
    """node -> `{"dst", "port"}` of each ready endpoint of the Service port on that node: where the source
    node's DNAT may send the packet. As kube-proxy does, the slices' port of the same name and protocol
    gives the number (a named targetPort arrives resolved per pod), and an endpoint counts unless its
    `ready` condition is false."""
    meta = service["metadata"]
    slices = await client.list(
        "endpointslices", meta["namespace"], label_selector=f"kubernetes.io/service-name={meta['name']}"
    )
    name, protocol = service_port.get("name") or "", service_port.get("protocol", "TCP")
    by_node: dict[str, list[dict]] = {}
    for endpoint_slice in slices.get("items") or []:
        numbers = [
            p["port"] for p in endpoint_slice.get("ports") or []
            if (p.get("name") or "") == name and (p.get("protocol") or "TCP") == protocol and p.get("port")
        ]
        if not numbers:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            node = endpoint.get("nodeName")
            if not node or (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                by_node.setdefault(node, []).append({"dst": address, "port": numbers[0]})
    return by_node


async def _far_half(watches: list[asyncio.Task], grace: float = 1.0) -> list[dict]:
    """The stages of the watch that saw the flow arrive, once the local half is over. By then the packet
    has crossed (its answer came back, or the probe gave up long after it left), so that watch returns
    within moments; the others would only wait out their timeout with nothing, and are not waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    pending = set(watches)
    while pending:
        done, pending = await asyncio.wait(
            pending, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            break
        for task in done:
            if stages := task.result():
                return stages
    return []


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
    destination: Annotated[
        str, typer.Argument(metavar="DST:PORT[/PROTOCOL]",
                            help="Destination IP, pod or service; port number or name; tcp (default) or udp.")
    ],
    protocol: Annotated[str, typer.Option(help="TCP or UDP.")] = "TCP",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 2.0,
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
    namespace_src, name = _split_pod(src, namespace)
    dst, _, port_text = destination.rpartition(":")
    port_text, slash, named_protocol = port_text.partition("/")
    if not dst or not port_text or (slash and not named_protocol):
        raise fail(f"error: the destination is DST:PORT[/PROTOCOL], not {destination!r}")
    protocol = (named_protocol or protocol).upper()
    if protocol not in ("TCP", "UDP"):
        raise fail(f"error: the protocol is TCP or UDP, not {named_protocol or protocol!r}")

    async def run() -> tuple[str, int, list[dict], list[dict]]:
        async with client_for(server, token, kubeconfig) as client:
            obj = await running_pod(client, namespace_src, name)
            ip, dst_node = await _resolve_destination(client, dst, namespace)
            src_ip = obj["status"]["podIP"]
            src_node = obj["spec"]["nodeName"]
            dst_node = dst_node or await _node_of_ip(client, ip, namespace)
            service = None if dst_node else await _service_at(client, ip, namespace)
            service_port = _service_port(service, port_text, protocol) if service else None
            if service_port:
                port = service_port["port"]
                targets = await _endpoints_by_node(client, service, service_port)
            elif port_text.isascii() and port_text.isdigit():
                port = int(port_text)
                targets = {dst_node: [{"dst": ip, "port": port}]} if dst_node else {}
            else:
                raise fail(f"error: {port_text!r} is neither a port number nor a port of a Service at {ip}")
        targets.pop(src_node, None)  # the local half shows what happens on the source node
        params = {"src": f"{namespace_src}/{name}", "dst": ip, "port": port, "protocol": protocol,
                  "timeout": timeout}
        watchers: list[RpcClient] = []
        watches: list[asyncio.Task] = []
        try:
            for node, matches in targets.items():
                path = agent_socket(node, None)
                if agent_socket_path or not Path(path).exists():
                    continue
                watchers.append(watcher := await RpcClient(path).connect())
                watch = {"src": src_ip, "matches": matches, "protocol": protocol, "timeout": timeout}
                watches.append(asyncio.create_task(watcher.call("trace.watch", watch, timeout=timeout + 10)))
                # The agent starts calls in the order they arrive: once it has answered this ping, the
                # watch is in place, before the probe's first packet leaves.
                await watcher.call("ping")
            local = await call_once(
                agent_socket(src_node, agent_socket_path), "trace", params, timeout=timeout + 30
            )
            far = await _far_half(watches)
        finally:
            for task in watches:
                task.cancel()
            for watcher in watchers:
                await watcher.close()
        return ip, port, local, far

    ip, port, local, far = run_async(run())
    typer.echo(f"trace {namespace_src}/{name} → {ip}:{port}/{protocol}")
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
    home: Path | None = HomeOption,
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
