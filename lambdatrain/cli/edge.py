"""The CLI's edge: a domain error becomes one line on stderr and exit status 1.

Shared by every command module (cli.py, cli_ops.py), so there is one way an error reaches a user.
"""

from __future__ import annotations

import functools
from typing import Callable

from rich.console import Console

from lambdatrain.protocol.errors import LambdaTrainError

err = Console(stderr=True, highlight=False, soft_wrap=True)  # an error is one line, whatever the width


def report(exc: LambdaTrainError) -> None:
    err.print(f"error: {exc}", markup=False)


def domain_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Wrap a command so a domain error exits 1 with one line, however the app is invoked."""

    @functools.wraps(fn)
    def command(*args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except LambdaTrainError as exc:
            report(exc)
            # SystemExit, not typer.Exit: under main()'s standalone_mode=False click returns an
            # Exit's code instead of raising it, and the process would exit 0.
            raise SystemExit(1) from None

    return command
