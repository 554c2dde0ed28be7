"""The combiner: claim a ready round, sum the N results, step the optimizer, decide, fan out again.

Each step is idempotent, so a combiner that dies anywhere is simply redone by the next claim (the
watchdog re-drives a claim whose lease ran out): the new weights are a deterministic function of
the round's inputs, rewriting them yields the same bytes, and only the ledger's conditional commit
publishes them, once.

When the last round commits, the combiner writes the run's model to the stack's bucket under
``exports/<run>/`` (``training.checkpoint.export_files``), so it can be fetched without the EFS
mount. It is built from what the commit published (the final weights' digest, the METRIC items),
so every delivery writes the same bytes: a finish delivered again (Lambda retries an invocation
that died between the commit and the upload, the stream a batch) writes the same objects again.
"""

from __future__ import annotations

import time
import uuid

import boto3

from lambdatrain.storage import efs as efs
from lambdatrain.protocol.errors import ClaimLost, CorruptFile, StaleRound
from lambdatrain.ledger.items import DONE, RoundRecord, RunRecord
from lambdatrain.logs import bind, logger
from lambdatrain.protocol.events import CombineEvent, Outcome
from lambdatrain.roles import sharding
from lambdatrain.roles.claimed import publish, reduce_slice, reopen
from lambdatrain.roles.runtime import Runtime
from lambdatrain.roles.settings import EXPORT_PREFIX
from lambdatrain.training import checkpoint


def export_key(run: str, name: str) -> str:
    """The S3 key of one file of a run's export."""
    return f"{EXPORT_PREFIX}{run}/{name}"


def upload_export(s3, bucket: str, run: str, files: dict[str, bytes]) -> list[str]:
    """Put a run's export files under ``exports/<run>/`` (the combiner's and ``export --s3``'s one way)."""
    for name, body in files.items():
        # S3 never stores a partial object, and the last of several writes of a key wins (PutObject,
        # https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html): a finish delivered
        # twice, even at once, leaves whole files of the same bytes.
        s3.put_object(Bucket=bucket, Key=export_key(run, name), Body=body)
    return [export_key(run, name) for name in files]


def export_model(runtime: Runtime, run: str) -> list[str]:
    """Write a finished run's model to ``s3://<bucket>/exports/<run>/``; the keys written (none without a bucket)."""
    if runtime.settings.bucket is None:
        return []
    record = runtime.ledger.get_run(run)
    files = checkpoint.export_files(checkpoint.final_model(runtime.settings.mount, run, record.round, record.weights,
                                                           runtime.ledger.metrics(run)))
    keys = upload_export(boto3.client("s3"), runtime.settings.bucket, run, files)
    logger.info("model exported", extra={"bucket": runtime.settings.bucket, "keys": keys})
    return keys


def combine(runtime: Runtime, ev: CombineEvent) -> Outcome:
    outcome = _combine(runtime, ev)
    if outcome.status == "finished":
        export_model(runtime, ev.run)
    return outcome


def _combine(runtime: Runtime, ev: CombineEvent) -> Outcome:
    bind(run=ev.run, round=ev.round)
    record = runtime.ledger.check_current(ev.run, ev.round)
    if ev.claim is not None:
        return sharding.combine_share(runtime, ev, record)
    token = uuid.uuid4().hex
    # The lease is the round deadline: a combiner silent for that long is presumed dead.
    claimed = runtime.ledger.claims.claim(ev.run, ev.round, token, record.config.round_deadline_s)
    runtime.faults.point("after_claim")
    if record.config.combine_shards > 1:
        return sharding.fan_out_shares(runtime, ev, record, token)
    try:
        return _combine_claimed(runtime, ev, record, token, claimed)
    except Exception:
        # An error (not a crash) gives the claim back, so the retried delivery can combine now
        # instead of waiting out the lease; a crashed process cannot, and the lease covers it.
        runtime.ledger.claims.release(ev.run, ev.round, token)
        raise


def _combine_claimed(runtime: Runtime, ev: CombineEvent, record: RunRecord, token: str,
                     claimed: RoundRecord) -> Outcome:
    t0 = time.perf_counter()
    paths = efs.RunLayout(runtime.settings.mount, ev.run)
    results = runtime.ledger.results(ev.run, ev.round)
    try:
        stepped = reduce_slice(runtime, record, ev.round, paths, results)
    except CorruptFile as exc:
        return reopen(runtime, record, ev, token, exc)
    return publish(runtime, ev, record, token, claimed, results, stepped, t0)


def claim_or_skip(runtime: Runtime, ev: CombineEvent) -> Outcome:
    """combine(), with a lost race or a stale round answered as a no-op (duplicate deliveries)."""
    try:
        return combine(runtime, ev)
    except ClaimLost as exc:
        return Outcome("skipped", run=ev.run, round=ev.round, detail={"reason": str(exc)})
    except StaleRound as exc:
        record = runtime.ledger.get_run(ev.run)
        if record.state == DONE and record.round == ev.round + 1:  # the last round's finish, delivered again
            export_model(runtime, ev.run)
        return Outcome("stale", run=ev.run, round=ev.round, detail={"reason": str(exc)})
