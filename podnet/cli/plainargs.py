"""Runs a typer command function with argparse instead of typer's parser.

Long-running processes start often (a killed kube-proxy must be back within a second) and typer's
parser validates every option through pydantic, whose import alone costs over half a second of CPU.
`run(fn)` reads the same signature typer reads (`Annotated[type, typer.Option(help=..., envvar=...)]`),
so a command keeps one definition of its options for both `podnet <command>` and its `python -m` entry.
Only what processes use is supported: str, int, float and bool options, optionally `| None`.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import typer
from typer.models import OptionInfo

_CONVERTERS: dict[type, Callable[[str], Any]] = {str: str, int: int, float: float}


def _option(hint: Any) -> tuple[type, OptionInfo]:
    if typing.get_origin(hint) is not typing.Annotated:
        raise TypeError(f"{hint!r} is not Annotated[type, typer.Option(...)]")
    kind, *extras = typing.get_args(hint)
    info = next((e for e in extras if isinstance(e, OptionInfo)), None)
    if info is None:
        raise TypeError(f"{hint!r} carries no typer.Option")
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        if len(members) != 1:
            raise TypeError(f"{kind!r}: only `X | None` unions are supported")
        kind = members[0]
    if kind is not bool and kind not in _CONVERTERS:
        raise TypeError(f"{kind!r} options are not supported")
    return kind, info


def parser_for(fn: Callable[..., Any]) -> argparse.ArgumentParser:
    """An argparse parser with the options typer would build for `fn`."""
    parser = argparse.ArgumentParser(description=inspect.getdoc(fn))
    hints = typing.get_type_hints(fn, include_extras=True)
    for name, parameter in inspect.signature(fn).parameters.items():
        kind, info = _option(hints[name])
        flag = "--" + name.replace("_", "-")
        envvar = info.envvar if isinstance(info.envvar, str) else None
        default = parameter.default
        if envvar and os.environ.get(envvar):
            default = os.environ[envvar]
        required = default is inspect.Parameter.empty
        help_text = f"{info.help or ''} [env: {envvar}]" if envvar else info.help
        if kind is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=bool(default), help=help_text
            )
        else:
            parser.add_argument(
                flag,
                dest=name,
                type=_CONVERTERS[kind],
                default=None if required else default,
                required=required,
                help=help_text,
            )
    return parser


def run(fn: Callable[..., Any], argv: Sequence[str] | None = None) -> None:
    """Parses `argv` (default: the process's) for `fn` and calls it; a `typer.Exit` becomes the exit code."""
    args = parser_for(fn).parse_args(argv)
    try:
        fn(**vars(args))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
