"""The operator commands: start, runs, status, watch, stop, resume, plot, export and predict,
against AWS and the local stack alike.

Every command that talks to a stack takes the same target options, declared once as
``lambdatrain.ops.target.TargetOptions`` and added after the command's own by ``OperatorCommand``;
``start`` also takes every run setting (cli/settings.py). The commands that read a run (status,
watch, plot, export) also take the ``--out`` folder of a finished ``local train``. Domain errors, AWS client errors included, end
as one line on stderr and exit code 1. ``register(app)`` adds the commands to the main app.
"""

import dataclasses
import json
import typing
from pathlib import Path
from typing import Annotated, ContextManager, List, Optional

import typer
from rich.console import Console

from lambdatrain.cli.edge import Command, OptionGroup, with_groups
from lambdatrain.cli.settings import settings_group
from lambdatrain.ops.target import TargetOptions, aws_errors, resolve
from lambdatrain.protocol.config import START


def _target_spec() -> type:
    """TargetOptions' fields as Typer options, with the help TargetOptions declares."""
    hints = typing.get_type_hints(TargetOptions)
    return dataclasses.make_dataclass("TargetFlags", [
        (f.name, Annotated[hints[f.name], typer.Option(help=f.metadata["help"])], dataclasses.field(default=None))
        for f in dataclasses.fields(TargetOptions)])


TARGET = OptionGroup("target", _target_spec())


class OperatorCommand(Command):
    """A command against a stack: the target options, and botocore's errors as domain errors."""

    groups = (TARGET,)

    def guard(self) -> ContextManager[None]:
        return aws_errors()


def _target(ctx: typer.Context) -> TargetOptions:
    return TargetOptions(**dataclasses.asdict(ctx.meta["target"]))


def _console() -> Console:
    out = Console(highlight=False, soft_wrap=True)  # long lines (JSON answers) stay whole
    if not out.is_terminal:
        out = Console(highlight=False, soft_wrap=True, width=120)  # pipes and CI: room for the tables
    return out


def _hint(target: TargetOptions) -> str:
    flags = resolve(target).flags
    return (" " + " ".join(flags)) if flags else ""


RunArg = Annotated[Optional[str], typer.Argument(help="run id, or the --out folder of 'local train'")]


def start(
    ctx: typer.Context,
    run: Annotated[Optional[str], typer.Option(help="run id (default: a new one, made here; retries reuse it)")] = None,
    via_s3: Annotated[bool, typer.Option("--via-s3", help="upload start/<run>.json to the bucket instead")] = False,
) -> None:
    """Start a run through the deployed starter.

    Invokes the starter with the start payload (or, with --via-s3, uploads a start file). Every
    run setting is an option (see the README's settings table).
    """
    from lambdatrain.ops import control
    from lambdatrain.ops.views import plural

    settings, target = dataclasses.asdict(ctx.meta["settings"]), _target(ctx)
    out = _console()
    resolved = resolve(target)
    if via_s3:
        result = control.start_via_s3(resolved, settings, run=run)
        out.print(f"uploaded {result['object']}: run {result['run']}")
        if "answer" in result:
            out.print(f"starter: {json.dumps(result['answer'])}")
        run_id = result["run"]
    else:
        answer = control.start(resolved, settings, run=run)
        run_id = answer.get("run", run)
        per_epoch = answer.get("rounds_per_epoch")
        out.print(f"run {run_id}: {answer.get('status')}, {plural(answer.get('workers', settings['workers']), 'worker')}, "
                  + (f"{plural(per_epoch, 'round')} per epoch" if isinstance(per_epoch, int) else "? rounds per epoch"))
    out.print(f"watch it: lambdatrain watch {run_id}{_hint(target)}")


def runs(
    ctx: typer.Context,
    source: Annotated[Optional[str], typer.Argument(help="a 'local train --out' folder (default: the stack's table)")] = None,
) -> None:
    """List the runs.

    Id, state, workers, epoch, best accuracy, start time and elapsed time of each.
    """
    from lambdatrain.ops.source import open_ledger
    from lambdatrain.ops.views import runs_table

    ledger, _, _ = open_ledger(source, _target(ctx))
    out = _console()
    out.print(runs_table(ledger.list_runs()))


