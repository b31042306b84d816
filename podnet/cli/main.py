"""The `podnet` command.

Each module of this package that defines `register(app)` adds commands; `COMMANDS` names them, and a
module is imported only when one of its commands runs (or `--help` lists them all). Processes are started
as `podnet <command>`, and importing every module for every start would cost each of them the imports of
all the others (aiohttp servers, policy compilers, the cluster supervisor...). A module missing from the
table still works: its commands are found by importing the unlisted modules when a name is not known.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer
import typer.core
import typer.main

import podnet
import podnet.cli

# (module in podnet.cli, the commands its register() adds). tests/test_cli_main.py checks it against
# what each module registers.
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("apiserver_cmd", ("apiserver",)),
    ("bgp_cmd", ("bgp", "routes")),
    ("cloudlb_cmd", ("cloud-lb",)),
    ("cluster_cmd", ("clean", "down", "kill", "logs", "start", "status", "up")),
    ("cni_cmd", ("cni",)),
    ("compose_cmd", ("compose",)),
    ("dns_cmd", ("dig", "dns")),
    ("faults_cmd", ("partition",)),
    ("ingress_cmd", ("ingress",)),
    ("kubeproxy_cmd", ("kubeproxy",)),
    ("nodeagent_cmd", ("nodeagent",)),
    ("pods_cmd", ("capture", "dataplane", "exec", "probe", "trace")),
    ("policy_cmd", ("explain", "flows", "matrix")),
    ("resources", ("apply", "delete", "describe", "get")),
    ("ui_cmd", ("ui", "ui-token")),
)

_MODULE_OF = {command: module for module, commands in COMMANDS for command in commands}


# What register() adds: plain commands, and groups of them (`podnet bgp ...`).
Command = typer.core.TyperCommand | typer.core.TyperGroup


def module_commands(module: str) -> dict[str, Command]:
    """The click commands `podnet.cli.<module>`'s register() adds, by name."""
    sub_app = typer.Typer()
    importlib.import_module(f"podnet.cli.{module}").register(sub_app)
    return dict(typer.main.get_group(sub_app).commands)


def unlisted_modules() -> list[str]:
    """The modules of this package that `COMMANDS` does not name."""
    listed = {module for module, _ in COMMANDS} | {"main"}
    return sorted(m.name for m in pkgutil.iter_modules(podnet.cli.__path__) if m.name not in listed)


class LazyCommands(typer.core.TyperGroup):
    """The commands of `COMMANDS`, each built from its module the first time it is asked for."""

    _unlisted_loaded = False

    def _add_module(self, module: str) -> None:
        for name, command in module_commands(module).items():
            self.add_command(command, name)

    def _add_unlisted(self) -> None:
        if not self._unlisted_loaded:
            self._unlisted_loaded = True
            for module in unlisted_modules():
                if hasattr(importlib.import_module(f"podnet.cli.{module}"), "register"):
                    self._add_module(module)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        self._add_unlisted()
        return sorted({*super().list_commands(ctx), *_MODULE_OF})

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            if cmd_name in _MODULE_OF:
                self._add_module(_MODULE_OF[cmd_name])
            else:
                self._add_unlisted()
            command = self.commands.get(cmd_name)
        return command


def _help_without_type_names() -> None:
    """Recent typer writes every parameter's type in the help, in brackets, flags and --help included
    (`--demo <bool>`, `--nodes <int>`, `NAME <str>`). podnet's help, like kubectl's, names a value only where
    an option declares a metavar; defaults and the words of the help say the rest."""
    option_display = getattr(typer.core.TyperOption, "display_type_rich", None)
    if option_display is None:  # an older typer, which shows no such thing
        return
    typer.core.TyperOption.display_type_rich = lambda self, ctx: self.metavar  # type: ignore[method-assign]
    typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]


_help_without_type_names()

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
