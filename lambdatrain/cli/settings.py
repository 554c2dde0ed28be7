"""The run settings as options of ``local train`` and ``start``, and as the README's table: both
derived from the one declaration, lambdatrain/protocol/config.py.

``python -m lambdatrain.cli.settings`` prints the table (``--schema``: the start event's JSON Schema,
committed as docs/start-event.schema.json); tests/cli/test_settings.py fails when the README's copy,
either command's ``--help`` or the validator disagree with the declaration.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lambdatrain.cli.edge import OptionGroup
from lambdatrain.protocol.config import (CLIENTS, DECLARED, DEFAULTS, SETTINGS, START, Setting, start_event_schema,
                                         value_type)


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def default_for(name: str, client: str) -> Any:
    """The setting's default as ``client`` offers it (dataclasses.MISSING: required there)."""
    offer = SETTINGS[name].offer(client)
    return DEFAULTS.get(name, dataclasses.MISSING) if offer.default is DECLARED else offer.default


def help_for(name: str, client: str) -> str:
    spec, offer = SETTINGS[name], SETTINGS[name].offer(client)
    accepted = "" if offer.path_here else spec.accepted()
    return (offer.help or spec.help) + (f"; {accepted}" if accepted else "")


def setting_option(name: str, also: str = "") -> Any:
    """A run setting as an option of another command (``plan``), with the setting's help."""
    return typer.Option(help=help_for(name, START) + (f"; {also}" if also else ""))


def _option(name: str, client: str) -> tuple[str, Any, Any]:
    kind, optional = value_type(name)
    kind = Path if SETTINGS[name].offer(client).path_here else kind
    default = default_for(name, client)
    annotation = Optional[kind] if optional or default is None else kind
    field = dataclasses.field() if default is dataclasses.MISSING else dataclasses.field(default=default)
    return name, Annotated[annotation, typer.Option(help=help_for(name, client))], field


def settings_group(client: str) -> OptionGroup:
    """Every run setting as an option of ``client`` (one of protocol.config.CLIENTS)."""
    assert client in CLIENTS, client
    fields = sorted((_option(name, client) for name in SETTINGS),
                    key=lambda f: f[2].default is not dataclasses.MISSING)  # required ones first (stable)
    spec = dataclasses.make_dataclass(f"{client.title().replace(' ', '')}Settings", fields, frozen=True)
    return OptionGroup("settings", spec)


def _shown(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def _row(name: str, spec: Setting) -> str:
    defaults = {client: _shown(default_for(name, client)) for client in CLIENTS}
    default = defaults[CLIENTS[-1]] if len(set(defaults.values())) == 1 else \
        "; ".join(f"{v} (`{c}`)" for c, v in defaults.items())
    meanings = {client: spec.offer(client).help for client in CLIENTS if spec.offer(client).help}
    meaning = spec.help + (f" {spec.note}" if spec.note and spec.note[0] == "(" else spec.note)
    if meanings:
        meaning = "; ".join([f"`start`: {meaning}", *(f"`{c}`: {m}" for c, m in meanings.items())])
    accepted = ", ".join(f"`{c}`" for c in spec.choices) if spec.choices else spec.accepted()
    option = f"`{option_name(name)}`"
    if value_type(name)[0] is bool:  # a flag: --augment / --no-augment
        accepted, option = "true or false", f"{option} / `--no-{option_name(name)[2:]}`"
    return f"| `{name}` | {option} | {default} | {accepted} | {meaning} |"


def markdown_table() -> str:
    """The README's settings table, one row per setting in declaration order."""
    head = ["| setting | option | default | accepted | meaning |", "|---|---|---|---|---|"]
    return "\n".join(head + [_row(name, spec) for name, spec in SETTINGS.items()])


if __name__ == "__main__":
    print(json.dumps(start_event_schema(), indent=2) if sys.argv[1:] == ["--schema"] else markdown_table())
