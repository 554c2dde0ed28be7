"""A run's settings, declared once: RunConfig, whose every field carries a ``Setting`` (help, range
or choices, and how each client offers it), and ``parse_config``, the validator derived from it.

Everything else is derived from this declaration: the start event's accepted keys and the
one-line ``InvalidEvent`` naming the field (here), the options of ``lambdatrain local train`` and
``lambdatrain start`` and the README's settings table (lambdatrain/cli/settings.py). The accepted
model and checksum names live here too, so the protocol needs neither torch nor xxhash to check
them: lambdatrain/storage/digest.py takes its algorithm names from here, and
tests/unit/test_protocol.py checks that lambdatrain/training/model.py builds exactly these models.
Beside them, what the clients on a user's machine share about datasets: where prepared ones are
kept (``DATASET_CACHE``) and the help of the options that name them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from lambdatrain.protocol.events import RUN_ID_PATTERN, check_relative_path, require, typed

MODELS = ("vgg19_cifar", "vgg11_cifar", "vgg19")
CHECKSUMS = ("xxh3_128", "sha256")
MODES = ("sync", "average")
TRANSPORTS = ("float32", "float16", "bfloat16", "ternary_ef", "sign_ef")
# The compressed transports and their codec (lambdatrain/training/compress): results and the
# combiner's update travel compressed, with error feedback on both sides (lambdatrain/training/feedback.py).
COMPRESSED = {"ternary_ef": "ternary", "sign_ef": "sign"}
LR_SCHEDULES = ("constant", "cosine")
MAX_WORKERS = 1000
# Where the clients on a user's machine (the CLI, the benchmarks) keep prepared datasets: the
# default of every --cache-dir, and the cache the local train's --data default looks in.
DATASET_CACHE = Path.home() / ".cache" / "lambdatrain"
DATASET_CACHE_HELP = "where prepared datasets are kept"
DATASET_HELP = "dataset in any supported format"  # a --data that names a file or folder here
# The clients that offer run settings as options: every setting is an option of both unless its
# Setting says otherwise (an Offer with its own meaning or default).
LOCAL_TRAIN, START = "local train", "start"
CLIENTS = (LOCAL_TRAIN, START)
DECLARED: Any = object()  # an Offer's default when the client uses the declared one


@dataclass(frozen=True)
class Offer:
    """How one client offers a setting, where it differs from the declaration."""

    help: str | None = None  # its meaning for this client
    default: Any = DECLARED  # its default for this client
    path_here: bool = False  # a path on this machine, not the setting's value (local train's --data)


@dataclass(frozen=True)
class Rule:
    """A check that involves other settings (each validated before this one, in field order)."""

    holds: Callable[[Any], bool]  # given the RunConfig
    problem: str


@dataclass(frozen=True)
class Setting:
    """What a RunConfig field accepts and means; its type and default are the field's own."""

    help: str  # one line: --help and the README
    low: float | None = None  # smallest value accepted (inclusive unless low_open)
    high: float | None = None  # largest value accepted (inclusive unless high_open)
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()  # the accepted values of a string setting
    rule: Rule | None = None
    relative_path: bool = False  # a path below the mount (lambdatrain.protocol.events.check_relative_path)
    note: str = ""  # the README's longer why, after the help
    offers: Mapping[str, Offer] = field(default_factory=dict)  # client -> how it differs there

    def accepted(self) -> str:
        """The range or choices in words ("" when any value of the type is fine)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            low, high = _number(self.low), _number(self.high)
            if not (self.low_open or self.high_open):
                return f"{low} to {high}"
            return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.relative_path:
            return "a relative path below the mount"
        return ""

    def offer(self, client: str) -> Offer:
        return self.offers.get(client, Offer())


def setting(default: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A RunConfig field with its Setting as metadata."""
    return field(default=default, metadata={"setting": Setting(**spec)})


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass(frozen=True)
class RunConfig:
    """A run's settings; stored with the run and with every checkpoint so a run describes itself.

    Upper bounds too: a value DynamoDB, torch or a day of Lambda time cannot hold is a typo.
    """

    # `local train` runs on this machine, where a default worker count saves typing; a deployed
    # run's N decides its cost, so `start` (and the event) must say it.
    workers: int = setting(help="worker invocations per round (N), one data shard each", low=1, high=MAX_WORKERS,
                           offers={LOCAL_TRAIN: Offer(default=4)})
    model: str = setting("vgg19_cifar", help="the network: CIFAR VGGs (32x32, batch norm) or the paper's vgg19 "
                                             "(224x224)", choices=MODELS)
    width: float = setting(1.0, help="channel multiplier of the model (0.125 trains on a laptop CPU in minutes)",
                           low=1 / 64, high=4)
    epochs: int = setting(1, help="passes over the training split", low=1, high=10_000)
    batch_size: int = setting(128, help="global batch: samples per optimizer step over all workers", low=1,
                              high=1_000_000, rule=Rule(lambda c: c.batch_size >= c.workers,
                                                        "must be at least the number of workers"))
    micro_batch: int = setting(64, help="samples per forward/backward (the batch-norm batch)", low=1, high=65_536)
    lr: float = setting(0.02, help="SGD learning rate (the peak, under a schedule)", low=0, high=100, low_open=True)
    lr_schedule: str = setting("constant", help="cosine anneals the rate to 0 by the last round", choices=LR_SCHEDULES,
                               note="(torch's `CosineAnnealingLR`, one step per round); each round's rate is in "
                                    "its metrics (`lr`)")
    warmup_epochs: float = setting(0.0, help="linear warm-up from lr/W to lr over the first W epochs", low=0,
                                   high=10_000, rule=Rule(lambda c: c.warmup_epochs <= c.epochs,
                                                          "must not exceed epochs"))
    momentum: float = setting(0.9, help="SGD momentum (its state is kept on EFS beside the weights)", low=0, high=1,
                              high_open=True)
    weight_decay: float = setting(5e-4, help="L2 penalty applied by the optimizer step", low=0, high=1)
    nesterov: bool = setting(False, help="Nesterov momentum (torch.optim.SGD's nesterov)",
                             rule=Rule(lambda c: not c.nesterov or c.momentum > 0, "needs momentum above 0"))
    seed: int = setting(0, help="seeds the initial weights, shard permutations and augmentation", low=0,
                        high=2**32, high_open=True)
    target_accuracy: float | None = setting(None, help="stop once validation accuracy reaches this", low=0, high=1,
                                            low_open=True)
    patience: int | None = setting(None, help="stop after this many evaluations without a new best accuracy",
                                   low=1, high=10_000)
    data: str | None = setting(None, help="prepared dataset folder below the mount (default: the stack's)",
                               relative_path=True, offers={LOCAL_TRAIN: Offer(
                                   help="dataset on this machine: cifar-10-python.tar.gz, an image folder (or "
                                        ".tar/.tar.gz of one) or a prepared folder (default: the cache, else the "
                                        "official download)", path_here=True)})
    max_train_samples: int | None = setting(None, help="use only the first K training samples", low=1, high=10**9)
    val_samples: int | None = setting(None, help="evaluate on the first K validation samples (default: all)",
                                      low=1, high=10**9)
    augment: bool = setting(True, help="random crop and flip on training batches")
    mode: str = setting("sync", help="sync: one optimizer step per round; average: local SGD, deltas averaged",
                        choices=MODES)
    local_steps: int = setting(1, help="average mode: optimizer steps each worker takes per round", low=1,
                               high=10_000, rule=Rule(lambda c: c.mode == "average" or c.local_steps == 1,
                                                      "only applies to mode 'average'"))
    transport: str = setting("float32", help="how worker results travel on EFS: a float dtype (sums stay float32), or "
                                                "compressed with error feedback both ways (ternary_ef 1.7 bits, sign_ef 1.1 "
                                                "bits per parameter; per-worker state in the stack's bucket)",
                                 choices=TRANSPORTS)
    combine_shards: int = setting(1, help="S combiner invocations per round, each reducing one slice of the "
                                          "parameters", low=1, high=64)
    checksum: str = setting("xxh3_128", help="checksum of every EFS file", choices=CHECKSUMS,
                            note="(xxh3_128 ~10 GB/s); see `lambdatrain/storage/digest.py` for why the default "
                                 "need not be cryptographic")
    round_deadline_s: float = setting(960.0, help="a round with no progress for this long is re-driven by the "
                                                  "watchdog", low=0, high=86_400, low_open=True)
    eval_every: int = setting(0, help="also evaluate every K rounds (0: at epoch boundaries only)", low=0,
                              high=10**6)
    keep_rounds: int = setting(3, help="weights and momentum kept on EFS: the newest K rounds' and every epoch "
                                       "boundary's (0: all)",
                               low=0, high=10**6, note="; worker results only of the last committed round "
                                                      "(`lambdatrain/storage/retention.py`)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.workers


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in dataclasses.fields(RunConfig)}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(RunConfig)
                            if f.default is not dataclasses.MISSING}
