"""`podnet ingress`: the ingress controller, HTTP host and path routing to Services' pods."""

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


def ingress(
    server: Server = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    kubeconfig: Kubeconfig = None,
    address: Annotated[str, typer.Option(help="Address to serve HTTP on, written into the Ingresses' status.")] = "127.0.0.10",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 80,
    kubelet_client_certificate: Annotated[
        str | None, typer.Option(help="Certificate presented to the kubelets' API, to reach pods' ports.")] = None,
    kubelet_client_key: Annotated[str | None, typer.Option(help="Its key.")] = None,
    kubelet_certificate_authority: Annotated[
        str | None, typer.Option(help="CA the kubelets' serving certificates chain to.")] = None,
    metrics_port: MetricsPort = 0,
    log_level: LogLevel = "info",
) -> None:
    """Run the ingress controller of the IngressClasses whose controller is podnet.io/ingress."""
    from podnet import logs
    from podnet.apiserver.ingressproxy import IngressConfig, serve

    if not 0 < port < 65536:
        typer.echo(f"error: --port {port} is not a port number", err=True)
        raise typer.Exit(2)
    api = require_server(api_credentials(server, token_file, ca_file, kubeconfig))
    logs.setup("ingress", log_level)
    config = IngressConfig(server=api.server, fallbacks=api.fallbacks, token=api.token, tls=api.tls, address=address, port=port,
                           kubelet_cert=kubelet_client_certificate, kubelet_key=kubelet_client_key,
                           kubelet_ca=kubelet_certificate_authority, metrics_port=metrics_port_or_none(metrics_port))
    run(serve, config)


def register(app: typer.Typer) -> None:
    app.command("ingress")(ingress)
