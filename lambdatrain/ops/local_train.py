"""``lambdatrain local train``: one training run on the local stack, watched to the end, and
continued after an interruption (``--resume``).

Starts the stack in ``<out>/stack``, links the prepared dataset into the mount, invokes the starter
exactly as ``aws lambda invoke`` would, follows the ledger as ``lambdatrain watch`` does (the same
loop and display, ``ops.progress``), and leaves in ``<out>``: ``checkpoint.pt``, ``metrics.jsonl``,
``ledger.json`` (the run's items, which the operator commands read after the stack is gone) and
``summary.json``.

The run id is made here, before the starter is invoked, and the starter is idempotent per run id:
a starter process that dies at any point is invoked again with the same id, as Lambda retries an
asynchronous start. A run whose folder is under ``<out>/stack`` and not named by ``summary.json``
is unfinished; ``--resume`` continues it in a fresh stack (moto keeps its tables in memory) by
sending the starter ``resume``, which rebuilds the ledger from the run's files on the mount, so
committed rounds are not computed again. Without ``--resume`` such a folder is never deleted.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdatrain.ledger.items import RUNNING
from lambdatrain.local.stack import InvocationError, LocalStack, LocalStackConfig
from lambdatrain.ops.control import new_run_id
from lambdatrain.ops.errors import StarterFailed
from lambdatrain.ops.progress import Display, follow
from lambdatrain.ops.source import RunSource
from lambdatrain.ops.views import reported_line
from lambdatrain.protocol.errors import LambdaTrainError
from lambdatrain.protocol.limits import ASYNC_RETRIES
from lambdatrain.roles.settings import COMBINER, DEFAULT_DATA, STARTER, WORKER
from lambdatrain.storage import efs
from lambdatrain.training import checkpoint

# Lambda's errorType when the function's process ended without an answer: it exited or was killed
# (Runtime.ExitError), died during init (Runtime.InitError) or ran into its timeout. The invocation
# may have done any part of its work; a start with the same run id finishes it.
PROCESS_DIED = frozenset({"Runtime.ExitError", "Runtime.InitError", "TimeoutError"})


@dataclass
class TrainRequest:
    data: Path | None  # a prepared dataset directory (see data.resolve_dataset); None: the mount's link
    out: Path
    settings: dict[str, Any]  # the start event's settings (workers, epochs, model, ...)
    resume: bool = False  # continue the unfinished run in out instead of starting one
    given: frozenset[str] = field(default_factory=frozenset)  # settings the user typed: checked on resume
    # Attempts of the starter whose process dies (Lambda's for an asynchronous event, by default).
    start_attempts: int = 1 + ASYNC_RETRIES
    stack: LocalStackConfig | None = None
    timeout_s: float = 6 * 3600.0
    poll_s: float = 0.5
    # Initialise the N workers and a combiner while the starter runs (provisioned concurrency),
    # so round 0 does not pay their imports; False gives on-demand Lambda's cold round 0.
    prewarm: bool = True


def link_dataset(mount: Path, prepared: Path) -> None:
    link = mount / DEFAULT_DATA
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(prepared.resolve(), target_is_directory=True)


class DeadLetters:
    """What ``local train`` makes of an invocation that failed for good (the stack's dead letters).

    On AWS such an invocation goes to the failure queue, which nothing reads: the watchdog re-drives
    its round once the round has been idle for ``round_deadline_s`` (roles/recovery.py). So an
    invocation whose process died (PROCESS_DIED: killed, out of memory, timed out) gets a line and
    is left to the watchdog. ``local train`` gives up, in one line, when retrying cannot help: the
    handler's own error (it raises again on the same event), or the same event failed for good a
    second time, after the watchdog re-drove it (a worker out of memory dies every time).
    """

    SOURCES = (STARTER, WORKER, COMBINER, "stream")  # "stream": batches the combiner failed on

    def __init__(self, stack: LocalStack, display: Display):
        self.stack, self.display = stack, display
        self.read = dict.fromkeys(self.SOURCES, 0)
        self.died: set[tuple[str, str]] = set()

    def __call__(self) -> None:
        for source in self.SOURCES:
            letters = self.stack.service.dead_letters(source)
            for letter in letters[self.read[source]:]:
                self._judge(source, letter)
            self.read[source] = len(letters)

    def _judge(self, source: str, letter: dict[str, Any]) -> None:
        error, event = letter["error"], letter["event"]
        what = _invocation(source, event)
        message = f"{what} failed for good: {error.get('errorMessage')}"
        key = (source, json.dumps(event, sort_keys=True, default=str))
        if error.get("errorType") not in PROCESS_DIED or key in self.died:
            again = " again after the watchdog re-drove it" if key in self.died else ""
            raise LambdaTrainError(f"{message}{again} (logs in {self.stack.state_dir / 'logs'})")
        self.died.add(key)
        self.display.note(f"{message}; the watchdog re-drives it once its round is idle for round_deadline_s")


def _invocation(source: str, event: Any) -> str:
    """The failed invocation as the user knows it."""
    if source == WORKER and isinstance(event, dict):
        return f"worker {event.get('workerno')} of round {event.get('round')}"
    if source == COMBINER and isinstance(event, dict) and "round" in event:
        return f"the combine of round {event['round']}"
    return {"stream": "a stream batch of the combiner"}.get(source, f"an invocation of the {source}")


def export_run(stack: LocalStack, run: str, out: Path) -> Path:
    """Write checkpoint, metrics and ledger items of a finished run into ``out``; returns the checkpoint."""
    ledger = stack.ledger()
    record = ledger.get_run(run)
    metrics = ledger.metrics(run)  # by round, as every LedgerReader returns them
    ckpt = checkpoint.save(out / "checkpoint.pt",
                           checkpoint.final_model(stack.mount, run, record.round, record.weights, metrics))
    (out / "metrics.jsonl").write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics))
    (out / "ledger.json").write_text(json.dumps(ledger.items(run), indent=1, sort_keys=True, default=str))
    return ckpt


def summary_of(s: dict[str, Any], *, checkpoint_path: Path, wall_s: float) -> dict[str, Any]:
    """summary.json, from the run's final status: the same numbers ``status`` shows for the run."""
    return {"run_id": s["run"], "workers": s["workers"], "rounds": s["round"],
            "epochs_done": s["round"] // s["rounds_per_epoch"],
            "samples_seen": s["samples_seen"] or 0, "elapsed_s": round(s["elapsed_s"], 3),
            # The command's own time, the stack's start and the export included (what `time` would say).
            "wall_s": round(wall_s, 3),
            "val_loss": s["val_loss"], "val_accuracy": s["val_accuracy"], "train_loss": s["train_loss"],
            "state": s["state"], "stop_reason": s["stop_reason"], "checkpoint": str(checkpoint_path),
            "settings": s["settings"]}


def unfinished_runs(out: Path) -> list[str]:
    """Runs with a folder on ``out``'s mount that ``summary.json`` does not name (it names the
    finished run), newest first."""
    mount = out / "stack" / "efs"
    folder = efs.RunLayout(mount, "run").root.parent  # every run's folder is in this one
    summary = out / "summary.json"
    finished = json.loads(summary.read_text()).get("run_id") if summary.is_file() else None
    found = [(efs.read_json(efs.RunLayout(mount, d.name).config).get("created_at", 0), d.name)
             for d in (folder.iterdir() if folder.is_dir() else ())
             if d.name != finished and (d / "config.json").is_file()]
    return [run for _, run in sorted(found, reverse=True)]


def _run_to_continue(out: Path, request: TrainRequest) -> tuple[str, dict[str, Any]]:
    """The run --resume continues and its settings; typed settings must be the run's."""
    pending = unfinished_runs(out)
    if not pending:
        raise LambdaTrainError(f"nothing to resume in {out}: no unfinished run there (start one without --resume)")
    if len(pending) > 1:
        raise LambdaTrainError(f"{out} holds {len(pending)} unfinished runs ({', '.join(pending)}): "
                               f"--resume continues one; move the others out of {out / 'stack'}")
    run = pending[0]
    config = efs.read_json(efs.RunLayout(out / "stack" / "efs", run).config)["config"]
    for name in sorted(request.given):
        if name in config and request.settings.get(name) != config[name]:
            raise LambdaTrainError(f"--resume continues run {run} with its own settings: --{name.replace('_', '-')} "
                                   f"{request.settings.get(name)} differs from its {config[name]} (drop the option)")
    return run, config


def resume_command(out: Path) -> str:
    return f"lambdatrain local train --resume --out {out}"


def interrupted(out: Path) -> LambdaTrainError:
    """What to tell a user who stopped ``local train`` (Ctrl-C): how to continue, if a run began."""
    pending = unfinished_runs(out.resolve())
    if not pending:
        return LambdaTrainError("interrupted before a run started: nothing to continue")
    return LambdaTrainError(f"interrupted: continue run {pending[0]} with `{resume_command(out.resolve())}`")


def _refuse_unfinished(out: Path) -> None:
    pending = unfinished_runs(out)
    if pending:
        raise LambdaTrainError(f"{out} holds the unfinished run {pending[0]}: continue it with "
                               f"`{resume_command(out)}`, or choose another --out")
    # A new run replaces <out>/stack; only ever a folder a local stack made (efs/, logs/ inside).
    stack_dir = out / "stack"
    if stack_dir.exists() and any(stack_dir.iterdir()) and \
            not any((stack_dir / name).is_dir() for name in ("efs", "logs")):
        raise LambdaTrainError(f"{stack_dir} exists and is not a local stack's folder: choose another --out")


def invoke_starter(stack: LocalStack, event: dict[str, Any], attempts: int) -> dict[str, Any]:
    """The starter's answer; a process that died is invoked again with the same event (and run id)."""
    for attempt in range(1, attempts + 1):
        try:
            return stack.invoke(STARTER, event)
        except InvocationError as exc:
            if attempt == attempts:
                raise StarterFailed(f"the starter failed: {exc} ({exc.document.get('errorType')}, "
                                    f"{attempts} attempts; logs in {stack.state_dir / 'logs'})") from None
            if exc.document.get("errorType") not in PROCESS_DIED:
                raise StarterFailed(f"the starter failed: {exc}") from None
    raise AssertionError("unreachable")  # attempts >= 1: the loop returns or raises


def _first_event(stack: LocalStack, run: str, settings: dict[str, Any], resume: bool) -> dict[str, Any]:
    """``resume`` once the run has weights on the mount (the ledger is rebuilt from them); before
    that, the start again: nothing of it is committed, and a start with its id is idempotent."""
    if resume and efs.RunLayout(stack.mount, run).committed_rounds():
        return {"resume": run}
    return {"start": True, "run": run, **settings}


def check_out(request: TrainRequest) -> tuple[str | None, dict[str, Any]]:
    """The run that --resume continues and its settings, or (None, the request's) for a new run;
    an ``out`` that does not fit the request is refused in one line. Nothing is changed."""
    out = request.out.resolve()
    if request.resume:
        return _run_to_continue(out, request)
    _refuse_unfinished(out)
    return None, dict(request.settings)


def train(request: TrainRequest, display: Display | None = None) -> dict[str, Any]:
    out = request.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stack_dir = out / "stack"
    run, settings = check_out(request)
    if run is None:
        shutil.rmtree(stack_dir, ignore_errors=True)  # a finished run's files: exported into out already
        run = new_run_id()
    shutil.rmtree(stack_dir / "dlq", ignore_errors=True)  # the failures of an earlier stack, not this one's
    config = request.stack or LocalStackConfig(state_dir=stack_dir)
    config.state_dir = stack_dir
    started = time.time()
    display = display or Display()
    with LocalStack(config) as stack:
        workers = settings.get("workers")
        if request.prewarm and isinstance(workers, int) and workers > 0:  # bad settings: the starter says why
            stack.prewarm({WORKER: workers, COMBINER: 1})
        if request.data is not None:
            link_dataset(stack.mount, request.data)
        elif not (stack.mount / DEFAULT_DATA).exists():
            raise LambdaTrainError(f"run {run}'s dataset is no longer where {stack.mount / DEFAULT_DATA} "
                                   "points: pass --data (the run's dataset)")
        invoke_starter(stack, _first_event(stack, run, settings, request.resume), request.start_attempts)
        final = follow(RunSource(ledger=stack.ledger(), run=run), display, interval=request.poll_s,
                       timeout=request.timeout_s, check=DeadLetters(stack, display))
        if final["state"] == RUNNING:
            # What the run waits for, so a stall names its round and the missing workers.
            raise LambdaTrainError(f"run {run} did not finish within {request.timeout_s:.0f} s: round "
                                   f"{final['round']} of {final['rounds_total']}, {reported_line(final)}")
        ckpt = export_run(stack, run, out)
    summary = summary_of(final, checkpoint_path=ckpt, wall_s=time.time() - started)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary
