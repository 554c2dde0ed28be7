"""The starter: validate a start event, create the run, write round 0's weights, fan out N workers.

Also serves ``stop``/``resume`` (recovery.py) and S3 start files (the paper's S3-started training):
an object ``start/<name>.json`` in the stack's bucket holds a start event, and ``<name>`` becomes
the run id, so a re-delivered notification cannot start a second run.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote_plus

from lambdatrain.storage import efs as efs
from lambdatrain.roles import recovery
from lambdatrain.protocol.errors import AlreadyDone, DataError, InvalidEvent
from lambdatrain.logs import bind, logger
from lambdatrain.protocol.config import COMPRESSED, RunConfig, parse_config
from lambdatrain.protocol.events import Outcome, check_run_id
from lambdatrain.roles.runtime import Runtime
from lambdatrain.roles.settings import ENV_BUCKET
from lambdatrain.training import feedback, trainer


def _run_id(event: Mapping[str, Any], request_id: str | None) -> str:
    if "run" in event:
        return check_run_id(event["run"])
    # Lambda keeps the request id across retries of one asynchronous event, so a retried start
    # maps to the same run id and the ledger's conditional create turns it into a no-op.
    seed = request_id or uuid.uuid4().hex
    return "run-" + hashlib.sha256(seed.encode()).hexdigest()[:12]


def start(runtime: Runtime, event: Mapping[str, Any], request_id: str | None = None) -> Outcome:
    """Validate everything first, then write: bad input leaves EFS and the table untouched."""
    if not isinstance(event, Mapping):
        raise InvalidEvent("event", "must be a JSON object")
    run = _run_id(event, request_id)
    config = parse_config({k: v for k, v in event.items() if k != "run"})
    limit = runtime.settings.combiner_concurrency
    if limit is not None and config.combine_shards > limit:
        raise InvalidEvent("combine_shards", f"must be at most the combiner's reserved concurrency ({limit}), "
                                             f"got {config.combine_shards}")
    if config.transport in COMPRESSED and runtime.settings.bucket is None:
        raise InvalidEvent("transport", f"{config.transport} keeps each worker's residual in the stack's bucket, "
                                        f"and this stack has none ({ENV_BUCKET} is not set)")
    bind(run=run)
    try:
        data = trainer.dataset(str(runtime.data_root(config)))
    except DataError as exc:
        raise InvalidEvent("data", str(exc)) from exc
    per_epoch = trainer.rounds_per_epoch(config, trainer.train_size(config, data))
    runtime.faults.point("after_data")
    runs = runtime.ledger
    if runs.find_run(run) is not None:
        return _duplicate(runtime, run, config, per_epoch, reason="duplicate start")
    # A start re-sent with this run id (the starter's process died, a client retried) before the
    # run exists repeats the writes below: the same settings and, initial weights being seeded,
    # the same weights; only config.json's created_at moves.
    paths = efs.RunLayout(runtime.settings.mount, run)
    if paths.config.exists():  # an earlier start wrote it but made no run: only the same settings go on
        _same_settings(run, RunConfig(**efs.read_json(paths.config)["config"]), config)
    weights, flat = trainer.initial_weights(config, len(data.classes))
    efs.write_json(paths.config, {"run": run, "config": config.to_dict(), "rounds_per_epoch": per_epoch,
                                  "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
                                  "n_params": flat.n_params, "created_at": runtime.clock()})
    runtime.faults.point("after_config")
    # Sharded, with the shares' slices' checksums, so that round 0's shares too read only their slice.
    slices = feedback.state_ranges(config.transport, flat.n_params, weights.size, config.combine_shards)
    digest = efs.write_array(paths.weights(0), weights, checksum=config.checksum, ranges=slices)
    runtime.faults.point("after_weights")
    try:
        runs.create_run(run, config, per_epoch, digest, n_params=flat.n_params, num_classes=len(data.classes))
    except AlreadyDone:
        return _duplicate(runtime, run, config, per_epoch, reason="concurrent duplicate start")
    runtime.faults.point("after_create")
    recovery.fan_out(runtime, run, 0)
    runtime.faults.point("after_fan_out")
    logger.info("run started", extra={"workers": config.workers, "rounds_per_epoch": per_epoch})
    return Outcome("started", run=run, round=0, detail={"workers": config.workers, "rounds_per_epoch": per_epoch})


def _duplicate(runtime: Runtime, run: str, config: RunConfig, per_epoch: int, *, reason: str) -> Outcome:
    """A start for a run that exists: the same settings re-drive it and answer as the first start
    did (a retry is a no-op); other settings are a different run under a taken id, refused."""
    _same_settings(run, runtime.ledger.get_run(run).config, config)
    outcome = recovery.redrive(runtime, run, reason=reason)
    outcome.detail.update(workers=config.workers, rounds_per_epoch=per_epoch)
    return outcome


def _same_settings(run: str, existing: RunConfig, config: RunConfig) -> None:
    """Refuse a start that reuses a run id with other settings, before it writes anything.

    A concurrent start with other settings can still pass the check before the first one writes;
    the ledger's conditional create then refuses it (``_duplicate``), after its EFS writes.
    """
    if existing != config:
        theirs, ours = existing.to_dict(), config.to_dict()
        differ = ", ".join(f"{k} {ours[k]!r}, not {theirs[k]!r}" for k in ours if ours[k] != theirs[k])
        raise InvalidEvent("run", f"run {run} exists with other settings ({differ}): choose a new run id")


def s3_records(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The records of an S3 notification, each checked for the fields a start file needs."""
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        raise InvalidEvent("Records", "must be a non-empty list of S3 notification records")
    for record in records:
        s3 = record.get("s3") if isinstance(record, dict) else None
        if (not isinstance(record, dict) or record.get("eventSource") != "aws:s3" or not isinstance(s3, dict)
                or not isinstance((s3.get("object") or {}).get("key"), str)
                or not isinstance((s3.get("bucket") or {}).get("name"), str)):
            raise InvalidEvent("Records", "must hold S3 records with s3.bucket.name and s3.object.key")
    return records


def start_from_s3(runtime: Runtime, record: Mapping[str, Any], read_object) -> Outcome:
    """A start file uploaded under ``start/``: its JSON body is the start event."""
    # Keys arrive URL-encoded ("run 1.json" as "run+1.json"): docs.aws.amazon.com/AmazonS3/latest/
    # userguide/notification-content-structure.html.
    key = unquote_plus(record["s3"]["object"]["key"])
    name = Path(key).stem
    try:
        body = json.loads(read_object(record["s3"]["bucket"]["name"], key))
    except ValueError as exc:
        raise InvalidEvent("start file", f"{key} is not JSON") from exc
    if not isinstance(body, dict):
        raise InvalidEvent("start file", "must hold a JSON object")
    return start(runtime, {**body, "run": check_run_id(name, "start file name")})
