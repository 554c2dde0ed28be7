"""One declaration of the run settings: the README's table, the real ``--help`` of ``local train`` and
``start`` and the validator must agree with it (names, defaults, choices, ranges), and every
setting must reach the validator from both commands."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lambdatrain.cli.settings import default_for, markdown_table, option_name
from lambdatrain.protocol.config import CLIENTS, LOCAL_TRAIN, SETTINGS, START, parse_config, value_type
from lambdatrain.protocol.errors import InvalidEvent
from tests.cli.conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
LAMBDATRAIN = Path(sys.executable).with_name("lambdatrain")
# A base event under which every range can be reached at both ends (batch_size >= workers,
# warmup_epochs <= epochs, local_steps > 1 only in mode average).
BASE = {"workers": 1, "epochs": 10_000, "mode": "average", "batch_size": 1_000_000}


def _readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings table: .*?-->\n(.*?)<!-- end of settings table -->", text, re.S)
    assert block, "README.md lost its settings table markers"
    assert block.group(1).strip() == markdown_table(), \
        "README's settings table is stale: paste in the output of `python -m lambdatrain.cli.settings`"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in block.group(1).strip().splitlines()[2:]]
    return {row[0].strip("`"): row[1:] for row in rows}


def _value(cell: str):
    cell = cell.strip().strip("`")
    if cell in ("none", "required"):
        return None if cell == "none" else dataclasses.MISSING
    if cell in ("true", "false"):
        return cell == "true"
    return float(cell) if re.fullmatch(r"-?[0-9.e+-]+", cell) else cell


def _readme_defaults(cell: str) -> dict[str, object]:
    """'4 (`local train`); required (`start`)' or one value for every client."""
    per_client = re.findall(r"([^;]+?) \(`([a-z ]+)`\)", cell)
    if per_client:
        return {client: _value(value) for value, client in per_client}
    return {client: _value(cell) for client in CLIENTS}


def _help_options(*command: str) -> dict[str, str]:
    """``--option`` -> its help entry (wrapped lines joined), from the installed console script."""
    out = subprocess.run([str(LAMBDATRAIN), *command, "--help"], capture_output=True, text=True, check=True).stdout
    entries: dict[str, str] = {}
    current = None
    for line in out.split("\nOptions:\n", 1)[1].splitlines():
        start = re.match(r"  (--[a-z0-9-]+)", line)
        if start:
            current = start.group(1)
            entries[current] = line
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
    return {name: " ".join(text.split()) for name, text in entries.items()}


def _help_default(entry: str, name: str):
    if "[required]" in entry:
        return dataclasses.MISSING
    shown = re.search(r"\[default: (.*?)\]", entry)
    if shown is None:
        return None
    if value_type(name)[0] is bool:
        return shown.group(1) == name.replace("_", "-")
    return _value(shown.group(1))


def _choices(text: str) -> tuple[str, ...]:
    found = re.search(r"one of ((?:`?[\w.]+`?, )*`?[\w.]+`?)", text)
    return tuple(c.strip("`") for c in found.group(1).split(", ")) if found else ()


@pytest.fixture(scope="module")
def helps() -> dict[str, dict[str, str]]:
    return {client: _help_options(*client.split()) for client in CLIENTS}


def test_readme_table_help_and_validator_name_the_same_settings(helps):
    rows = _readme_rows()
    assert list(rows) == list(SETTINGS)
    for client, options in helps.items():
        assert {option_name(n) for n in SETTINGS} <= set(options), f"{client} lacks a setting's option"
    for name in SETTINGS:
        parse_config({**BASE, name: parse_config(BASE).to_dict()[name]})  # a known key
    with pytest.raises(InvalidEvent):
        parse_config({**BASE, "not_a_setting": 1})


@pytest.mark.parametrize("name", list(SETTINGS))
def test_defaults_agree_in_readme_help_and_validator(helps, name):
    readme = _readme_defaults(_readme_rows()[name][1])
    for client in CLIENTS:
        declared = default_for(name, client)
        shown = _help_default(helps[client][option_name(name)], name)
        assert readme[client] == shown == declared, (client, readme[client], shown, declared)
    if name != "workers":  # what a start event that leaves the setting out gets: start's default
        assert parse_config({"workers": 1}).to_dict()[name] == default_for(name, START)


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.choices])
def test_choices_agree_in_readme_help_and_validator(helps, name):
    declared = SETTINGS[name].choices
    assert tuple(c.strip().strip("`") for c in _readme_rows()[name][2].split(",")) == declared
    for client in CLIENTS:
        assert _choices(helps[client][option_name(name)]) == declared
    for choice in declared:
        assert getattr(parse_config({**BASE, name: choice}), name) == choice
    with pytest.raises(InvalidEvent) as info:
        parse_config({**BASE, name: "no-such-" + name})
    assert info.value.field == name


def _bounds(text: str):
    """(low, high, low_open, high_open) from '1 to 1000' or '(0, 100]'; None when there is no range."""
    closed = re.search(r"(-?[0-9.]+) to (-?[0-9.]+)", text)
    if closed:
        return float(closed.group(1)), float(closed.group(2)), False, False
    interval = re.search(r"([\[(])(-?[0-9.]+), (-?[0-9.]+)([\])])", text)
    if interval:
        return float(interval.group(2)), float(interval.group(3)), interval.group(1) == "(", interval.group(4) == ")"
    return None


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.low is not None])
def test_ranges_in_readme_and_help_are_the_validators(helps, name):
    bounds = _bounds(_readme_rows()[name][2])
    assert bounds is not None
    for client in CLIENTS:
        assert _bounds(helps[client][option_name(name)]) == bounds
    low, high, low_open, high_open = bounds
    kind = value_type(name)[0]
    step = 1 if kind is int else 1e-9
    cast = int if kind is int else float
    for value, ok in [(low, not low_open), (high, not high_open), (low - step, False), (high + step, False)]:
        event = {**BASE, name: cast(value)}
        if ok:
            parse_config(event)
        else:
            with pytest.raises(InvalidEvent) as info:
                parse_config(event)
            assert info.value.field == name


def _bad_cli_value(name: str, client: str) -> str | None:
    spec = SETTINGS[name]
    if spec.offer(client).path_here or value_type(name)[0] is bool:
        return None  # a path on this machine, or a flag: no value the validator refuses
    if spec.choices:
        return "no-such-" + name
    if spec.relative_path:
        return "../outside"
    return str(spec.low - 1)


@pytest.mark.parametrize("client", CLIENTS)
def test_every_setting_reaches_the_validator_from_both_commands(cli, tmp_path, client):
    checked = 0
    for name in SETTINGS:
        bad = _bad_cli_value(name, client)
        if bad is None:
            continue
        if client == LOCAL_TRAIN:
            args = ["local", "train", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"]
        else:  # nothing is contacted: the settings are refused before the starter is invoked
            args = ["start", "--endpoint", "http://127.0.0.1:9", *(["--workers", "2"] if name != "workers" else [])]
        assert_one_line_error(cli(*args, option_name(name), bad), f"invalid field '{name}'")
        checked += 1
    flags = [name for name in SETTINGS if value_type(name)[0] is bool]
    assert checked >= len(SETTINGS) - len(flags) - 1  # only the flags and local train's --data path skipped
    # A flag reaches the validator too: through the rule that ties it to another setting.
    assert_one_line_error(cli(*args, "--nesterov", "--momentum", "0"), "invalid field 'nesterov'")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
