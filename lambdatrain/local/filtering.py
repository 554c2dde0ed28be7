"""Event filtering as Lambda's event source mappings apply it, for the subset our filter uses.

A pattern is a nested dict whose leaves are lists of allowed values, or of ``{"exists": bool}``,
``{"prefix": str}`` or ``{"anything-but": [...]}`` matchers; a record matches when every key of the
pattern matches (AWS's rules). The pattern itself is ``lambdatrain.ledger.schema.STREAM_FILTER_PATTERN``,
the very one deployed by ``components/functions.py``.
"""

from __future__ import annotations

from typing import Any

_MISSING = object()


def matches(pattern: dict[str, Any], record: Any) -> bool:
    for key, expected in pattern.items():
        value = record.get(key, _MISSING) if isinstance(record, dict) else _MISSING
        if isinstance(expected, dict):
            if value is _MISSING or not matches(expected, value):
                return False
        elif not any(_leaf(rule, value) for rule in expected):
            return False
    return True


def _leaf(rule: Any, value: Any) -> bool:
    if isinstance(rule, dict):
        if "exists" in rule:
            return (value is not _MISSING) == bool(rule["exists"])
        if value is _MISSING:
            return False
        if "prefix" in rule:
            return isinstance(value, str) and value.startswith(rule["prefix"])
        if "anything-but" in rule:
            return value not in rule["anything-but"]
        raise ValueError(f"unsupported filter rule {rule}")
    return value is not _MISSING and value == rule