_HINTS = typing.get_type_hints(RunConfig)  # the annotations as types, not strings


def value_type(name: str) -> tuple[type, bool]:
    """A setting's type, read from RunConfig's annotations, and whether None is allowed."""
    hint = _HINTS[name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in args if a is not type(None)), type(None) in args
    return hint, False


# float settings take JSON integers too (1 is a fine learning rate); bool is checked apart (typed()).
_ACCEPTS = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


def parse_config(event: Mapping[str, Any]) -> RunConfig:
    """Build a RunConfig from a start event (unknown keys are refused, not ignored)."""
    require(isinstance(event, Mapping), "event", "must be a JSON object")
    for key in event:
        require(key in SETTINGS or key == "start", str(key), "is not a known setting")
    values = {}
    for name in SETTINGS:
        kind, optional = value_type(name)
        if name in event or name not in DEFAULTS:
            values[name] = typed(event, name, _ACCEPTS[kind], optional=optional)
    config = RunConfig(**values)
    for name, spec in SETTINGS.items():
        _check(config, name, spec)
    return config


def _check(config: RunConfig, name: str, spec: Setting) -> None:
    value = getattr(config, name)
    if value is None:
        return  # an optional setting left unset
    if spec.choices:
        require(value in spec.choices, name, f"must be {spec.accepted()}")
    if spec.low is not None and spec.high is not None:
        inside = (value > spec.low if spec.low_open else value >= spec.low) and \
                 (value < spec.high if spec.high_open else value <= spec.high)
        bounds = f"in {spec.accepted()}" if spec.low_open or spec.high_open else \
            f"between {_number(spec.low)} and {_number(spec.high)}"
        require(inside, name, f"must be {bounds}")
    if spec.relative_path:
        check_relative_path(value, name)
    if spec.rule is not None:
        require(spec.rule.holds(config), name, spec.rule.problem)