def status(
    ctx: typer.Context,
    run: RunArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Show a run's state.

    Round, reported workers, losses, timings and the estimated time to finish.
    """
    from lambdatrain.ops.source import open_run
    from lambdatrain.ops.views import status_of, status_table

    s = status_of(open_run(run, _target(ctx), default_newest=True))
    out = _console()
    if as_json:
        print(json.dumps(s, sort_keys=True))
    else:
        out.print(status_table(s))


def watch(
    ctx: typer.Context,
    run: RunArg = None,
    interval: Annotated[float, typer.Option(help="seconds between polls of the ledger")] = 2.0,
    timeout: Annotated[Optional[float], typer.Option(help="stop watching after this many seconds")] = None,
) -> None:
    """Follow a run live until it ends.

    A progress bar on a terminal, one line a round elsewhere.
    """
    from lambdatrain.ops.source import open_run
    from lambdatrain.ops.progress import watch as follow

    out = _console()
    follow(open_run(run, _target(ctx), default_newest=True), out, interval=interval, timeout=timeout)


def stop(ctx: typer.Context, run: Annotated[str, typer.Argument(help="run id")]) -> None:
    """Stop a run: no new round starts.

    Through the starter; the last weights stay on EFS.
    """
    from lambdatrain.ops import control

    out = _console()
    out.print(f"starter: {json.dumps(control.stop(resolve(_target(ctx)), run))}")


def resume(ctx: typer.Context, run: Annotated[str, typer.Argument(help="run id")]) -> None:
    """Resume a stopped or failed run.

    Through the starter, from its current round.
    """
    from lambdatrain.ops import control

    out = _console()
    out.print(f"starter: {json.dumps(control.resume(resolve(_target(ctx)), run))}")
    out.print(f"watch it: lambdatrain watch {run}{_hint(_target(ctx))}")


def plot(
    ctx: typer.Context,
    run: RunArg,
    out_file: Annotated[Path, typer.Option("--out", help="the PNG to write")] = Path("run.png"),
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="also write the raw metrics as CSV")] = None,
) -> None:
    """Plot a run's losses, accuracy and round times.

    Losses and accuracy against epoch and wall time, and each round's time in each phase.
    """
    from lambdatrain.ops import plot as plots
    from lambdatrain.ops.source import open_run

    source = open_run(run, _target(ctx))
    out = _console()
    out.print(f"wrote {plots.plot(source, out_file)}")
    if csv_file is not None:
        out.print(f"wrote {plots.write_csv(source, csv_file)}")


def export(
    ctx: typer.Context,
    run: RunArg,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for model.pt and model.json")] = Path("export"),
    to_s3: Annotated[bool, typer.Option("--s3", help="also upload both files to s3://BUCKET/exports/RUN/")] = False,
) -> None:
    """Export a run's final model.

    A plain state_dict (model.pt) and its description (model.json).
    """
    from lambdatrain.ops.export import export as export_run
    from lambdatrain.ops.views import plural
    from lambdatrain.ops.source import open_run

    result = export_run(open_run(run, _target(ctx)), out_dir, to_s3=to_s3)
    out = _console()
    # "round" is the ledger's: the weights at the start of that round, i.e. after that many rounds.
    out.print(f"exported run {result['run']} (after {plural(result['round'], 'round')}): {', '.join(result['files'])}")
    if "s3" in result:
        out.print(f"uploaded to {result['s3']}")


def predict(
    images: Annotated[List[Path], typer.Argument(help="JPEG or PNG files", metavar="IMAGE")],
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint.pt, or an export folder (model.pt + model.json)")],
    top: Annotated[int, typer.Option(help="how many classes to show per image")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON list")] = False,
) -> None:
    """Classify images with a trained model.

    The most likely classes of each image, with probabilities.
    """
    from lambdatrain.ops.export import predict as classify

    out = _console()
    results = classify(checkpoint, images, top=top)
    if as_json:
        print(json.dumps(results))
        return
    for r in results:
        out.print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"]))


def register(app: typer.Typer) -> None:
    """Add the operator commands to the main app."""
    app.command("start", cls=with_groups(settings_group(START), TARGET, base=OperatorCommand))(start)
    for fn in (runs, status, watch, stop, resume, plot, export):
        app.command(fn.__name__, cls=OperatorCommand)(fn)
    app.command("predict", cls=Command)(predict)
