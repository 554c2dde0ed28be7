"""Following a run (``watch`` and ``local train``) and building its final model (``local train`` and ``export``).

The run is real (the inline system: moto and the handlers in this process); the follow loop's
``sleep`` advances the system by one invocation or stream poll, so the loop sees the run move.
"""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
from rich.console import Console

from lambdatrain.ledger.items import RunRecord
from lambdatrain.ops.export import export, load_any
from lambdatrain.ops.progress import ConsoleDisplay, Display, follow, watch
from lambdatrain.ops.source import RunSource
from lambdatrain.ops.target import Target
from lambdatrain.ops.views import elapsed_s, plural, status_table
from lambdatrain.protocol.config import RunConfig
from lambdatrain.protocol.errors import LambdaTrainError
from lambdatrain.roles.settings import STARTER
from lambdatrain.storage import efs
from lambdatrain.storage.digest import Digest
from lambdatrain.training import checkpoint
from lambdatrain.training.flat import FlatLayout

# 128 samples, 2 workers, 32 per step: 4 rounds per epoch, evaluated at the epoch's end.
SMALL = {"workers": 2, "model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 16,
         "max_train_samples": 128, "val_samples": 32}


class Recorder(Display):
    def __init__(self):
        self.events: list[tuple] = []

    def start(self, s):
        self.events.append(("start", s["rounds_total"]))

    def round(self, metric, s):
        self.events.append(("round", metric["round"]))

    def stop(self):
        self.events.append(("stop",))

    def end(self, s):
        self.events.append(("end", s["state"], s["round"]))


def _source(system, epochs: int = 1) -> RunSource:
    run = system.invoke(STARTER, {"start": True, "epochs": epochs, **SMALL})["run"]
    return RunSource(ledger=system.ledger, run=run)


def _step(system):
    return lambda _: system.step()


def test_follow_reports_each_committed_round_once_in_order_then_the_end(system):
    recorder = Recorder()
    s = follow(_source(system), recorder, interval=0, timeout=300, sleep=_step(system))
    assert recorder.events == [("start", 4), *[("round", r) for r in range(4)], ("stop",), ("end", "done", 4)]
    assert s["state"] == "done" and s["round"] == s["rounds_total"] == 4


def test_follow_reads_each_metric_from_the_table_once_however_many_polls(system):
    # Counted where the items come from: the table's query pages (DynamoDB bills what a query
    # reads, so a filter applied after it would not do).
    source, read, polls = _source(system, epochs=2), [], []
    query, get_run = system.ledger.table.query, system.ledger.get_run

    def counted(**kwargs):
        page = query(**kwargs)
        read.extend(item["sk"] for item in page["Items"] if item["sk"].startswith("METRIC#"))
        return page

    system.ledger.table.query = counted
    system.ledger.get_run = lambda run: polls.append(run) or get_run(run)
    recorder = Recorder()
    s = follow(source, recorder, interval=0, timeout=300, sleep=_step(system))
    assert len(polls) > 2 * s["round"]  # many polls, most of which find nothing new
    assert read == sorted(set(read)) and len(read) == s["round"] == 8
    assert [e for e in recorder.events if e[0] == "round"] == [("round", r) for r in range(8)]
    metrics = system.ledger.metrics(source.run)
    assert s["mean_round_s"] == pytest.approx(sum(m["round_s"] for m in metrics) / 8)


def test_follow_returns_the_running_status_when_the_timeout_passes(system):
    recorder = Recorder()
    s = follow(_source(system), recorder, interval=0, timeout=0, sleep=_step(system))
    assert s["state"] == "running" and s["remaining_rounds"] == 4
    assert recorder.events == [("start", 4), ("stop",)]  # no end: the run has not ended
    out = io.StringIO()
    Console(file=out, width=120).print(status_table(s))
    assert "0: 0 of 2 workers reported (open); missing: 0, 1" in out.getvalue()  # round 0, nobody ran yet
    assert "0 of 4 (4 per epoch)" in out.getvalue() and "(4 rounds)" in out.getvalue()


