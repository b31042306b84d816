"""`podnet kubeproxy`: runs one node's kube-proxy (also `python -m podnet.nodeagent.kubeproxy`)."""

from __future__ import annotations

from typing import Annotated

import typer


def kubeproxy(
    node: Annotated[str, typer.Option(help="The node this kube-proxy programs.")],
    agent_socket: Annotated[str, typer.Option(help="The node agent's RPC socket (agent.sock).")],
    server: Annotated[str, typer.Option(envvar="PODNET_SERVER", help="API server URL.")],
    token: Annotated[str | None, typer.Option(envvar="PODNET_TOKEN", help="Bearer token.")] = None,
    mode: Annotated[
        str, typer.Option(help="iptables: ordered rules walked per connection; ipvs: hash tables.")
    ] = "iptables",
    address: Annotated[
        str | None,
        typer.Option(
            help="Address for /healthz, /metrics and health-check ports (default: the Node's InternalIP)."
        ),
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(help="Port of /healthz and /metrics (0: any free port, -1: none).")
    ] = 0,
    service_cidr: Annotated[
        str, typer.Option(help="The ClusterIP range: unused addresses in it are rejected.")
    ] = "10.96.0.0/12",
    min_sync_interval: Annotated[float, typer.Option(help="Seconds between two syncs at the least.")] = 0.05,
    max_sync_interval: Annotated[float, typer.Option(help="Seconds between two syncs at the most.")] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run kube-proxy: watches Services and EndpointSlices and programs the node agent's service table."""
    from podnet import logs, process
    from podnet.nodeagent.kubeproxy.proxier import ProxyConfig, serve
    from podnet.nodeagent.kubeproxy.rules import MODES

    if mode not in MODES:
        typer.echo(f"error: --mode must be one of {', '.join(MODES)}, not {mode!r}", err=True)
        raise typer.Exit(2)
    logs.setup(f"kube-proxy/{node}", log_level)
    config = ProxyConfig(
        node=node,
        mode=mode,
        server=server,
        token=token,
        agent_socket=agent_socket,
        address=address,
        metrics_port=None if metrics_port < 0 else metrics_port,
        service_cidr=service_cidr,
        min_sync_interval=min_sync_interval,
        max_sync_interval=max_sync_interval,
    )
    process.run(lambda shutdown: serve(config, shutdown_trigger=shutdown.wait))


def register(app: typer.Typer) -> None:
    app.command("kubeproxy")(kubeproxy)
