"""The starter's ``{"setup": true}`` event: make a fresh stack's EFS ready to train.

It owns the two one-time preparations of a deployment: the pinned CPU builds of torch, torchvision
and numpy installed into the mount's package folder (``lambdatrain.roles.packages``), and the dataset archive
uploaded to the stack's bucket decoded into the mount's prepared data folder
(``lambdatrain.training.data.prepare_dataset``). Both are skipped when already done, so a redelivered or
repeated setup event is a no-op. This module imports no torch or numpy at import time: it runs
before they exist.

Event: ``{"setup": true, "dataset": "datasets/cifar-10-python.tar.gz", "force": false,
"val_fraction": 0.1, "seed": 0}``; every key but ``setup`` is optional. ``force`` prepares the
dataset again even where a prepared one exists.
"""

from __future__ import annotations

import math
import platform
import shutil
import subprocess
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import boto3
from botocore.exceptions import ClientError

from lambdatrain.roles import packages as deps
from lambdatrain.protocol.errors import ConfigError, DataError, InvalidEvent
from lambdatrain.logs import logger
from lambdatrain.protocol.events import Outcome, check_relative_path
from lambdatrain.roles.settings import DATASET_PREFIX, ENV_BUCKET

if TYPE_CHECKING:  # the runtime module imports numpy (through the ledger), which setup installs
    from lambdatrain.roles.runtime import Runtime

DEFAULT_DATASET = f"{DATASET_PREFIX}cifar-10-python.tar.gz"
# platform.machine() -> Lambda's architecture name, the key of deps.LAMBDA_REQUIREMENTS.
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
# S3 answers 403 rather than 404 for a missing key when the caller may not list the bucket, and
# the starter's role may not (it reads only start/ and datasets/ objects).
_MISSING = {"404", "NoSuchKey", "403", "AccessDenied", "Forbidden"}


@dataclass(frozen=True)
class SetupEvent:
    dataset: str = DEFAULT_DATASET  # S3 key of the dataset archive in the stack's bucket
    force: bool = False  # prepare the dataset again even if the data folder holds a prepared one
    val_fraction: float = 0.1  # share of train carved out for validation when the source has no test split
    seed: int = 0  # seeds the train shuffle and any carved validation split


def parse_setup(event: Mapping[str, Any]) -> SetupEvent:
    """Validate a setup event; InvalidEvent names the first bad field."""
    if not isinstance(event, Mapping):
        raise InvalidEvent("event", "must be a JSON object")
    for key in event:
        if key not in ("setup", "dataset", "force", "val_fraction", "seed"):
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
    val_fraction = event.get("val_fraction", 0.1)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise InvalidEvent("val_fraction", "must be a number")
    if not (math.isfinite(val_fraction) and 0 <= val_fraction < 1):
        raise InvalidEvent("val_fraction", "must be in [0, 1)")
    seed = event.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidEvent("seed", "must be a non-negative integer")
    return SetupEvent(dataset=dataset, force=force, val_fraction=float(val_fraction), seed=seed)


def lambda_architecture(machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    if machine not in _ARCH:
        raise ConfigError(f"unsupported machine {machine!r}; expected one of {sorted(_ARCH)}")
    return _ARCH[machine]


def setup(runtime: Runtime, event: Mapping[str, Any], *, runner: deps.Runner = subprocess.run,
          s3=None) -> Outcome:
    """Install the packages, then prepare the dataset; each step is skipped when already done.

    ``runner`` runs pip (``subprocess.run``) and ``s3`` is a boto3 S3 client; tests pass fakes.
    """
    ev = parse_setup(event)
    settings = runtime.settings
    if not settings.bucket:
        raise ConfigError(f"environment variable {ENV_BUCKET} is not set (the bucket holding the dataset)")
    arch = lambda_architecture()
    requirements = deps.LAMBDA_REQUIREMENTS[arch]
    installed = deps.install_packages(settings.packages, requirements, arch=arch, runner=runner)
    deps.add_packages_to_path(settings)
    counts = _prepare(runtime, ev, s3)
    logger.info("setup done", extra={"installed": installed, "requirements": list(requirements), **counts})
    return Outcome("ready", detail={"packages": str(settings.packages), "data": str(settings.data),
                                    "installed": installed, **counts})


def _prepare(runtime: Runtime, ev: SetupEvent, s3) -> dict[str, Any]:
    from lambdatrain.training import data  # imports numpy and torch: only now are they on the path

    dest = runtime.settings.data
    skip = not ev.force and data.is_prepared(dest)
    if not skip:
        with _downloaded(runtime.settings.bucket, ev.dataset, runtime.settings.mount / "tmp", s3) as archive:
            data.prepare_dataset(archive, dest, val_fraction=ev.val_fraction, seed=ev.seed)
    opened = data.open_prepared(dest)
    return {"train": int(len(opened.train_y)), "val": int(len(opened.val_y)), "prepared": not skip}


@contextmanager
def _downloaded(bucket: str, key: str, scratch: Path, s3) -> Iterator[Path]:
    """The object fetched into a private folder under ``scratch``, removed on exit.

    The folder is on the mount, not in /tmp: the archive may exceed the function's ephemeral storage.
    """
    s3 = s3 or boto3.client("s3")
    folder = scratch / f"setup-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    path = folder / Path(key).name  # keeps the suffix, which names the format
    try:
        try:
            s3.download_file(bucket, key, str(path))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in _MISSING:
                raise
            uri = f"s3://{bucket}/{key}"
            raise DataError(f"dataset archive {uri} not found; upload it (aws s3 cp cifar-10-python.tar.gz "
                            f"{uri}) and send the setup event again") from exc
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with suppress(OSError):
            scratch.rmdir()  # only if no other setup is using it
