"""The CLI's edge: the command class every command uses, so a failure becomes one line on stderr and
exit status 1, and a group of options declared once (a dataclass) can join any command.

A domain error is its own sentence. Any other exception (a bug, or a library's error that no
command maps, such as a local-stack process dying) is one line too: the command, the exception's
type and first line, and what to do; ``--debug`` or ``LAMBDATRAIN_DEBUG=1`` shows the traceback
instead. Usage errors (an unknown option or command, a bad type, a missing argument) never reach
this module: click reports them itself (usage line, error line, exit 2) from the app's standalone
entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, ContextManager

import typer
from rich.console import Console
from typer.core import TyperCommand
from typer.exceptions import Abort, Exit, TyperException  # typer's bundled click raises these, not click's

from lambdatrain.protocol.errors import LambdaTrainError

err = Console(stderr=True, highlight=False, soft_wrap=True)  # an error is one line, whatever the width


DEBUG_ENV = "LAMBDATRAIN_DEBUG"  # set to 1: failures show their traceback (as --debug does)
DEBUG_HELP = f"show the traceback of a failure (or set {DEBUG_ENV}=1)"
_debug = {"on": False}  # what the top-level --debug said in this process


def set_debug(on: bool) -> None:
    _debug["on"] = on


def debugging() -> bool:
    """--debug was given, or the environment asks for tracebacks."""
    return _debug["on"] or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def report(exc: LambdaTrainError) -> None:
    # One line whatever the message holds: a function's errorMessage or torch's can span several.
    err.print("error: " + " ".join(str(exc).split()), markup=False)


def report_unexpected(what: str, exc: BaseException) -> None:
    """One line for an exception no command expected: what failed, how, and what to do next."""
    lines = str(exc).strip().splitlines()
    how = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    err.print(f"error: {what} failed ({how}); run it again, and if it fails again add --debug "
              f"(or set {DEBUG_ENV}=1) for the traceback and report it", markup=False)


@dataclasses.dataclass(frozen=True)
class OptionGroup:
    """Options shared by several commands: ``spec`` is a dataclass whose fields Typer reads as
    options (``Annotated[type, typer.Option(...)]``); a command finds the filled-in instance in
    ``ctx.meta[key]``.

    Typer builds options from a callable's signature; a dataclass's ``__init__`` has one, written
    by the standard library from the fields, so a group (even one made with
    ``dataclasses.make_dataclass`` from a declaration) needs no signature surgery.
    """

    key: str
    spec: type

    def command(self) -> TyperCommand:
        probe = typer.Typer(add_completion=False)
        probe.command()(self.spec)
        return typer.main.get_command(probe)  # Typer's bridge to click: a one-command app is that command


class Command(TyperCommand):
    """Every lambdatrain command: its option groups' values in ctx.meta, every failure as one line."""

    groups: tuple[OptionGroup, ...] = ()

    def __init__(self, *args: Any, params: list | None = None, **kwargs: Any) -> None:
        self._group_commands = {group.key: group.command() for group in self.groups}
        shared = [p for command in self._group_commands.values() for p in command.params]
        super().__init__(*args, params=[*(params or []), *shared], **kwargs)

    def guard(self) -> ContextManager[None]:
        """Where a subclass turns a library's exceptions into domain errors (see cli/ops.py)."""
        return contextlib.nullcontext()

    def invoke(self, ctx: typer.Context) -> Any:
        for key, command in self._group_commands.items():
            # The group's own callback converts the values as Typer does and returns the spec.
            ctx.meta[key] = command.callback(**{p.name: ctx.params.pop(p.name) for p in command.params})
        try:
            with self.guard():
                return super().invoke(ctx)
        except (Exit, Abort, TyperException, EOFError):
            raise  # click's own ways to end a command (exit codes, usage errors), and end of input: Aborted!
        except LambdaTrainError as exc:
            if debugging():
                raise
            report(exc)
            raise typer.Exit(1) from None
        except Exception as exc:  # noqa: BLE001 - the edge: whatever it is, the user gets one line
            if debugging():
                raise
            report_unexpected(ctx.command_path, exc)
            raise typer.Exit(1) from None


def with_groups(*groups: OptionGroup, base: type[Command] = Command) -> type[Command]:
    """A command class that adds ``groups``' options after the command's own."""
    return type(base.__name__, (base,), {"groups": groups})


def show_help_without_command(ctx: typer.Context) -> None:
    """A group's callback: bare ``lambdatrain`` (or ``lambdatrain local``) prints its help and exits 0."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)

