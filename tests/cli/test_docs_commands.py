"""The docs do not rot: every `lambdatrain ...` and `make ...` command they show still parses.

The commands run for real in the tests named beside them in the docs; this check catches a
renamed option or command anywhere in README.md and docs/*.md, including the AWS-only ones.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer

from lambdatrain.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _documented(prefix: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith(prefix + " "):
                    found.append((doc.name, line))
    return found


@pytest.mark.parametrize("doc, line", _documented("lambdatrain"))
def test_documented_lambdatrain_command_parses(doc, line):
    # Shell variables ($STACK) expand to options at run time: the rest must parse as written.
    args = [a for a in shlex.split(line, comments=True)[1:] if not a.startswith("$")]
    # typer bundles its own click (typer._click), so a group is recognised by what it does, not by
    # the click package's Group class (which never matched, and the subcommands went unparsed).
    command = typer.main.get_command(app)
    ctx = command.make_context("lambdatrain", list(args))
    depth = 0
    while hasattr(command, "resolve_command"):  # our groups take no options: args[0] names the command
        name, command, args = command.resolve_command(ctx, args)
        ctx = command.make_context(name, list(args), parent=ctx)
        depth += 1
    assert depth >= 1 and not hasattr(command, "resolve_command"), f"{line!r} names no command"


@pytest.mark.parametrize("doc, line", _documented("make"))
def test_documented_make_target_exists(doc, line):
    target = [a for a in shlex.split(line, comments=True)[1:] if "=" not in a]
    result = subprocess.run(["make", "-n", "-C", str(ROOT), *target], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_code_fences_open_with_a_language_or_close(doc):
    # An unbalanced fence silently turns commands into prose, and the checks above skip them.
    fences = [line for line in doc.read_text().splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0, f"{doc.name}: odd number of ``` lines"
