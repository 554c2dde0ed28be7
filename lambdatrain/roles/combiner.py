"""The combiner: claim a ready round, sum the N results, step the optimizer, decide, fan out again.

Each step is idempotent, so a combiner that dies anywhere is simply redone by the next claim (the
watchdog re-drives a claim whose lease ran out): the new weights are a deterministic function of
the round's inputs, rewriting them yields the same bytes, and only the ledger's conditional commit
publishes them, once.
"""

from __future__ import annotations

import time
import uuid

from lambdatrain.storage import efs as efs
from lambdatrain.protocol.errors import ClaimLost, CorruptFile, StaleRound
from lambdatrain.ledger.items import RoundRecord, RunRecord
from lambdatrain.logs import bind
from lambdatrain.protocol.events import CombineEvent, Outcome
from lambdatrain.roles import sharding
from lambdatrain.roles.claimed import publish, reduce_slice, reopen
from lambdatrain.roles.runtime import Runtime


def combine(runtime: Runtime, ev: CombineEvent) -> Outcome:
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
        new, momentum = reduce_slice(runtime, record, ev.round, paths, results)
    except CorruptFile as exc:
        return reopen(runtime, record, ev, token, exc)
    return publish(runtime, ev, record, token, claimed, results, new, momentum, t0)


def claim_or_skip(runtime: Runtime, ev: CombineEvent) -> Outcome:
    """combine(), with a lost race or a stale round answered as a no-op (duplicate deliveries)."""
    try:
        return combine(runtime, ev)
    except ClaimLost as exc:
        return Outcome("skipped", run=ev.run, round=ev.round, detail={"reason": str(exc)})
    except StaleRound as exc:
        return Outcome("stale", run=ev.run, round=ev.round, detail={"reason": str(exc)})
