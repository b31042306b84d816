"""What the long-running commands (apiserver, nodeagent, kubeproxy, cloud-lb, dns, bgp) share: their common
options, how they find the API server, the check of a choice, and running `serve(config)` until SIGTERM or
SIGINT."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Annotated, Any

import typer

from podnet import kubeconfig
from podnet.kubeconfig import Credentials

Server = Annotated[str | None, typer.Option(envvar="PODNET_SERVER", help="API server URL (default: the --kubeconfig's).")]
TokenFile = Annotated[str | None, typer.Option(help="File holding the bearer token.")]
CaFile = Annotated[str | None, typer.Option(help="CA certificate (PEM) the API server's certificate must chain to.")]
Kubeconfig = Annotated[str | None, typer.Option(help="kubeconfig with the server, its CA and our credentials.")]
MetricsPort = Annotated[int, typer.Option(help="Port of /healthz and /metrics (0: any free port, -1: none).")]
LogLevel = Annotated[str, typer.Option(help="debug, info, warning or error.")]


def api_credentials(server: str | None, token_file: str | None, ca_file: str | None,
                    kubeconfig_path: str | None) -> Credentials | None:
    """The API server and how to reach it: the --kubeconfig's, each part overridden by its own option; None
    when neither --server nor --kubeconfig is given. A bad file ends the command with one line and exit 2.
    Secrets come from files only: a command line is public (`ps`)."""
    try:
        base = kubeconfig.load(kubeconfig_path) if kubeconfig_path else None
        fallbacks = base.fallbacks if base and not server else ()  # a server given names one server
        server = server or (base.server if base else None)
        if server is None:
            return None
        token = kubeconfig.read_token(token_file) if token_file else (base.token if base else None)
        tls = base.tls if base else kubeconfig.ClientTls()
        if ca_file:
            tls = replace(tls, ca_pem=kubeconfig.read_pem(ca_file))
    except kubeconfig.KubeconfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return Credentials(server, token, tls, fallbacks)


def require_server(credentials: Credentials | None) -> Credentials:
    if credentials is None:
        typer.echo("error: give --kubeconfig FILE or --server URL", err=True)
        raise typer.Exit(2)
    return credentials


def check_choice(option: str, value: str, choices: Sequence[str]) -> None:
    """Ends the command with one line and exit 2 unless `value` is one of `choices`."""
    if value not in choices:
        typer.echo(f"error: --{option} must be one of {', '.join(choices)}, not {value!r}", err=True)
        raise typer.Exit(2)


def metrics_port_or_none(port: int) -> int | None:
    """The --metrics-port convention: -1 means no status server."""
    return None if port < 0 else port


def run(serve: Callable[..., Awaitable[None]], config: Any) -> None:
    """Runs `serve(config, shutdown_trigger=...)` until SIGTERM or SIGINT."""
    from podnet import process

    process.run(lambda shutdown: serve(config, shutdown_trigger=shutdown.wait))
