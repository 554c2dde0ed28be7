"""Every slow phase says what it is doing: preparing a dataset, starting the local stack and the run,
the planner's calibration. Off a terminal (CI, pipes, here) each step is a plain line, and the phase
ends with a line saying how long it took; on a terminal rich shows the same text as a spinner."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from rich.console import Console

from lambdatrain.cli import app as app_module
from lambdatrain.ops.progress import Phase
from tests.datagen import make_cifar_python_tarball, make_image_folder

DONE = r"done in \d+\.\d s"


def _captured(monkeypatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(app_module, "console", Console(file=out, force_terminal=False, width=200))
    return out


def test_preparing_a_dataset_shows_each_step_and_then_nothing_once_cached(tmp_path, monkeypatch):
    source = make_image_folder(tmp_path / "images", per_class=2)
    out = _captured(monkeypatch)
    prepared = app_module._prepared(source, tmp_path / "cache")
    lines = out.getvalue().splitlines()
    assert lines[0] == "preparing the dataset: decoding images"
    assert "preparing the dataset: shuffling and splitting 20 images" in lines
    assert f"preparing the dataset: writing {prepared}" in lines
    assert re.fullmatch(f"preparing the dataset: {DONE}", lines[-1]), lines

    out.truncate(0)
    out.seek(0)
    assert app_module._prepared(source, tmp_path / "cache") == prepared
    assert out.getvalue() == ""  # a cached preparation is instant, and silent


def test_preparing_cifar10_says_it_downloads_first(tmp_path, monkeypatch):
    from lambdatrain.training import data

    tarball = make_cifar_python_tarball(tmp_path / "src.tar.gz", n_train=50, n_test=10)
    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(tarball.read_bytes()).hexdigest())
    fetched = lambda url, dest: dest.write_bytes(tarball.read_bytes())  # noqa: E731 - the network, on disk
    buffer = io.StringIO()
    with Phase(Console(file=buffer, force_terminal=False), "preparing the dataset", lazy=True) as phase:
        data.resolve_dataset(None, tmp_path / "cache", fetch=fetched, step=phase.step)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == f"preparing the dataset: downloading {data.CIFAR10_URL}"
    assert "preparing the dataset: decoding cifar-10-python.tar.gz" in lines


def test_a_failed_phase_leaves_the_saying_to_the_error(tmp_path):
    buffer = io.StringIO()
    with pytest.raises(RuntimeError), Phase(Console(file=buffer, force_terminal=False), "starting") as phase:
        phase.step("one")
        raise RuntimeError("boom")
    assert buffer.getvalue().splitlines() == ["starting ...", "starting: one"]


def test_plan_says_what_it_calibrates_on_stderr_and_keeps_stdout_json(cli):
    result = cli("plan", "--width", "0.0625", "--workers", "1", "--shards", "1", "--memory", "1769",
                 "--seconds-per-image", "0.01", "--cold-start", "3", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.lstrip().startswith("{")
    lines = result.stderr.splitlines()
    assert lines[0] == "calibrating on this machine ..."
    assert "calibrating on this machine: timing a model-sized file written and read back" in lines
    assert "timing a cold start" not in result.stderr  # given, so not measured
    assert re.fullmatch(f"calibrating on this machine: {DONE}", lines[-1]), lines


@pytest.mark.slow  # the session's `local train` takes half a minute
def test_local_train_says_it_is_starting_the_stack_and_the_run(trained, launched):
    log = (launched.root / "train.log").read_text().splitlines()
    assert "starting the local stack and the run ..." in log
    done = next(i for i, line in enumerate(log) if re.fullmatch(f"starting the local stack and the run: {DONE}", line))
    assert log[done + 1].startswith("run "), log  # then the run's own display takes over
