"""The `podnet` command. Each module in this package that defines `register(app)` adds its commands."""

import importlib
import pkgutil

import typer

import podnet
import podnet.cli

app = typer.Typer(
    name="podnet",
    help="Kubernetes networking as real processes exchanging real traffic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(podnet.cli.__path__)):
    if _module != "main":
        _register = getattr(importlib.import_module(f"podnet.cli.{_module}"), "register", None)
        if _register is not None:
            _register(app)


@app.callback()
def main() -> None:
    """Kubernetes networking as real processes exchanging real traffic."""


@app.command()
def version() -> None:
    """Print podnet's version."""
    typer.echo(podnet.__version__)


def run() -> None:
    app()