def start_event_schema() -> dict[str, Any]:
    """The start event as a JSON Schema (draft 2020-12), derived from the declaration.

    It states each key's type, range and choices; the checks that relate two settings (``Rule``)
    and the path rules are the validator's alone. docs/start-event.schema.json is this, committed
    for clients in other languages; tests/unit/test_protocol.py checks it is current and that
    the schema and parse_config accept the same single-key values.
    """
    json_types = {bool: "boolean", int: "integer", float: "number", str: "string"}
    properties: dict[str, Any] = {
        "start": {"const": True, "description": "marks a start event"},
        "run": {"type": "string", "pattern": RUN_ID_PATTERN.pattern,
                "description": "run id (default: derived from the delivery, so a redelivery is the same run)"},
    }
    for name, spec in SETTINGS.items():
        kind, optional = value_type(name)
        prop: dict[str, Any] = {"type": [json_types[kind], "null"] if optional else json_types[kind],
                                "description": spec.help}
        if spec.choices:
            prop["enum"] = [*spec.choices, *([None] if optional else [])]
        if spec.low is not None:
            prop["exclusiveMinimum" if spec.low_open else "minimum"] = spec.low
        if spec.high is not None:
            prop["exclusiveMaximum" if spec.high_open else "maximum"] = spec.high
        if name in DEFAULTS and DEFAULTS[name] is not None:
            prop["default"] = DEFAULTS[name]
        properties[name] = prop
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "lambdatrain start event",
            "type": "object", "properties": properties, "additionalProperties": False,
            "required": [name for name in SETTINGS if name not in DEFAULTS]}
