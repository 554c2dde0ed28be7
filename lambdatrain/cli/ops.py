"""The operator commands: ``start``, ``runs``, ``status``, ``watch``, ``stop``, ``resume``, ``plot``,
``export`` and ``predict``, against AWS and the local stack alike.

Every command that talks to a stack takes the same target options (see ``lambdatrain.ops.target``),
added by ``_operator`` so they are declared once; every command that takes a RUN also takes the
``--out`` folder of a finished ``local train``. Domain errors, AWS client errors included, end here
as one line on stderr and exit code 1. ``register(app)`` adds the commands to the main app.
"""

import functools
import inspect
import json
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer
from rich.console import Console

from lambdatrain.cli.edge import domain_errors
from lambdatrain.ops.target import TargetOptions, aws_errors, resolve

_PANEL = "Target (local stack or AWS)"
_TARGET_PARAMS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[kind, typer.Option(help=help_, rich_help_panel=_PANEL)])
    for name, kind, help_ in [
        ("local_state", Optional[Path], "the local stack's --state-dir (reads endpoints.json; env LAMBDATRAIN_LOCAL_STATE)"),
        ("endpoint", Optional[str], "send every AWS call to this URL (env LAMBDATRAIN_ENDPOINT)"),
        ("lambda_endpoint", Optional[str], "the Lambda API's URL, when it differs from --endpoint"),
        ("stack_outputs", Optional[Path], "the JSON of `pulumi stack output --json`"),
        ("table", Optional[str], "ledger table name (env LAMBDATRAIN_TABLE)"),
        ("starter", Optional[str], "starter function name (env LAMBDATRAIN_STARTER_FUNCTION)"),
        ("bucket", Optional[str], "stack bucket name (env LAMBDATRAIN_BUCKET)"),
        ("mount", Optional[Path], "where the EFS file system is mounted here (env LAMBDATRAIN_MOUNT)"),
        ("region", Optional[str], "AWS region (default: boto3's)"),
    ]
]
_TARGET_FIELDS = [p.name for p in _TARGET_PARAMS]


def _console() -> Console:
    out = Console(highlight=False, soft_wrap=True)  # long lines (JSON answers) stay whole
    if not out.is_terminal:
        out = Console(highlight=False, soft_wrap=True, width=120)  # pipes and CI: room for the tables
    return out


def _operator(fn: Callable[..., None]) -> Callable[..., None]:
    """Add the target options to a command and turn domain errors into one line and exit 1."""
    signature = inspect.signature(fn, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "target"]

    @functools.wraps(fn)
    @domain_errors
    def command(**kwargs: Any) -> None:
        options = TargetOptions(**{name: kwargs.pop(name) for name in _TARGET_FIELDS})
        with aws_errors():
            fn(target=options, **kwargs)

    command.__signature__ = signature.replace(parameters=own + _TARGET_PARAMS)  # type: ignore[attr-defined]
    return command


def _hint(target: TargetOptions) -> str:
    flags = resolve(target).flags
    return (" " + " ".join(flags)) if flags else ""


RunArg = Annotated[Optional[str], typer.Argument(help="run id, or the --out folder of `local train`")]


def start(
    workers: Annotated[int, typer.Option(help="worker invocations per round (N)")],
    epochs: Annotated[Optional[int], typer.Option(help="passes over the training split")] = None,
    model: Annotated[Optional[str], typer.Option(help="vgg19_cifar, vgg11_cifar or vgg19")] = None,
    width: Annotated[Optional[float], typer.Option(help="channel multiplier of the model")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="global batch: samples per optimizer step")] = None,
    micro_batch: Annotated[Optional[int], typer.Option(help="samples per forward/backward pass")] = None,
    lr: Annotated[Optional[float], typer.Option(help="SGD learning rate (the peak, under a schedule)")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="constant, or cosine (annealed to 0 by the last round)")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(help="linear learning-rate warm-up over this many epochs")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seeds weights, shards and augmentation")] = None,
    target_accuracy: Annotated[Optional[float], typer.Option(help="stop at this validation accuracy (0..1)")] = None,
    patience: Annotated[Optional[int], typer.Option(help="stop after K evaluations without a new best")] = None,
    max_train_samples: Annotated[Optional[int], typer.Option(help="use only the first K training samples")] = None,
    val_samples: Annotated[Optional[int], typer.Option(help="evaluate on the first K validation samples")] = None,
    mode: Annotated[Optional[str], typer.Option(help="sync or average")] = None,
    local_steps: Annotated[Optional[int], typer.Option(help="average mode: local steps per round")] = None,
    transport: Annotated[Optional[str], typer.Option(help="float32, float16 or bfloat16 worker results")] = None,
    data: Annotated[Optional[str], typer.Option(help="prepared dataset folder, relative to the mount")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="also evaluate every K rounds")] = None,
    run: Annotated[Optional[str], typer.Option(help="run id (default: the starter picks one)")] = None,
    via_s3: Annotated[bool, typer.Option("--via-s3", help="upload start/<run>.json to the bucket instead")] = False,
    *, target: TargetOptions,
) -> None:
    """Start a run: invoke the deployed starter with the start payload (or upload a start file)."""
    from lambdatrain.ops import control

    settings = dict(workers=workers, epochs=epochs, model=model, width=width, batch_size=batch_size,
                    micro_batch=micro_batch, lr=lr, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs, seed=seed,
                    target_accuracy=target_accuracy, patience=patience,
                    max_train_samples=max_train_samples, val_samples=val_samples, mode=mode,
                    local_steps=local_steps, transport=transport, data=data, eval_every=eval_every)
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
        out.print(f"run {run_id}: {answer.get('status')}, {answer.get('workers', workers)} workers, "
                  f"{answer.get('rounds_per_epoch', '?')} rounds per epoch")
    out.print(f"watch it: lambdatrain watch {run_id}{_hint(target)}")


