"""The user's commands: ``lambdatrain local train|serve``, ``evaluate``, the operator commands
(cli/ops.py) and ``plan`` (cli/plan.py).

Each command parses its options and delegates to a keyword-only function. ``main`` is the one
entry point (console script and ``python -m lambdatrain``): click runs standalone there, so a usage
error is its usage line and one error line (exit 2), and a domain error is one line (exit 1,
edge.Command), and so is any other failure, unless ``--debug`` asks for the traceback.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lambdatrain.cli import ops, plan, preflight
from lambdatrain.cli import setup as setup_cli
from lambdatrain.cli.edge import (DEBUG_HELP, Command, debugging, report_unexpected, set_debug,
                                  show_help_without_command, with_groups)
from lambdatrain.cli.settings import settings_group
from lambdatrain.protocol.config import DATASET_CACHE, DATASET_CACHE_HELP, DATASET_HELP, LOCAL_TRAIN

# Plain help and errors (rich_markup_mode=None): click's own usage errors, no boxes, and no
# docstring markup shown raw. Locals stay out of a bug's traceback (they may hold credentials).
app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_show_locals=False)
local_app = typer.Typer(add_completion=False, rich_markup_mode=None)
app.add_typer(local_app, name="local")
console = Console()

# --cache-dir, as every command that prepares a dataset offers it
CacheDir = Annotated[Path, typer.Option(help=DATASET_CACHE_HELP)]


@app.callback(invoke_without_command=True)
def lambdatrain(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Data-parallel training on AWS Lambda, and the same system on this machine."""
    set_debug(debug)
    show_help_without_command(ctx)


@local_app.callback(invoke_without_command=True)
def local(ctx: typer.Context) -> None:
    """Run the system on this machine."""
    show_help_without_command(ctx)


def _prepared(data: Optional[Path], cache_dir: Path) -> Path:
    """The prepared dataset; preparing it (about 36 s for CIFAR-10) shows its steps as it goes."""
    from lambdatrain.ops.progress import Phase
    from lambdatrain.training.data import resolve_dataset

    with Phase(console, "preparing the dataset", lazy=True) as phase:  # lazy: silent when cached
        return resolve_dataset(data, cache_dir, step=phase.step)


@local_app.command("train", cls=with_groups(settings_group(LOCAL_TRAIN)))
def local_train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="folder for checkpoint, metrics and summary.json")] = Path("out/train"),
    cache_dir: CacheDir = DATASET_CACHE,
    resume: Annotated[bool, typer.Option("--resume", help="continue the interrupted run in --out "
                                                          "from its last committed round")] = False,
) -> None:
    """Train on the local stack.

    The local stack is moto and a local Lambda service running the same handlers as on AWS. Every
    run setting is an option (see the README's settings table).
    """
    from lambdatrain.ops.progress import ConsoleDisplay
    from lambdatrain.ops.local_train import TrainRequest, check_out, interrupted, train
    from lambdatrain.protocol.config import parse_config

    settings = dataclasses.asdict(ctx.meta["settings"])
    data = settings.pop("data")  # a dataset on this machine, linked into the mount as the stack's
    parse_config(settings)  # bad settings stop here, before anything starts
    # A resumed run keeps its settings: the ones typed are checked against them, the defaults are not.
    given = frozenset(k for k in settings if ctx.get_parameter_source(k).name != "DEFAULT")
    request = TrainRequest(data=None, out=out, settings=settings, resume=resume, given=given)
    check_out(request)  # an --out that does not fit stops here, before the dataset is prepared
    request.data = None if resume and data is None else _prepared(data, cache_dir)
    if request.data is not None:
        console.print(f"dataset: {request.data}")
    display = ConsoleDisplay(console)
    display.starting("starting the local stack and the run")
    try:
        summary = train(request, display)
    except KeyboardInterrupt:  # Ctrl-C: the stack has stopped (train's with-block); say how to go on
        raise interrupted(out) from None
    finally:
        display.stop()
    console.print(f"checkpoint {summary['checkpoint']}", highlight=False)  # the display printed the rest


@local_app.command("serve", cls=Command)
def local_serve(
    state_dir: Annotated[Path, typer.Option(help="the stack's folder (efs/, logs/, dlq/)")] = Path("out/stack"),
    port: Annotated[int, typer.Option(help="Lambda API port on 127.0.0.1 (0: any free port)")] = 9001,
    data: Annotated[Optional[Path], typer.Option(help="dataset to link into the mount as the default")] = None,
    cache_dir: CacheDir = DATASET_CACHE,
) -> None:
    """Keep the local stack up and print its endpoints.

    For aws-cli or 'lambdatrain start' (--local-state DIR); Ctrl-C stops it.
    """
    from lambdatrain.local.stack import LocalStack, LocalStackConfig
    from lambdatrain.ops.local_train import link_dataset
    from lambdatrain.ops.progress import Phase

    prepared = _prepared(data, cache_dir) if data is not None else None
    with Phase(console, "starting the local stack"):
        stack = LocalStack(LocalStackConfig(state_dir=state_dir, lambda_port=port)).start()
    try:
        if prepared is not None:
            link_dataset(stack.mount, prepared)
        path = stack.write_endpoints()
        ends = stack.endpoints()
        console.print(json.dumps(ends, indent=2), highlight=False)
        console.print(f"endpoints written to {path}\ntry: aws --endpoint-url {ends['lambda']} lambda invoke "
                      f"--function-name starter --cli-binary-format raw-in-base64-out "
                      f"--payload '{{\"start\": true, \"workers\": 6}}' out.json\nCtrl-C stops the stack.",
                      highlight=False)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        try:
            # A timeout, not one endless wait: the kernel may deliver SIGTERM to any of the stack's
            # threads, and Python runs its handler only when the main thread next runs bytecode;
            # blocked in one wait, it never would (seen: `local serve` alive an hour after SIGTERM).
            while not stopped.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        stack.stop()


@app.command("evaluate", cls=Command)
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint.pt written by a run")],
    data: Annotated[Path, typer.Option(help=DATASET_HELP)],
    split: Annotated[str, typer.Option(help="val or train")] = "val",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    cache_dir: CacheDir = DATASET_CACHE,
) -> None:
    """Accuracy and loss of a checkpoint on a dataset."""
    from lambdatrain.training.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint=checkpoint, data=data, split=split, cache_dir=cache_dir)
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"accuracy {result['accuracy']:.2%} on {result['n']} images ({split}), loss {result['loss']:.4f}",
                      highlight=False)


def main() -> None:
    """The console script: click standalone, under the name users type.

    Commands report their own failures (edge.Command); what fails outside a command (a group's
    callback, the option groups' conversion) is caught here, so no traceback reaches a user
    unless --debug or LAMBDATRAIN_DEBUG asks for it.
    """
    try:
        app(prog_name="lambdatrain")
    except Exception as exc:  # noqa: BLE001 - the outermost edge
        if debugging():
            raise
        report_unexpected("lambdatrain", exc)
        sys.exit(1)


# Registered after this module's own commands: --help lists them in this order.
ops.register(app)
plan.register(app)
preflight.register(app)
setup_cli.register(app)
