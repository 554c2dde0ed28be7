"""Environment variable names, and the one reader of ``os.environ`` in the runtime.

The Pulumi program sets these variables on every function (``components/functions.py`` imports the
names from here) and the local stack sets the very same ones on the processes it starts, so the
handlers never ask whether they run on AWS or on one machine. Endpoints come from boto3's standard
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` variables, which boto3 honours by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from lambdatrain.protocol.endpoints import is_loopback
from lambdatrain.protocol.errors import ConfigError

# --- names shared by the infrastructure and the runtime -------------------------------------
ENV_TABLE = "LAMBDATRAIN_TABLE"  # DynamoDB ledger table name
ENV_MOUNT = "LAMBDATRAIN_MOUNT"  # where the EFS access point is mounted (Lambda: /mnt/lambdatrain)
ENV_BUCKET = "LAMBDATRAIN_BUCKET"  # S3 bucket for dataset archives, start files and exports
ENV_STARTER = "LAMBDATRAIN_STARTER_FUNCTION"  # function names, as given to lambda:Invoke
ENV_WORKER = "LAMBDATRAIN_WORKER_FUNCTION"
ENV_COMBINER = "LAMBDATRAIN_COMBINER_FUNCTION"
ENV_DATA = "LAMBDATRAIN_DATA"  # prepared dataset folder, relative to the mount unless absolute
ENV_PACKAGES = "LAMBDATRAIN_PACKAGES"  # folder on the mount that holds torch & co (see setup)
ENV_FAULTS = "LAMBDATRAIN_FAULTS"  # fault injection spec; honoured on loopback endpoints only
ENV_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
# The combiner's reserved concurrency, set on the starter only where the stack reserves one: a run
# may not ask for more combine shards than can run at once (throttled shares outlive their lease).
ENV_COMBINER_CONCURRENCY = "LAMBDATRAIN_COMBINER_CONCURRENCY"
# Setup's package source (lambdatrain/roles/packages.py): a mirror's index URL and a hashed lock of
# one's own, e.g. the local stack's tests; unset, setup installs lambdatrain/roles/pins.py's.
ENV_PACKAGES_INDEX = "LAMBDATRAIN_PACKAGES_INDEX"
ENV_PACKAGES_LOCK = "LAMBDATRAIN_PACKAGES_LOCK"

# The logical function names; deployed names are prefixed by the stack (see components/functions.py).
STARTER = "starter"
WORKER = "worker"
COMBINER = "combiner"
FUNCTIONS = (STARTER, WORKER, COMBINER)

DEFAULT_MOUNT = "/mnt/lambdatrain"
DEFAULT_DATA = "datasets/cifar10"
DEFAULT_PACKAGES = "python"

# The bucket's key prefixes, shared by the IAM grants (components/iam.py) and the code that reads
# or writes the keys, so a grant cannot drift from what the code does.
START_PREFIX, START_SUFFIX = "start/", ".json"  # s3://<bucket>/start/<run>.json triggers the starter
DATASET_PREFIX = "datasets/"  # dataset archives: besides start files, all the starter may read
EXPORT_PREFIX = "exports/"  # `lambdatrain export --s3` writes <prefix><run>/
STATE_PREFIX = "state/"  # a compressed run's state between rounds, <prefix><run>/<owner>/rNNNNNN.npy (storage/state.py)
# The bucket's lifecycle rule on STATE_PREFIX (components/storage.py), which the planner also prices
# (lambdatrain/planning/prices.py). The combiner deletes the old state after each committed
# round; one that crashed first leaves it behind, so it expires after STATE_EXPIRY_DAYS (a live
# run reads only the round before's, and a stopped one's are kept, below). The bucket
# is versioned: the combiner deletes every version by its id (storage/state.py), and a version
# hidden any other way (a delete without its id) goes STATE_NONCURRENT_DAYS later.
STATE_EXPIRY_DAYS = 14
STATE_NONCURRENT_DAYS = 1
# The rule expires only objects tagged STATE_TAG = STATE_EXPIRING, which every PUT there sets.
# A run that stops or fails keeps what it would resume from: the watchdog re-tags those objects
# STATE_KEPT (roles/recovery.py ``keep_state``), so a run stopped for longer still resumes
# bit-identically; the combiner deletes them by version once the resumed run is past them.
STATE_TAG, STATE_EXPIRING, STATE_KEPT = "lambdatrain-state", "round", "kept"


@dataclass(frozen=True)
class RuntimeSettings:
    """What a handler needs to know about the world it runs in."""

    table: str
    mount: Path
    bucket: str | None
    functions: Mapping[str, str]  # logical name -> deployed name
    data: Path
    packages: Path  # folder of third-party packages (torch & co) on the mount
    faults: str | None
    combiner_concurrency: int | None = None  # the combiner's reserved concurrency; None: not reserved
    packages_index: str | None = None  # index URL for packages_lock; None: the shipped pins' indexes
    packages_lock: Path | None = None  # a hashed requirements file installed instead of the shipped pins


def _loopback_endpoint(env: Mapping[str, str]) -> bool:
    urls = [v for k, v in env.items() if k.startswith("AWS_ENDPOINT_URL") and v]
    return bool(urls) and all(is_loopback(u) for u in urls)


def _below(mount: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else mount / path


def load(env: Mapping[str, str] | None = None) -> RuntimeSettings:
    """Read the runtime settings from the environment (``os.environ`` by default)."""
    env = os.environ if env is None else env
    table = env.get(ENV_TABLE)
    if not table:
        raise ConfigError(f"environment variable {ENV_TABLE} is not set (the ledger table name)")
    mount = Path(env.get(ENV_MOUNT, DEFAULT_MOUNT))
    faults = env.get(ENV_FAULTS) or None
    if faults and not _loopback_endpoint(env):
        # Fault injection must never fire on a real deployment: it is honoured only when every
        # AWS endpoint is on this machine, which is the local stack's signature.
        raise ConfigError(f"{ENV_FAULTS} is set but the AWS endpoints are not local; refusing to run")
    return RuntimeSettings(
        table=table,
        mount=mount,
        bucket=env.get(ENV_BUCKET) or None,
        functions={
            STARTER: env.get(ENV_STARTER, STARTER),
            WORKER: env.get(ENV_WORKER, WORKER),
            COMBINER: env.get(ENV_COMBINER, COMBINER),
        },
        data=_below(mount, env.get(ENV_DATA, DEFAULT_DATA)),
        packages=_below(mount, env.get(ENV_PACKAGES, DEFAULT_PACKAGES)),
        faults=faults,
        combiner_concurrency=_positive(env, ENV_COMBINER_CONCURRENCY),
        packages_index=env.get(ENV_PACKAGES_INDEX) or None,
        packages_lock=Path(env[ENV_PACKAGES_LOCK]) if env.get(ENV_PACKAGES_LOCK) else None,
    )


def _positive(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"environment variable {name} must be a positive integer, got {raw!r}")
    return int(raw)
