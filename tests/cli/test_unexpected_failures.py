"""A failure that no command expected (here: a local-stack process dying as the stack starts, Lambda's
``Runtime exited with error``) is one ``error:`` line naming what failed and what to do, exit 1,
through the installed console script; ``--debug`` or ``LAMBDATRAIN_DEBUG=1`` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LAMBDATRAIN = Path(sys.executable).with_name("lambdatrain")

# Loaded by the console script's interpreter at startup (site imports the first sitecustomize on the
# path): the stack's start fails as it does when a function's process is killed during its init.
SITECUSTOMIZE = """
from lambdatrain.local import environment, stack

def start(self):
    raise environment.InvocationError({"errorMessage": "Runtime exited with error: exit status -9\\nmore detail",
                                       "errorType": "Runtime.ExitError"})

stack.LocalStack.start = start
"""

CASES = {
    "plain": ([], {}),
    "--debug": (["--debug"], {}),
    "LAMBDATRAIN_DEBUG": ([], {"LAMBDATRAIN_DEBUG": "1"}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("dying")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    base = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
    procs = {name: subprocess.Popen([str(LAMBDATRAIN), *flags, "local", "serve", "--state-dir", str(folder / name),
                                     "--port", "0"], env={**base, **env}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, (flags, env) in CASES.items()}
    return {name: subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for name, p in procs.items()}


def test_an_unexpected_failure_is_one_line_naming_it_and_what_to_do(runs):
    result = runs["plain"]
    assert result.returncode == 1, result
    assert "Traceback" not in result.stdout + result.stderr and "╭" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: lambdatrain local serve failed (InvocationError: Runtime exited with error: "
                           "exit status -9)"), line
    assert "--debug" in line and "LAMBDATRAIN_DEBUG=1" in line and "more detail" not in line


@pytest.mark.parametrize("case", ["--debug", "LAMBDATRAIN_DEBUG"])
def test_debug_shows_the_traceback(runs, case):
    result = runs[case]
    assert result.returncode == 1, result
    assert "Traceback" in result.stderr and "InvocationError" in result.stderr, result.stderr
    assert "error: lambdatrain local serve failed" not in result.stderr
