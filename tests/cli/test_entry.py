"""The console script's edge, as a user meets it: a wrong command line gets click's usage line and one
error line (exit 2), a refused setting one ``error:`` line (exit 1), no traceback and no box; a bare
``lambdatrain`` prints the help (exit 0); every command's --help reads cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from lambdatrain.cli.app import app

LAMBDATRAIN = Path(sys.executable).with_name("lambdatrain")

USAGE_ERRORS = {
    "unknown option": (["local", "train", "--worker", "4"], "lambdatrain local train", "No such option: --worker"),
    "unknown command": (["stauts"], "lambdatrain", "No such command 'stauts'"),
    "bad type": (["local", "train", "--workers", "four"], "lambdatrain local train", "Invalid value for '--workers'"),
    "missing argument": (["predict", "--checkpoint", "x.pt"], "lambdatrain predict", "Missing argument"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Each case in its own process of the installed script, all started at once (imports take seconds)."""
    out = tmp_path_factory.mktemp("entry")
    cases = {name: args for name, (args, _, _) in USAGE_ERRORS.items()}
    cases["bare"] = []
    cases["refused setting"] = ["local", "train", "--workers", "0", "--out", str(out / "o"), "--cache-dir", str(out / "c")]
    procs = {name: subprocess.Popen([str(LAMBDATRAIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in cases.items()}
    return {name: subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for name, p in procs.items()}


def _clean(text: str) -> None:
    assert "Traceback" not in text and "╭" not in text and "│" not in text, text


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_a_wrong_command_line_gets_the_usage_line_and_one_error_line(runs, case):
    _, prog, message = USAGE_ERRORS[case]
    result = runs[case]
    assert result.returncode == 2, result
    _clean(result.stdout + result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith(f"Usage: {prog} "), result.stderr
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert len(lines) <= 3, result.stderr  # usage, click's "Try ... --help", the error


def test_bare_lambdatrain_prints_the_help_and_exits_0(runs):
    result = runs["bare"]
    assert result.returncode == 0, result
    _clean(result.stdout + result.stderr)
    assert result.stdout.startswith("Usage: lambdatrain ") and "Commands:" in result.stdout


def test_a_refused_setting_is_one_error_line_and_exit_1(runs):
    result = runs["refused setting"]
    assert result.returncode == 1, result
    _clean(result.stdout + result.stderr)
    assert result.stderr.strip().splitlines() == ["error: invalid field 'workers': must be between 1 and 1000"]


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("command", [" ".join(c) for c in _commands(typer.main.get_command(app))])
def test_every_help_reads_cleanly(cli, command):
    result = cli(*command.split(), "--help")
    assert result.exit_code == 0, result.output
    _clean(result.output)
    for leak in ("``", "<bool>", ":func:", ":class:"):
        assert leak not in result.output, f"{command} --help shows {leak}"
    summary = result.output.split("\n\n")[1].strip()
    assert summary and not summary.endswith("..."), result.output
