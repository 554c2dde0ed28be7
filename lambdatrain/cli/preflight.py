"""``lambdatrain preflight``: before ``pulumi up`` or ``start``, what the account's Lambda limits will refuse.

One line per finding (``error:`` the account will refuse it, ``warning:`` it may), exit status 1
if anything would be refused, else 0; ``--json`` prints lambdatrain/ops/preflight.py's report.
AWS client errors end as one line, as in every operator command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ContextManager, Optional

import typer
from rich.console import Console

from lambdatrain.cli.edge import Command
from lambdatrain.cli.settings import help_for
from lambdatrain.ops.target import aws_errors
from lambdatrain.protocol.config import DEFAULTS, SETTINGS, START


class PreflightCommand(Command):
    """botocore's errors (no credentials, access denied, no region) as one line."""

    def guard(self) -> ContextManager[None]:
        return aws_errors()


def _range(name: str) -> dict[str, int]:
    """The run setting's declared bounds, as click checks them (a usage error, exit 2)."""
    return {"min": int(SETTINGS[name].low), "max": int(SETTINGS[name].high)}


def preflight_command(
    stack_outputs: Annotated[Optional[Path], typer.Option(
        help="a deployed stack: the JSON of 'pulumi stack output --json'")] = None,
    stack_config: Annotated[Optional[Path], typer.Option(
        help="a stack before 'pulumi up': its Pulumi.<stack>.yaml (unset keys take their defaults)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="workers of the run to check (default: the stack's "
                                                        "workers)", **_range("workers"))] = None,
    combine_shards: Annotated[int, typer.Option(help=help_for("combine_shards", START),
                                                **_range("combine_shards"))] = DEFAULTS["combine_shards"],
    region: Annotated[Optional[str], typer.Option(help="AWS region (default: the stack's, else boto3's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Say what the account's Lambda limits will refuse.

    Checks the stack's reserved concurrency, a run's workers and combine shards, and memory above
    what new accounts allow against the account's GetAccountSettings. Exit status 1 if anything
    would be refused.
    """
    from lambdatrain.ops import preflight

    result = preflight.preflight(stack_outputs=stack_outputs, stack_config=stack_config, workers=workers,
                                 combine_shards=combine_shards, region=region)
    if as_json:
        print(json.dumps(result))
    else:
        out = Console(highlight=False, soft_wrap=True)  # a finding is one line, whatever the width
        for line in preflight.lines(result):
            out.print(line, markup=False)
    if not result["ok"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("preflight", cls=PreflightCommand)(preflight_command)
