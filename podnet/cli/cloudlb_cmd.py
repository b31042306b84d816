"""`podnet cloud-lb`: the emulated cloud controller and load balancer for LoadBalancer Services."""

from __future__ import annotations

from typing import Annotated

import typer


def cloud_lb(
    server: Annotated[str, typer.Option(envvar="PODNET_SERVER", help="API server URL.")],
    token: Annotated[str | None, typer.Option(envvar="PODNET_TOKEN", help="Bearer token.")] = None,
    pool: Annotated[str, typer.Option(help="Addresses handed to LoadBalancer Services.")] = "127.0.1.0/24",
    address: Annotated[str, typer.Option(help="Address of /healthz and /metrics.")] = "127.0.0.10",
    metrics_port: Annotated[
        int, typer.Option(help="Port of /healthz and /metrics (0: any free port, -1: none).")
    ] = 0,
    health_interval: Annotated[
        float, typer.Option(help="Seconds between two health checks of each node.")
    ] = 1.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the cloud load balancer: addresses from the pool, listeners on them, PROXY v2 to healthy nodes."""
    import ipaddress

    from podnet import logs, process
    from podnet.apiserver.cloudlb import CloudLbConfig, serve

    try:
        ipaddress.IPv4Network(pool)
    except ValueError as exc:
        typer.echo(f"error: --pool {pool!r}: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.setup("cloud-lb", log_level)
    config = CloudLbConfig(
        server=server,
        token=token,
        pool=pool,
        address=address,
        metrics_port=None if metrics_port < 0 else metrics_port,
        health_interval=health_interval,
    )
    process.run(lambda shutdown: serve(config, shutdown_trigger=shutdown.wait))


def register(app: typer.Typer) -> None:
    app.command("cloud-lb")(cloud_lb)
