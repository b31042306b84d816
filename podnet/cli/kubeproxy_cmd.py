"""`podnet kubeproxy`: runs one node's kube-proxy (also `python -m podnet.nodeagent.kubeproxy`)."""

from __future__ import annotations

from typing import Annotated

import typer

from podnet.backends import PROXY_MODES, PROXY_MODES_HELP
from podnet.cli.daemon import (
    CaFile,
    Kubeconfig,
    LogLevel,
    MetricsPort,
    Server,
    TokenFile,
    api_credentials,
    check_choice,
    metrics_port_or_none,
    require_server,
    run,
)


def kubeproxy(
    node: Annotated[str, typer.Option(help="The node this kube-proxy programs.")],
    agent_socket: Annotated[str, typer.Option(help="The node agent's RPC socket (agent.sock).")],
    server: Server = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    kubeconfig: Kubeconfig = None,
    mode: Annotated[
        str, typer.Option(help=PROXY_MODES_HELP)
    ] = "iptables",
    address: Annotated[
        str | None,
        typer.Option(
            help="Address for /healthz, /metrics and health-check ports (default: the Node's InternalIP)."
        ),
    ] = None,
    metrics_port: MetricsPort = 0,
    service_cidr: Annotated[
        str, typer.Option(help="The ClusterIP range: unused addresses in it are rejected.")
    ] = "10.96.0.0/12",
    min_sync_interval: Annotated[float, typer.Option(help="Seconds between two syncs at the least.")] = 0.05,
    max_sync_interval: Annotated[float, typer.Option(help="Seconds between two syncs at the most.")] = 30.0,
    log_level: LogLevel = "info",
) -> None:
    """Run kube-proxy: watches Services and EndpointSlices and programs the node agent's service table."""
    from podnet import logs
    from podnet.nodeagent.kubeproxy.proxier import ProxyConfig, serve
    check_choice("mode", mode, PROXY_MODES)
    api = require_server(api_credentials(server, token_file, ca_file, kubeconfig))
    logs.setup(f"kube-proxy/{node}", log_level)
    config = ProxyConfig(
        node=node,
        mode=mode,
        server=api.server,
        fallbacks=api.fallbacks,
        token=api.token,
        tls=api.tls,
        agent_socket=agent_socket,
        address=address,
        metrics_port=metrics_port_or_none(metrics_port),
        service_cidr=service_cidr,
        min_sync_interval=min_sync_interval,
        max_sync_interval=max_sync_interval,
    )
    run(serve, config)


def register(app: typer.Typer) -> None:
    app.command("kubeproxy")(kubeproxy)
