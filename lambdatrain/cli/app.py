"""The user's commands: ``lambdatrain local train|serve``, ``evaluate`` and the operator commands.

Each command parses its options and delegates to a keyword-only function; domain errors are caught
here, at the edge, and become one line on stderr and exit code 1 (no traceback).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lambdatrain.cli.edge import domain_errors, report
from lambdatrain.protocol.errors import LambdaTrainError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
local_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run the system on this machine.")
app.add_typer(local_app, name="local")
console = Console()

DEFAULT_CACHE = Path.home() / ".cache" / "lambdatrain"


def _settings(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


@local_app.command("train")
@domain_errors
def local_train(
    data: Annotated[Optional[Path], typer.Option(help="cifar-10-python.tar.gz, an image folder (or .tar/.tar.gz of one) or a prepared directory; default: the cache, else the official download")] = None,
    workers: Annotated[int, typer.Option(help="worker invocations per round (N)")] = 4,
    epochs: Annotated[int, typer.Option(help="passes over the training split")] = 1,
    model: Annotated[str, typer.Option(help="vgg19_cifar, vgg11_cifar or vgg19")] = "vgg19_cifar",
    width: Annotated[float, typer.Option(help="channel multiplier of the model")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="global batch: samples per optimizer step")] = 128,
    micro_batch: Annotated[int, typer.Option(help="samples per forward/backward pass")] = 64,
    lr: Annotated[float, typer.Option(help="SGD learning rate (the peak, under a schedule)")] = 0.02,
    lr_schedule: Annotated[str, typer.Option(help="constant, or cosine (annealed to 0 by the last round)")] = "constant",
    warmup_epochs: Annotated[float, typer.Option(help="linear learning-rate warm-up over this many epochs")] = 0.0,
    seed: Annotated[int, typer.Option(help="seeds weights, shards and augmentation")] = 0,
    max_train_samples: Annotated[Optional[int], typer.Option(help="use only the first K training samples")] = None,
    val_samples: Annotated[Optional[int], typer.Option(help="evaluate on the first K validation samples")] = None,
    target_accuracy: Annotated[Optional[float], typer.Option(help="stop at this validation accuracy (0..1)")] = None,
    mode: Annotated[str, typer.Option(help="sync (gradient averaging) or average (local SGD)")] = "sync",
    local_steps: Annotated[int, typer.Option(help="average mode: local steps per round")] = 1,
    transport: Annotated[str, typer.Option(help="float32, float16 or bfloat16 worker results")] = "float32",
    out: Annotated[Path, typer.Option(help="folder for checkpoint, metrics and summary.json")] = Path("out/train"),
    cache_dir: Annotated[Path, typer.Option(help="where prepared datasets are kept")] = DEFAULT_CACHE,
) -> None:
    """Train on the local stack (moto + local Lambda service), the same handlers as on AWS."""
    from lambdatrain.training.data import resolve_dataset
    from lambdatrain.ops.progress import ConsoleDisplay
    from lambdatrain.ops.local_train import TrainRequest, train
    from lambdatrain.protocol.config import parse_config

    settings = _settings(workers=workers, epochs=epochs, model=model, width=width, batch_size=batch_size,
                         micro_batch=micro_batch, lr=lr, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
                         seed=seed, max_train_samples=max_train_samples,
                         val_samples=val_samples, target_accuracy=target_accuracy, mode=mode,
                         local_steps=local_steps, transport=transport)
    parse_config(settings)  # bad settings stop here, before anything starts
    prepared = resolve_dataset(data, cache_dir)
    console.print(f"dataset: {prepared}")
    summary = train(TrainRequest(data=prepared, out=out, settings=settings), ConsoleDisplay(console))
    console.print(f"checkpoint {summary['checkpoint']}", highlight=False)  # the display printed the rest


@local_app.command("serve")
@domain_errors
def local_serve(
    state_dir: Annotated[Path, typer.Option(help="the stack's folder (efs/, logs/, dlq/)")] = Path("out/stack"),
    port: Annotated[int, typer.Option(help="Lambda API port on 127.0.0.1 (0: any free port)")] = 9001,
    data: Annotated[Optional[Path], typer.Option(help="dataset to link into the mount as the default")] = None,
    cache_dir: Annotated[Path, typer.Option(help="where prepared datasets are kept")] = DEFAULT_CACHE,
) -> None:
    """Keep the local stack up and print its endpoints, for aws-cli or `lambdatrain start`."""
    from lambdatrain.training.data import resolve_dataset
    from lambdatrain.local.stack import LocalStack, LocalStackConfig
    from lambdatrain.ops.local_train import link_dataset

    prepared = resolve_dataset(data, cache_dir) if data is not None else None
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
            stopped.wait()
        except KeyboardInterrupt:
            pass
    finally:
        stack.stop()


@app.command("evaluate")
@domain_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint.pt written by a run")],
    data: Annotated[Path, typer.Option(help="dataset in any supported format")],
    split: Annotated[str, typer.Option(help="val or train")] = "val",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    cache_dir: Annotated[Path, typer.Option(help="where prepared datasets are kept")] = DEFAULT_CACHE,
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
    try:
        code = app(standalone_mode=False)  # without standalone mode click returns Exit codes
        sys.exit(code if isinstance(code, int) else 0)
    except LambdaTrainError as exc:  # a command without the decorator: the same one line
        report(exc)
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)))
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - click's usage errors and friends
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
from lambdatrain.cli.ops import register as _register_ops; _register_ops(app)
from lambdatrain.cli.plan import register as _register_plan; _register_plan(app)