def test_elapsed_time_runs_to_now_while_running_and_to_the_last_update_after():
    run = RunRecord(run="r", state="running", config=RunConfig(workers=2), round=3, epoch=0, rounds_per_epoch=4,
                    weights=Digest(0, "xxh3_128:00"), n_params=1, num_classes=10, created_at=100.0, updated_at=140.0)
    assert elapsed_s(run, now=157.0) == 57.0
    assert elapsed_s(replace(run, state="done"), now=157.0) == elapsed_s(replace(run, state="stopped"), now=999) == 40.0
    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]


def test_follow_gives_up_when_the_check_raises_and_still_stops_the_display(system):
    recorder = Recorder()

    def dead_letter():
        raise LambdaTrainError("an invocation failed for good")

    with pytest.raises(LambdaTrainError, match="failed for good"):
        follow(_source(system), recorder, interval=0, check=dead_letter, sleep=_step(system))
    assert recorder.events[-1] == ("stop",)


def test_the_console_shows_one_line_a_round_with_the_ledgers_round_number_and_the_count_done(system):
    out = io.StringIO()
    source = _source(system)
    s = watch(source, Console(file=out, force_terminal=False, width=200), interval=0, sleep=_step(system))
    lines = out.getvalue().splitlines()
    assert lines[0] == f"run {source.run}: 4 rounds (4 per epoch, 1 epoch), 2 workers"
    assert [line.split(" (")[0] for line in lines[1:5]] == ["round 0", "round 1", "round 2", "round 3"]
    assert lines[1].startswith("round 0 (1 of 4 done, epoch 0.25): train loss ")
    assert lines[4].startswith("round 3 (4 of 4 done, epoch 1.00): train loss ")
    assert f"val accuracy {s['val_accuracy']:.2%}" in lines[4] and "val accuracy" not in lines[3]
    assert lines[5].startswith(f"run {source.run} done (max epochs) after 4 rounds (epoch 1.00), ")
    assert len(lines) == 6


def test_on_a_terminal_the_bar_counts_rounds_and_only_evaluations_get_a_line(system):
    out = io.StringIO()
    source = _source(system)
    watch(source, Console(file=out, force_terminal=True, width=200), interval=0, sleep=_step(system))
    text = out.getvalue()
    assert "4/4" in text  # the bar: rounds done of the run's total
    assert "round 3 (4 of 4 done, epoch 1.00)" in text and "round 0 (" not in text
    assert f"run {source.run} done (max epochs) after 4 rounds" in text


def test_export_and_the_checkpoint_hold_the_one_final_model_of_the_run(system, tmp_path):
    source = _source(system)
    follow(source, interval=0, timeout=300, sleep=_step(system))
    record = system.ledger.get_run(source.run)
    metrics = system.ledger.metrics(source.run)
    final = checkpoint.final_model(system.mount, source.run, record.round, record.weights, metrics)
    assert final["round"] == 4 and final["metrics"]["round"] == 3 and "val_accuracy" in final["metrics"]
    flat = efs.read_array(efs.RunLayout(system.mount, source.run).weights(4))
    model = checkpoint.model_from(final)
    assert all(torch.equal(a, b) for a, b in zip(FlatLayout.of(model).state_dict(flat).values(),
                                                 final["state_dict"].values()))

    saved = checkpoint.load(checkpoint.save(tmp_path / "checkpoint.pt", final))
    exported = tmp_path / "export"
    export(RunSource(ledger=system.ledger, run=source.run, target=Target(local=True, names={}, mount=system.mount)),
           exported)
    from_export, meta = load_any(exported)
    assert meta["round"] == saved["round"] == 4 and meta["metrics"] == saved["metrics"]
    for name, tensor in from_export.state_dict().items():
        assert torch.equal(tensor, saved["state_dict"][name]), name
