"""`lambdatrain local train` killed mid-run, then `--resume`: the uninterrupted run's model, and no
committed round computed again.

The command runs as a user runs it, in its own process; the kill is a machine's: the command
frozen (SIGSTOP: its moto takes no more commits) once two rounds are committed, then it and every
process of its stack SIGKILLed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lambdatrain.storage import efs
from lambdatrain.training import checkpoint
from tests.cli.conftest import TINY, _clean_env, _lambdatrain, as_from_a_terminal, assert_one_line_error
from tests.faults.processes import kill, sandboxes

pytestmark = pytest.mark.slow
FLAGS = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", v)]


def _kill_mid_run(out: Path, data: Path) -> str:
    """Start `local train`, kill it and its stack once rounds 0 and 1 are committed; the run id."""
    mount = out / "stack" / "efs"
    with open(out.parent / "killed.log", "w") as log:
        proc = subprocess.Popen(_lambdatrain("local", "train", "--data", data, "--out", out, *FLAGS),
                                stdout=log, stderr=subprocess.STDOUT, env=_clean_env())
    deadline = time.monotonic() + 180
    while True:
        runs = list((mount / "runs").glob("*/config.json")) if (mount / "runs").is_dir() else []
        if runs and 2 in efs.RunLayout(mount, runs[0].parent.name).committed_rounds():
            break  # weights of round 2 exist: rounds 0 and 1 are committed
        assert proc.poll() is None and time.monotonic() < deadline, (out.parent / "killed.log").read_text()
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)
    kill(sandboxes(mount))
    proc.kill()
    proc.wait()
    return runs[0].parent.name


def _lambdatrain_run(*args) -> SimpleNamespace:
    """The console script in its own process (moto keeps its tables per process), as click's Result."""
    done = subprocess.run(_lambdatrain(*args), capture_output=True, text=True, env=_clean_env(), timeout=300)
    return SimpleNamespace(exit_code=done.returncode, stdout=done.stdout, stderr=done.stderr,
                           output=done.stdout + done.stderr)


def _computed(log: str) -> list[tuple[int, int]]:
    """(round, worker) of every result a worker computed and recorded, from the worker's log."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [(x["round"], x["worker"]) for x in lines if x.get("message") == "result recorded"]


def test_killed_local_train_resumes_to_the_uninterrupted_model(cli, trained, cli_data, tmp_path):
    out = tmp_path / "out"
    run = _kill_mid_run(out, cli_data)
    layout = efs.RunLayout(out / "stack" / "efs", run)
    resumed_from = layout.committed_rounds()[-1]
    assert 2 <= resumed_from < 4 and not (out / "summary.json").exists(), "the kill came after the end"
    worker_log = out / "stack" / "logs" / "worker.log"
    before = worker_log.read_text()

    # Refusals come before anything starts: in process (no stack, no moto tables) is enough.
    again = cli("local", "train", "--data", cli_data, "--out", out, *FLAGS)
    assert_one_line_error(again, f"holds the unfinished run {run}", f"lambdatrain local train --resume --out {out}")
    assert layout.config.exists() and layout.committed_rounds()[-1] == resumed_from  # nothing deleted
    other = cli("local", "train", "--resume", "--out", out, "--workers", "3")
    assert_one_line_error(other, f"--resume continues run {run} with its own settings: --workers 3 differs from its 2")

    resumed = _lambdatrain_run("local", "train", "--resume", "--out", out)  # the run's own settings and dataset
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["run_id"], summary["state"], summary["rounds"]) == (run, "done", 4)
    got, expected = checkpoint.load(out / "checkpoint.pt"), checkpoint.load(trained / "checkpoint.pt")
    assert got["state_dict"].keys() == expected["state_dict"].keys()
    assert all(torch.equal(got["state_dict"][k], expected["state_dict"][k]) for k in expected["state_dict"])

    after = worker_log.read_text()[len(before):]
    print(f"resumed from round {resumed_from}; worker results before the kill {_computed(before)}, "
          f"after {_computed(after)}")
    assert _computed(after), "the resumed run computed nothing: the log is not where the test looks"
    assert all(r >= resumed_from for r, _ in _computed(after))  # committed rounds: not computed again
    # Every worker of every committed round computed once, before the kill.
    committed = sorted(x for x in _computed(before + after) if x[0] < resumed_from)
    assert committed == [(r, w) for r in range(resumed_from) for w in range(TINY["workers"])]

    nothing = cli("local", "train", "--resume", "--out", out)
    assert_one_line_error(nothing, f"nothing to resume in {out}")


def test_ctrl_c_stops_the_stack_and_names_the_command_that_continues(cli_data, tmp_path):
    out, mount = tmp_path / "out", tmp_path / "out" / "stack" / "efs"
    proc = subprocess.Popen(_lambdatrain("local", "train", "--data", cli_data, "--out", out, *FLAGS),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env(),
                            preexec_fn=as_from_a_terminal)
    deadline = time.monotonic() + 180
    while not list(mount.glob("runs/*/config.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    run = next(mount.glob("runs/*/config.json")).parent.name
    assert proc.returncode == 1, stdout + stderr
    assert stderr.strip().splitlines() == [f"error: interrupted: continue run {run} with "
                                           f"`lambdatrain local train --resume --out {out}`"], stderr
    assert sandboxes(mount) == []  # the stack stopped its processes


def test_local_train_never_deletes_a_stack_folder_it_did_not_make(cli, cli_data, tmp_path):
    # --out . in a project with a folder of its own named stack/: refused, nothing deleted.
    mine = tmp_path / "stack" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("not a local stack")
    result = cli("local", "train", "--data", cli_data, "--out", tmp_path, "--cache-dir", tmp_path / "cache")
    assert_one_line_error(result, "is not a local stack's folder")
    assert mine.read_text() == "not a local stack"
