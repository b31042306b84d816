"""`podnet cloud-lb`: the emulated cloud controller and load balancer for LoadBalancer Services."""

from __future__ import annotations

from typing import Annotated

import typer

from podnet.cli.daemon import (
    CaFile,
    Kubeconfig,
    LogLevel,
    MetricsPort,
    Server,
    TokenFile,
    api_credentials,
    metrics_port_or_none,
    require_server,
    run,
)


def cloud_lb(
    server: Server = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    kubeconfig: Kubeconfig = None,
    pool: Annotated[str, typer.Option(help="Addresses handed to LoadBalancer Services.")] = "127.0.1.0/24",
    address: Annotated[str, typer.Option(help="Address of /healthz and /metrics.")] = "127.0.0.10",
    metrics_port: MetricsPort = 0,
    health_interval: Annotated[
        float, typer.Option(help="Seconds between two health checks of each node.")
    ] = 1.0,
    log_level: LogLevel = "info",
) -> None:
    """Run the cloud load balancer: addresses from the pool, listeners on them, PROXY v2 to healthy nodes."""
    import ipaddress

    from podnet import logs
    from podnet.cloudlb.balancer import CloudLbConfig, serve

    try:
        ipaddress.IPv4Network(pool)
    except ValueError as exc:
        typer.echo(f"error: --pool {pool!r}: {exc}", err=True)
        raise typer.Exit(2) from None
    api = require_server(api_credentials(server, token_file, ca_file, kubeconfig))
    logs.setup("cloud-lb", log_level)
    config = CloudLbConfig(
        server=api.server,
        fallbacks=api.fallbacks,
        token=api.token,
        tls=api.tls,
        pool=pool,
        address=address,
        metrics_port=metrics_port_or_none(metrics_port),
        health_interval=health_interval,
    )
    run(serve, config)


def register(app: typer.Typer) -> None:
    app.command("cloud-lb")(cloud_lb)
