"""What every CLI command shares: finding the API server, running a coroutine, and turning failures into a
one-line message with a non-zero exit instead of a traceback."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from podnet import kubeconfig
from podnet.api.kinds import UnknownKind
from podnet.client import ApiClient, ApiError, podnet_home
from podnet.rpc.session import RpcError


def _use_home(home: Path | None) -> Path | None:
    """`--home X` is `PODNET_HOME=X` for the whole command: everything that finds the cluster (its
    kubeconfig, its nodes' agent sockets) reads PODNET_HOME, so no command can look somewhere else."""
    if home is not None:
        os.environ["PODNET_HOME"] = str(home.expanduser())
    return home


ServerOption = typer.Option(None, "--server", "-s", envvar="PODNET_SERVER", help="API server URL (overrides the kubeconfig's).")
TokenOption = typer.Option(None, "--token", envvar="PODNET_TOKEN", help="Bearer token (overrides the kubeconfig's).")
KubeconfigOption = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG",
                                help="kubeconfig file (default: the cluster home's).")
HomeOption = typer.Option(None, "--home", envvar="PODNET_HOME", callback=_use_home,
                          help="The cluster's home: its kubeconfig and its nodes' agent sockets (default ~/.podnet).")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def client_for(server: str | None, token: str | None, kubeconfig_path: Path | None = None) -> ApiClient:
    """As kubectl: the kubeconfig's cluster and credentials, --server and --token overriding theirs. With
    --server and no kubeconfig at all, the server alone (its certificate checked against the system's CAs)."""
    path = kubeconfig_path or podnet_home() / "kubeconfig"
    if server and not kubeconfig_path and not path.exists():
        return ApiClient(server, token)
    try:
        credentials = kubeconfig.load(path)
    except kubeconfig.KubeconfigError as exc:
        raise fail(f"error: {exc}") from None
    return ApiClient.from_credentials(replace(credentials, server=server or credentials.server,
                                              fallbacks=() if server else credentials.fallbacks,
                                              token=token or credentials.token))


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a command's coroutine; API, RPC and input errors end it with one line and exit 1."""
    try:
        return asyncio.run(coro)
    except ApiError as exc:
        if exc.code == 401:
            # kubectl's words for a credential the server does not take.
            raise fail(f"error: You must be logged in to the server ({exc})") from None
        if exc.code == 0:  # no answer from a server: nothing came "from server"
            raise fail(f"Unable to connect to the server: {exc}" if exc.reason == "ServiceUnavailable" else f"error: {exc}") from None
        reason = f" ({exc.reason})" if exc.reason else ""
        raise fail(f"Error from server{reason}: {exc}") from None
    except RpcError as exc:
        raise fail(f"error: {exc.message}") from None
    except UnknownKind as exc:
        raise fail(f"error: {exc}") from None
    except (ConnectionError, FileNotFoundError) as exc:
        raise fail(f"error: {exc}") from None


def async_command(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return run_async(fn(*args, **kwargs))

    return wrapper


def home() -> Path:
    return podnet_home()
