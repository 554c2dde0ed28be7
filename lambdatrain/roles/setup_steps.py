"""Setup's steps and its sweep: each step resumable (skipped when already done) and idempotent.

``lambdatrain.roles.setup`` runs them under the single-flight lock, so nothing here races another
setup. Each step is sized to end well inside Lambda's 900 s limit on its own (the estimates are in
``BUDGET_S``); a setup killed mid-step leaves only staging, which :func:`sweep` removes at the next
start, and the step runs again from the beginning.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import boto3
from botocore.exceptions import ClientError

from lambdatrain.protocol.errors import DataError
from lambdatrain.roles import packages as deps

if TYPE_CHECKING:
    from lambdatrain.roles.runtime import Runtime

# Seconds each step may need at most; setup refuses to start a step with less time left (so a step
# is never cut off by the timeout half-way), and both together fit in the starter's 900 s.
# - packages: about 400 MB of wheels (torch's CPU build is most of it) downloaded from the indexes
#   at a few tens of MB/s (seconds to tens of seconds), then pip writes ~15,000 files (~1.3 GB
#   unpacked) to EFS. EFS writes are latency-bound per file (a few ms per operation; "Amazon EFS
#   performance" in the EFS user guide), so ~15,000 files x ~5 operations x ~3 ms is ~4 minutes.
# - dataset: the CIFAR-10 archive (163 MB) from S3 in seconds; decoding and writing the four arrays
#   takes about 36 s on a development machine (issue 13), a few times that on one Lambda vCPU.
BUDGET_S = {"packages": 540.0, "dataset": 240.0}
# pip's TMPDIR, below the function's /tmp. pip --target unpacks everything there before moving it
# into the staging folder, so /tmp must hold the unpacked packages: the starter's 2048 MB
# (starterEphemeralStorage in components/config.py and docs/deploy.md) against ~1.3 GB.
SCRATCH = "lambdatrain-setup"
# S3 answers 403 rather than 404 for a missing key when the caller may not list the bucket, and
# the starter's role may not (it reads only start/ and datasets/ objects).
_MISSING = {"404", "NoSuchKey", "403", "AccessDenied", "Forbidden"}


def pip_scratch() -> Path:
    """pip's temporary folder: ours alone below /tmp, so the sweep touches nothing else.

    /tmp is kept across the invocations of one execution environment ("Understanding the Lambda
    execution environment", AWS Lambda operator guide), so what a killed pip left there can still
    be there for the next setup that lands in the same environment.
    """
    return Path(tempfile.gettempdir()) / SCRATCH


def downloads(runtime: Runtime) -> Path:
    """The dataset archive's scratch folder on the mount (the archive may exceed /tmp)."""
    return runtime.settings.mount / "tmp"


def sweep(runtime: Runtime) -> list[str]:
    """Remove every staging folder a killed setup left; the names removed (setup holds the lock)."""
    settings = runtime.settings
    removed = deps.sweep(settings.packages)
    data = settings.data
    stale = [*downloads(runtime).glob("setup-*")]
    if data.parent.is_dir():  # prepare_dataset's staging and old folders (training/data.py)
        stale += [*data.parent.glob(f".{data.name}.*.tmp"), *data.parent.glob(f".{data.name}.*.old")]
    if pip_scratch().exists():
        stale.append(pip_scratch())
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    with suppress(OSError):
        downloads(runtime).rmdir()  # only if empty
    return removed + sorted(p.name for p in stale)


def install(runtime: Runtime, locks: tuple[deps.Lock, ...], arch: str, runner: deps.Runner) -> dict[str, Any]:
    """Step ``packages``: the locks installed into the mount's package folder, unless already there."""
    scratch = pip_scratch()
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        done = deps.install_packages(runtime.settings.packages, locks, arch=arch, runner=runner, scratch=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"installed": done, "versions": versions(locks)}


def versions(locks: tuple[deps.Lock, ...]) -> list[str]:
    """``name==version`` of every pinned package, hashes and comments dropped."""
    return [line.split()[0] for lock in locks for line in lock.lines]


def prepare(runtime: Runtime, key: str, *, force: bool, val_fraction: float, seed: int, s3) -> dict[str, Any]:
    """Step ``dataset``: the archive ``key`` decoded into the mount's data folder, unless already there."""
    from lambdatrain.training import data  # imports numpy and torch: only now are they on the path

    dest = runtime.settings.data
    skip = not force and data.is_prepared(dest)
    if not skip:
        with _downloaded(runtime.settings.bucket, key, downloads(runtime), s3) as archive:
            data.prepare_dataset(archive, dest, val_fraction=val_fraction, seed=seed)
    opened = data.open_prepared(dest)
    return {"train": int(len(opened.train_y)), "val": int(len(opened.val_y)), "prepared": not skip}


@contextmanager
def _downloaded(bucket: str, key: str, scratch: Path, s3) -> Iterator[Path]:
    """The object fetched into a private folder under ``scratch``, removed on exit."""
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
            scratch.rmdir()  # only if empty