def runs(
    source: Annotated[Optional[str], typer.Argument(help="a `local train --out` folder (default: the stack's table)")] = None,
    *, target: TargetOptions,
) -> None:
    """List the runs: id, state, workers, epoch, best accuracy, start time, elapsed time."""
    from lambdatrain.ops.source import open_ledger
    from lambdatrain.ops.views import runs_table

    ledger, _, _ = open_ledger(source, target)
    out = _console()
    out.print(runs_table(ledger.list_runs()))


def status(
    run: RunArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    *, target: TargetOptions,
) -> None:
    """A run's state, round, reported workers, losses, timings and estimated time to finish."""
    from lambdatrain.ops.source import open_run
    from lambdatrain.ops.views import status_of, status_table

    s = status_of(open_run(run, target, default_newest=True))
    out = _console()
    if as_json:
        print(json.dumps(s, sort_keys=True))
    else:
        out.print(status_table(s))


def watch(
    run: RunArg = None,
    interval: Annotated[float, typer.Option(help="seconds between polls of the ledger")] = 2.0,
    timeout: Annotated[Optional[float], typer.Option(help="stop watching after this many seconds")] = None,
    *, target: TargetOptions,
) -> None:
    """Follow a run live (a progress bar on a terminal, one line a round elsewhere) until it ends."""
    from lambdatrain.ops.source import open_run
    from lambdatrain.ops.progress import watch as follow

    out = _console()
    follow(open_run(run, target, default_newest=True), out, interval=interval, timeout=timeout)


def stop(run: Annotated[str, typer.Argument(help="run id")], *, target: TargetOptions) -> None:
    """Stop a run through the starter: no new round starts; the last weights stay on EFS."""
    from lambdatrain.ops import control

    out = _console()
    out.print(f"starter: {json.dumps(control.stop(resolve(target), run))}")


def resume(run: Annotated[str, typer.Argument(help="run id")], *, target: TargetOptions) -> None:
    """Resume a stopped or failed run through the starter, from its current round."""
    from lambdatrain.ops import control

    out = _console()
    out.print(f"starter: {json.dumps(control.resume(resolve(target), run))}")
    out.print(f"watch it: lambdatrain watch {run}{_hint(target)}")


def plot(
    run: RunArg,
    out_file: Annotated[Path, typer.Option("--out", help="the PNG to write")] = Path("run.png"),
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="also write the raw metrics as CSV")] = None,
    *, target: TargetOptions,
) -> None:
    """Plot losses and accuracy against epoch and wall time, and per-round time in each phase."""
    from lambdatrain.ops import plot as plots
    from lambdatrain.ops.source import open_run

    source = open_run(run, target)
    out = _console()
    out.print(f"wrote {plots.plot(source, out_file)}")
    if csv_file is not None:
        out.print(f"wrote {plots.write_csv(source, csv_file)}")


def export(
    run: RunArg,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for model.pt and model.json")] = Path("export"),
    to_s3: Annotated[bool, typer.Option("--s3", help="also upload both files to s3://BUCKET/exports/RUN/")] = False,
    *, target: TargetOptions,
) -> None:
    """Export the run's final model as a plain state_dict (model.pt) and its description (model.json)."""
    from lambdatrain.ops.export import export as export_run
    from lambdatrain.ops.views import plural
    from lambdatrain.ops.source import open_run

    result = export_run(open_run(run, target), out_dir, to_s3=to_s3)
    out = _console()
    # "round" is the ledger's: the weights at the start of that round, i.e. after that many rounds.
    out.print(f"exported run {result['run']} (after {plural(result['round'], 'round')}): {', '.join(result['files'])}")
    if "s3" in result:
        out.print(f"uploaded to {result['s3']}")


@domain_errors
def predict(
    images: Annotated[List[Path], typer.Argument(help="JPEG or PNG files")],
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint.pt, or an export folder (model.pt + model.json)")],
    top: Annotated[int, typer.Option(help="how many classes to show per image")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON list")] = False,
) -> None:
    """The most likely classes of each image, with probabilities."""
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
    for fn in (start, runs, status, watch, stop, resume, plot, export):
        app.command(fn.__name__)(_operator(fn))
    app.command("predict")(predict)
