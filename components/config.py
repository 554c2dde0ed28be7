"""The stack's settings, each declared once: its ``lambdatrain:<key>``, type, default, check and meaning.

Every field of ``StackSettings`` (and of ``FunctionSettings``, once per function: ``workerMemory``,
``starterTimeout``...) carries a ``Setting`` in its metadata. From those declarations come the
reading of Pulumi's config (``StackSettings.from_config``, which ``__main__.py`` calls once; the
components get the dataclass and never read the config), the checks (a bad value is one line naming
``lambdatrain:<key>``, unit-testable without Pulumi, and ``pulumi up`` stops before it creates
anything), and docs/deploy.md's table of stack settings (``python -m components.config`` prints it;
tests/infra/test_config.py fails when the doc differs). The types are the fields' annotations.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from lambdatrain.protocol.errors import ConfigError
from lambdatrain.protocol.limits import (
    MAX_EPHEMERAL_MB,
    MAX_MEMORY_MB,
    MAX_TIMEOUT_S,
    MIN_EPHEMERAL_MB,
    MIN_MEMORY_MB,
    NEW_ACCOUNT_MEMORY_MB,
)

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURES = ("x86_64", "arm64")
LOG_RETENTION_DAYS = (  # the values CloudWatch Logs accepts
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)
MAX_AZS = 6  # the VPC is carved into /20s: 8 private + 8 public at most, 6 AZs in us-east-1


@dataclass(frozen=True)
class Check:
    """A rule a value must follow; ``rule`` completes "must be ..." in errors and the docs."""

    ok: Callable[[Any], bool]
    rule: str


def between(low: int, high: int, unit: str = "") -> Check:
    return Check(lambda v: low <= v <= high, f"{low}..{high}{' ' + unit if unit else ''}")


def at_least(low: int, rule: str = "") -> Check:
    return Check(lambda v: v >= low, rule or f"at least {low}")


def one_of(choices: tuple, rule: str = "") -> Check:
    return Check(lambda v: v in choices, rule or f"one of {'|'.join(map(str, choices))}")


def _are_zone_names(zones: tuple[str, ...]) -> bool:
    return 1 <= len(zones) <= MAX_AZS and len(set(zones)) == len(zones) and all(z.strip() == z and z for z in zones)


def _is_vpc_cidr(cidr: str) -> bool:
    try:
        return 16 <= ipaddress.IPv4Network(cidr).prefixlen <= 19
    except ValueError:
        return False


@dataclass(frozen=True)
class Setting:
    """One config key: ``key`` (for a FunctionSettings field, what follows the function's name)."""

    key: str
    doc: str  # the meaning column of docs/deploy.md's table
    check: Check | None = None  # unset (None) values are not checked


def setting(key: str, doc: str, check: Check | None = None, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field declared as a stack setting (no ``default``: the field is required)."""
    return field(default=default, metadata={"setting": Setting(key, doc, check)})


@dataclass(frozen=True)
class FunctionSettings:
    """Size and limits of one Lambda function (keys ``<function>Memory`` etc.)."""

    memory_mb: int = setting("Memory", "MB; the CPU share grows with it (one full vCPU at 1769 MB); new accounts "
                             f"may refuse more than {NEW_ACCOUNT_MEMORY_MB} (`lambdatrain preflight` warns)",
                             between(MIN_MEMORY_MB, MAX_MEMORY_MB, "MB"))
    timeout_s: int = setting("Timeout", "seconds", between(1, MAX_TIMEOUT_S, "s"))
    # Unset by default: Lambda keeps 100 executions unreserved, so an account whose limit is 10 (a
    # new one) refuses any reservation at all (docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html).
    reserved_concurrency: int | None = setting(
        "Concurrency", "reserved concurrency; unset: none, the account's unreserved pool",
        at_least(1, "at least 1 (or unset)"), default=None,
    )
    ephemeral_mb: int = setting("EphemeralStorage", "MB of /tmp", between(MIN_EPHEMERAL_MB, MAX_EPHEMERAL_MB, "MB"),
                                default=512)


def function_sizing(default: FunctionSettings, **docs: str) -> Any:
    """A StackSettings field for one function; ``docs`` (by key suffix) replace FunctionSettings' meaning."""
    return field(default=default, metadata={"function": docs})


@dataclass(frozen=True)
class StackSettings:
    """Everything the components need from the stack configuration."""

    project: str
    stack: str
    workers: int = setting("workers", "workers per round; the start command's default", at_least(1), default=4)
    architecture: str = setting("architecture", "for all three functions; arm64 is about 20% cheaper per GB-second",
                                one_of(ARCHITECTURES), default="x86_64")
    starter: FunctionSettings = function_sizing(
        FunctionSettings(2048, 900, None, 2048),
        Timeout="seconds; the setup event installs torch: give it time",
        EphemeralStorage="MB of /tmp; pip downloads the wheels there",
    )
    worker: FunctionSettings = function_sizing(
        FunctionSettings(NEW_ACCOUNT_MEMORY_MB, 900),
        Concurrency="reserved concurrency; unset: none; when set, at least `workers` or every round is throttled",
    )
    combiner: FunctionSettings = function_sizing(
        FunctionSettings(NEW_ACCOUNT_MEMORY_MB, 900),
        Concurrency="reserved concurrency; unset: none; when set, a run's `combine_shards` may not exceed it",
    )
    az_count: int = setting("azCount", "availability zones the VPC spans: the first ones that need no opt-in",
                            between(1, MAX_AZS), default=2)
    availability_zones: tuple[str, ...] | None = setting(
        "availabilityZones", "the zones the VPC spans instead (a list, or names separated by commas); "
        "`azCount` is then their number", Check(_are_zone_names, f"1..{MAX_AZS} distinct zone names"), default=None,
    )
    nat_per_az: bool = setting("natPerAz", "one NAT gateway per AZ (resilient) instead of one shared (cheap)",
                               default=False)
    vpc_cidr: str = setting("vpcCidr", "private subnets in the low half, public in the high half",
                            Check(_is_vpc_cidr, "an IPv4 network from /16 to /19"), default="10.0.0.0/16")
    log_retention_days: int = setting("logRetentionDays", "days CloudWatch Logs keeps the functions' logs",
                                      one_of(LOG_RETENTION_DAYS, f"one CloudWatch accepts {LOG_RETENTION_DAYS}"),
                                      default=14)
    watchdog_minutes: int = setting("watchdogMinutes", 'how often the combiner gets `{"watchdog": true}`',
                                    between(1, 1440), default=5)
    async_retries: int = setting("asyncRetries", "Lambda's retries of a failed asynchronous invocation",
                                 between(0, 2), default=2)
    log_level: str = setting("logLevel", "`POWERTOOLS_LOG_LEVEL` of the functions", default="INFO")
    protect: bool = setting("protect", "protect table, file system and bucket from `pulumi destroy`; "
                            "table deletion protection; bucket not force-destroyed", default=False)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_config(cls, get: Callable[[str], str | None], project: str, stack: str) -> StackSettings:
        """Read every declared key with ``get`` (``pulumi.Config().get``); unset keys take the defaults."""
        values: dict[str, Any] = {}
        for f, s in _settings(cls):
            if (raw := get(s.key)) is not None:
                values[f.name] = _parse(s.key, raw, typing.get_type_hints(cls)[f.name])
        for f, _ in _functions():
            sizing = {}
            for g, s in _settings(FunctionSettings):
                if (raw := get(f.name + s.key)) is not None:
                    sizing[g.name] = _parse(f.name + s.key, raw, typing.get_type_hints(FunctionSettings)[g.name])
            values[f.name] = dataclasses.replace(f.default, **sizing)
        return cls(project=project, stack=stack, **values)

    @property
    def tags(self) -> dict[str, str]:
        return {"project": self.project, "stack": self.stack}

    @property
    def prefix(self) -> str:
        """Prefix of every physical name that must be known before deployment (functions, logs)."""
        return f"{self.project}-{self.stack}"

    @property
    def zone_count(self) -> int:
        """How many AZs the VPC spans: the explicit zones' number, else ``azCount``."""
        return len(self.availability_zones) if self.availability_zones else self.az_count

    def validate(self) -> None:
        for key, value, check in self._checked():
            if value is not None and check is not None and not check.ok(value):
                raise ConfigError(f"lambdatrain:{key} must be {check.rule}, got {value!r}")
        reserved = self.worker.reserved_concurrency
        if reserved is not None and reserved < self.workers:
            raise ConfigError(
                f"lambdatrain:workerConcurrency must be at least workers ({self.workers}) "
                f"or every round is throttled, got {reserved}"
            )

    def _checked(self):
        """(key, value, check) for every declared setting, in declaration order."""
        for f in dataclasses.fields(self):
            if "setting" in f.metadata:
                s = f.metadata["setting"]
                yield s.key, getattr(self, f.name), s.check
            elif "function" in f.metadata:
                sizing = getattr(self, f.name)
                for g, s in _settings(FunctionSettings):
                    yield f.name + s.key, getattr(sizing, g.name), s.check


def _settings(cls: type) -> list[tuple[dataclasses.Field, Setting]]:
    return [(f, f.metadata["setting"]) for f in dataclasses.fields(cls) if "setting" in f.metadata]


def _functions() -> list[tuple[dataclasses.Field, dict[str, str]]]:
    return [(f, f.metadata["function"]) for f in dataclasses.fields(StackSettings) if "function" in f.metadata]


def _parse(key: str, raw: str, hint: Any) -> Any:
    """A config string as the field's type (``int | None`` reads as int: None is only the unset value)."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    kind = next(t for t in typing.get_args(hint) if t is not type(None)) if union else hint
    if typing.get_origin(kind) is tuple:
        return _parse_names(key, raw)
    if kind is bool:
        if raw in ("true", "True", "false", "False"):  # what pulumi.Config.get_bool accepts
            return raw.lower() == "true"
        raise ConfigError(f"lambdatrain:{key} must be true or false, got {raw!r}")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"lambdatrain:{key} must be an integer, got {raw!r}") from None
    return raw


def _parse_names(key: str, raw: str) -> tuple[str, ...]:
    """A YAML list (the engine hands it over as JSON) or names separated by commas."""
    try:
        names = json.loads(raw) if raw.lstrip().startswith("[") else raw.split(",")
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"lambdatrain:{key} must be a list of names, got {raw!r}")
    return tuple(n.strip() for n in names)


def stack_config(stack: str, root: Path = ROOT) -> dict[str, str]:
    """The config of ``Pulumi.<stack>.yaml`` as the engine hands it to a program: strings."""
    document = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text()) or {}
    return {key: _as_config_string(value) for key, value in (document.get("config") or {}).items()}


def _as_config_string(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def settings_table(stacks: dict[str, dict[str, str]]) -> str:
    """docs/deploy.md's table: one row per key, with its default, each stack file's value and the rule."""
    names = list(stacks)
    lines = [
        f"| key (`lambdatrain:`) | default | {' | '.join(names)} | allowed | meaning |",
        "|---" * (len(names) + 4) + "|",
    ]

    def row(key: str, default: Any, s: Setting, doc: str = "") -> None:
        cells = [f"`{key}`", _doc_value(default)] + [stacks[n].get(f"lambdatrain:{key}", "") for n in names]
        cells += [s.check.rule if s.check else "", doc or s.doc]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")

    for f in dataclasses.fields(StackSettings):
        if "setting" in f.metadata:
            row(f.metadata["setting"].key, f.default, f.metadata["setting"])
        elif "function" in f.metadata:
            for g, s in _settings(FunctionSettings):
                row(f.name + s.key, getattr(f.default, g.name), s, f.metadata["function"].get(s.key, ""))
    return "\n".join(lines)


def _doc_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ",".join(value)
    return json.dumps(value) if isinstance(value, bool) else str(value)


def stack_names(root: Path = ROOT) -> list[str]:
    """The example stacks, one per ``Pulumi.<stack>.yaml``."""
    return sorted(p.name.split(".")[1] for p in root.glob("Pulumi.*.yaml"))


if __name__ == "__main__":
    sys.stdout.write(settings_table({name: stack_config(name) for name in stack_names()}) + "\n")
