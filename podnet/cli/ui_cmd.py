"""`podnet ui`: the web view of a local cluster, and `podnet ui-token`, the tokens to log in with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from podnet.cli.daemon import CaFile, LogLevel, Server, api_credentials, require_server, run


def ui(
    server: Server = None,
    ca_file: CaFile = None,
    kubeconfig: Annotated[str | None, typer.Option(
        help="kubeconfig naming the API server and its CA (any credential in it is not used: users log in "
             "with their own token).")] = None,
    home: Annotated[Path | None, typer.Option(
        envvar="PODNET_HOME", help="The local cluster's home: its agents' sockets and processes (default ~/.podnet).")
    ] = None,
    address: Annotated[str, typer.Option(help="Address to serve the page on.")] = "127.0.0.10",
    port: Annotated[int, typer.Option(help="Port to serve the page on (0: any free port).")] = 6447,
    log_level: LogLevel = "info",
) -> None:
    """Serve the live web view of the cluster: topology, service maps, the policy matrix, traces."""
    from podnet import logs
    from podnet.client import podnet_home
    from podnet.ui.server import UiConfig, serve

    api = require_server(api_credentials(server, None, ca_file, kubeconfig))
    logs.setup("ui", log_level)
    config = UiConfig(server=api.server, tls=api.tls, home=(home or podnet_home()).expanduser(), address=address,
                      port=port)
    run(serve, config)


def ui_token(
    viewer: Annotated[bool, typer.Option("--viewer", help="The read-only viewer's token.")] = False,
    home: Annotated[Path | None, typer.Option(envvar="PODNET_HOME", help="The cluster's home.")] = None,
) -> None:
    """Print a bearer token of the local cluster to log in to the web UI with: the administrator's, or with
    --viewer the read-only viewer's."""
    from podnet.client import podnet_home
    from podnet.cluster import credentials

    user = credentials.VIEWER_USER if viewer else credentials.ADMIN_USER
    token = credentials.user_token((home or podnet_home()).expanduser(), user)
    if token is None:
        typer.echo(f"error: no token of {user} in {credentials.token_file(home or podnet_home())} "
                   "(start a cluster with `podnet up`)", err=True)
        raise typer.Exit(1)
    typer.echo(token)


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
    app.command("ui-token")(ui_token)
