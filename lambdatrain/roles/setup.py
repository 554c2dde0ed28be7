"""The starter's ``{"setup": true}`` event: make a fresh stack's EFS ready to train, exactly once.

It owns the two one-time preparations of a deployment: the pinned packages (torch's CPU build,
torchvision, numpy, xxhash and every dependency, ``lambdatrain.roles.pins``) installed into the
mount's package folder, and the dataset archive uploaded to the stack's bucket decoded into the
mount's prepared data folder. This module imports no torch or numpy at import time: it runs
before they exist.

Exactly once: setup first takes the single-flight lock (``lambdatrain.ledger.setup``), a
conditional DynamoDB item whose lease its holder renews every third of ``lease_s`` while it works.
A second delivery while the lease is live is a no-op (``SetupBusy``; ``lambdatrain setup`` follows
the running one); a setup that died stops renewing, and once its lease has run out the next setup
(Lambda's own retry, one minute later, with the default 60 s lease) takes the lock over, sweeps
what the dead one left (``setup_steps.sweep``) and does the steps not yet done. Every step is
skipped when already done, and each fits the 900 s limit by itself (``setup_steps.BUDGET_S``).
Progress and the outcome (versions installed, dataset counts, the error) are recorded in the
ledger as the attempt goes.

Event: ``{"setup": true, "dataset": "datasets/cifar-10-python.tar.gz", "force": false,
"val_fraction": 0.1, "seed": 0, "lease_s": 60}``; every key but ``setup`` is optional. ``force``
prepares the dataset again even where a prepared one exists.
"""

from __future__ import annotations

import math
import platform
import subprocess
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import boto3
from botocore.config import Config

from lambdatrain.ledger.setup import SetupLedger, SetupLost
from lambdatrain.logs import logger
from lambdatrain.protocol.errors import ConfigError, InvalidEvent
from lambdatrain.protocol.events import Outcome, check_relative_path
from lambdatrain.roles import packages as deps
from lambdatrain.roles import setup_steps as steps
from lambdatrain.roles.settings import DATASET_PREFIX, ENV_BUCKET, RuntimeSettings

if TYPE_CHECKING:  # for annotations only: setup is handed the runtime, it never builds one
    from lambdatrain.roles.runtime import Runtime

DEFAULT_DATASET = f"{DATASET_PREFIX}cifar-10-python.tar.gz"
# Lambda retries a failed asynchronous event after one minute, then two ("Error handling and
# automatic retries in Lambda"), so with a 60 s lease the first retry of a killed setup finds the
# lock free and finishes the work.
DEFAULT_LEASE_S = 60.0
MAX_LEASE_S = 900.0  # Lambda's longest timeout: no holder can be alive for longer unrenewed
# platform.machine() -> Lambda's architecture name.
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
_FIELDS = ("setup", "dataset", "force", "val_fraction", "seed", "lease_s")


@dataclass(frozen=True)
class SetupEvent:
    dataset: str = DEFAULT_DATASET  # S3 key of the dataset archive in the stack's bucket
    force: bool = False  # prepare the dataset again even if the data folder holds a prepared one
    val_fraction: float = 0.1  # share of train carved out for validation when the source has no test split
    seed: int = 0  # seeds the train shuffle and any carved validation split
    lease_s: float = DEFAULT_LEASE_S  # seconds the lock outlives a holder that stopped renewing it


def parse_setup(event: Mapping[str, Any]) -> SetupEvent:
    """Validate a setup event; InvalidEvent names the first bad field."""
    if not isinstance(event, Mapping):
        raise InvalidEvent("event", "must be a JSON object")
    for key in event:
        if key not in _FIELDS:
            raise InvalidEvent(str(key), "is not a known field of the setup event")
    if event.get("setup") is not True:
        raise InvalidEvent("setup", "must be true")
    dataset = event.get("dataset", DEFAULT_DATASET)
    if not isinstance(dataset, str):
        raise InvalidEvent("dataset", "must be a string (an S3 key in the stack's bucket)")
    check_relative_path(dataset, "dataset")
    if not dataset.startswith(DATASET_PREFIX):
        raise InvalidEvent("dataset", f"must be a key under {DATASET_PREFIX} (the starter may read no other)")
    force = event.get("force", False)
    if not isinstance(force, bool):
        raise InvalidEvent("force", "must be a boolean")
    val_fraction = _number(event, "val_fraction", 0.1)
    if not 0 <= val_fraction < 1:
        raise InvalidEvent("val_fraction", "must be in [0, 1)")
    seed = event.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidEvent("seed", "must be a non-negative integer")
    lease_s = _number(event, "lease_s", DEFAULT_LEASE_S)
    if not 1 <= lease_s <= MAX_LEASE_S:
        raise InvalidEvent("lease_s", f"must be in [1, {MAX_LEASE_S:.0f}] seconds")
    return SetupEvent(dataset=dataset, force=force, val_fraction=val_fraction, seed=seed, lease_s=lease_s)


def _number(event: Mapping[str, Any], key: str, default: float) -> float:
    value = event.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidEvent(key, "must be a finite number")
    return float(value)


