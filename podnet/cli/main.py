"""The `podnet` command.

Each module of this package that defines `register(app)` adds commands; `COMMANDS` names them, and a
module is imported only when one of its commands runs (or `--help` lists them all). Processes are started
as `podnet <command>`, and importing every module for every start would cost each of them the imports of
all the others (aiohttp servers, policy compilers, the cluster supervisor...).
"""

from __future__ import annotations

import importlib

import typer
import typer.core
import typer.main

import podnet

# (module in podnet.cli, the commands its register() adds). tests/test_cli_main.py checks it against
# what each module registers.
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("apiserver_cmd", ("apiserver",)),
    ("bgp_cmd", ("bgp", "routes")),
    ("cloudlb_cmd", ("cloud-lb",)),
    ("cluster_cmd", ("clean", "down", "kill", "logs", "start", "status", "up")),
    ("compose_cmd", ("compose",)),
    ("dns_cmd", ("dig", "dns")),
    ("kubeproxy_cmd", ("kubeproxy",)),
    ("nodeagent_cmd", ("nodeagent",)),
    ("pods_cmd", ("capture", "dataplane", "exec", "probe", "trace")),
    ("policy_cmd", ("explain", "flows", "matrix")),
    ("resources", ("apply", "delete", "describe", "get")),
)

_MODULE_OF = {command: module for module, commands in COMMANDS for command in commands}


# What register() adds: plain commands, and groups of them (`podnet bgp ...`).
Command = typer.core.TyperCommand | typer.core.TyperGroup


def module_commands(module: str) -> dict[str, Command]:
    """The click commands `podnet.cli.<module>`'s register() adds, by name."""
    sub_app = typer.Typer()
    importlib.import_module(f"podnet.cli.{module}").register(sub_app)
    return dict(typer.main.get_group(sub_app).commands)


class LazyCommands(typer.core.TyperGroup):
    """The commands of `COMMANDS`, each built from its module the first time it is asked for."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_MODULE_OF})

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _MODULE_OF:
            for name, loaded in module_commands(_MODULE_OF[cmd_name]).items():
                self.add_command(loaded, name)
            command = self.commands.get(cmd_name)
        return command


app = typer.Typer(
    name="podnet",
    help="Kubernetes networking as real processes exchanging real traffic.",
    cls=LazyCommands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Kubernetes networking as real processes exchanging real traffic."""


@app.command()
def version() -> None:
    """Print podnet's version."""
    typer.echo(podnet.__version__)


def run() -> None:
    app()
