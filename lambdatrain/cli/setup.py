"""``lambdatrain setup``: install the pinned packages and prepare the dataset on a stack's EFS, once.

Sends the starter's setup event asynchronously and follows it to the end with a progress display
(lambdatrain/ops/setup.py); exit status 0 when setup is done, 1 with one line when it failed or
did not end in time. Takes the target options of every operator command (cli/ops.py).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich.console import Console

from lambdatrain.cli.ops import OperatorCommand
from lambdatrain.ops.target import TargetOptions, resolve
from lambdatrain.roles.setup import SetupEvent

_DEFAULTS = SetupEvent()  # the event's defaults, declared once there


def setup_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="S3 key of the dataset archive in the stack's bucket")] = _DEFAULTS.dataset,
    force: Annotated[bool, typer.Option("--force", help="prepare the dataset again even if it is prepared")] = False,
    val_fraction: Annotated[float, typer.Option(
        help="share of train kept for validation when the archive has no test split")] = _DEFAULTS.val_fraction,
    seed: Annotated[int, typer.Option(help="seeds the stored train order")] = _DEFAULTS.seed,
    lease: Annotated[float, typer.Option(help="seconds the lock outlives a setup that was killed")] = _DEFAULTS.lease_s,
    timeout: Annotated[float, typer.Option(help="stop following after this many seconds")] = 1800.0,
    interval: Annotated[float, typer.Option(help="seconds between reads of the ledger")] = 2.0,
) -> None:
    """Install the packages and prepare the dataset on the stack's EFS.

    Sends the setup event asynchronously and follows it to the end. Only one setup runs at a
    time; a second one waits for it. Exit status 1 if setup failed.
    """
    from lambdatrain.ops.setup import SetupDisplay, run_setup, setup_event
    from lambdatrain.ops.views import plural

    target = resolve(TargetOptions(**dataclasses.asdict(ctx.meta["target"])))
    event = setup_event(dataset=dataset, force=force or None, val_fraction=val_fraction, seed=seed, lease_s=lease)
    console = Console(highlight=False, soft_wrap=True)
    record = run_setup(target, event, SetupDisplay(console), interval=interval, timeout=timeout)
    versions = record.steps.get("packages", {}).get("versions") or []
    torch = next((v for v in versions if v.startswith("torch==")), None)
    console.print(f"setup done (attempt {record.attempt}): {plural(len(versions), 'package')}"
                  + (f" ({torch})" if torch else "") + ", dataset ready", markup=False)


def register(app: typer.Typer) -> None:
    app.command("setup", cls=OperatorCommand)(setup_command)