def lambda_architecture(machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    if machine not in _ARCH:
        raise ConfigError(f"unsupported machine {machine!r}; expected one of {sorted(_ARCH)}")
    return _ARCH[machine]


def locks_for(settings: RuntimeSettings, arch: str) -> tuple[deps.Lock, ...]:
    """The stack's own lock and index where both are set, else the shipped pins for ``arch``."""
    if (settings.packages_lock is None) != (settings.packages_index is None):
        raise ConfigError("LAMBDATRAIN_PACKAGES_LOCK and LAMBDATRAIN_PACKAGES_INDEX go together: set both or neither")
    if settings.packages_lock is not None:
        return deps.custom_lock(settings.packages_index, settings.packages_lock)
    return deps.lambda_locks(arch)


def setup(runtime: Runtime, event: Mapping[str, Any], *, runner: deps.Runner = subprocess.run, s3=None,
          time_left: Callable[[], float] = lambda: math.inf) -> Outcome:
    """Take the lock, sweep, then install the packages and prepare the dataset (each skipped when done).

    ``runner`` runs pip (``subprocess.run``), ``s3`` is a boto3 S3 client and ``time_left`` the
    invocation's seconds left (``runtime.Deadline``); tests pass fakes.
    """
    ev = parse_setup(event)
    settings = runtime.settings
    if not settings.bucket:
        raise ConfigError(f"environment variable {ENV_BUCKET} is not set (the bucket holding the dataset)")
    arch = lambda_architecture()
    locks = locks_for(settings, arch)
    book = SetupLedger(runtime.ledger.table, runtime.clock)
    owner = uuid.uuid4().hex[:12]
    attempt = book.acquire(owner, ev.lease_s)  # SetupBusy: another setup is at work (a no-op answer)
    try:
        with _heartbeat(book, settings, owner, ev.lease_s, runtime.clock) as alive:
            detail = _steps(runtime, book, owner, alive, ev, arch, locks, runner, s3, time_left)
    except SetupLost:
        raise  # the successor owns the record now
    except Exception as exc:  # recorded, then re-raised: the failure is the outcome, Lambda retries
        book.finish(owner, error=" ".join(str(exc).split()) or type(exc).__name__)
        raise
    book.finish(owner)
    logger.info("setup done", extra={"attempt": attempt, **detail})
    return Outcome("ready", detail={"packages": str(settings.packages), "data": str(settings.data),
                                    "attempt": attempt, **detail})


def _steps(runtime: Runtime, book: SetupLedger, owner: str, alive: Callable[[], None], ev: SetupEvent, arch: str,
           locks: tuple[deps.Lock, ...], runner: deps.Runner, s3, time_left: Callable[[], float]) -> dict[str, Any]:
    settings = runtime.settings
    book.progress(owner, "sweep", "sweeping what an earlier setup left", None)
    book.progress(owner, "sweep", "swept", {"removed": steps.sweep(runtime)})
    if deps.installed(settings.packages) != deps.marker_text(locks):  # pip and its time only for an install
        book.progress(owner, "pip", "checking that pip runs", None)
        book.progress(owner, "pip", "pip runs", {"version": deps.check_pip(runner)})
        if settings.packages_lock is None:  # the budget is the shipped pins'; a stack's own lock has none
            _enough_time("packages", time_left)
    alive()
    book.progress(owner, "packages", f"installing {len(steps.versions(locks))} packages into {settings.packages}")
    packages = steps.install(runtime, locks, arch, runner)
    alive()
    book.progress(owner, "packages", "packages " + ("installed" if packages["installed"] else "already there"), packages)
    deps.add_packages_to_path(settings)
    _enough_time("dataset", time_left)
    book.progress(owner, "dataset", f"preparing s3://{settings.bucket}/{ev.dataset} into {settings.data}")
    counts = steps.prepare(runtime, ev.dataset, force=ev.force, val_fraction=ev.val_fraction, seed=ev.seed, s3=s3)
    alive()
    book.progress(owner, "dataset", "dataset " + ("prepared" if counts["prepared"] else "already there"), counts)
    return {**packages, **counts}


def _enough_time(step: str, time_left: Callable[[], float]) -> None:
    # A step is never started without its budget left: the timeout would cut it half-way.
    if time_left() < steps.BUDGET_S[step]:
        raise ConfigError(f"{time_left():.0f} s left, step {step} may need {steps.BUDGET_S[step]:.0f} s; "
                          "give the starter a longer timeout (900 s) and send setup again")


@contextmanager
def _heartbeat(book: SetupLedger, settings: RuntimeSettings, owner: str, lease_s: float,
               clock: Callable[[], float]) -> Iterator[Callable[[], None]]:
    """Renew the lease every third of it on a thread of its own; yields a check that raises SetupLost."""
    stop, lost = threading.Event(), []
    # A client of its own: boto3 resources are not thread-safe, and pip blocks the main thread. Its
    # calls give up well inside a renewal period, so a slow answer cannot outlast the lease.
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=min(5.0, lease_s / 12),
                    read_timeout=max(1.0, lease_s / 12))
    renewer = SetupLedger(boto3.session.Session().resource("dynamodb", config=config).Table(settings.table), clock)

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                renewer.renew(owner, lease_s)
            except SetupLost as exc:
                lost.append(exc)
                return
            except Exception as exc:  # noqa: BLE001 - a throttle or timeout: the next tick tries again
                # The thread must outlive a failed renewal: two more chances remain inside the lease.
                logger.warning("setup lease renewal failed; retrying", extra={"error": repr(exc)})

    def alive() -> None:
        if lost:
            raise lost[0]

    thread = threading.Thread(target=renew, daemon=True, name="setup-lease")
    thread.start()
    try:
        yield alive
    finally:
        stop.set()
        thread.join()
