"""What the long-running commands (apiserver, nodeagent, kubeproxy, cloud-lb) share: their common options,
the check of a choice, and running `serve(config)` until SIGTERM or SIGINT."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import typer

Server = Annotated[str, typer.Option(envvar="PODNET_SERVER", help="API server URL.")]
Token = Annotated[str | None, typer.Option(envvar="PODNET_TOKEN", help="Bearer token.")]
MetricsPort = Annotated[int, typer.Option(help="Port of /healthz and /metrics (0: any free port, -1: none).")]
LogLevel = Annotated[str, typer.Option(help="debug, info, warning or error.")]


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
