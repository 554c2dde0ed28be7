"""The sharded combine: S combiner invocations share one round, each reducing one slice.

The paper's combine stops scaling past about 17 workers because one combiner reads all N files.
Here the combiner that claims a ready round invokes S shares (``{"combine": true, ..., "shard": s,
"claim": token}``); share s reads only elements [lo_s, hi_s) of every worker file (verified by
the slice digests the workers recorded) and of the weights and momentum (verified by the slice digests
recorded beside them when they were written: claimed.py; a compressed run's momentum and residual
are per-slice objects in the bucket, storage/state.py), steps the optimizer on that slice, and
writes its slice of the new weights. Each share records itself in the round's
``shards_done`` set under the claim; the share that completes the set assembles the slices and
publishes the round exactly as an unsharded combine does. Everything is elementwise, so the result
is bit-identical to S = 1.

A share that dies leaves the set incomplete; the claim's lease runs out, the watchdog re-drives
the combine, and the new claim (which clears ``shards_done``) invokes all S shares again.
"""

from __future__ import annotations

import time

import numpy as np

from lambdatrain.storage import efs as efs
from lambdatrain.protocol.errors import ClaimLost, CorruptFile, InvalidEvent
from lambdatrain.ledger.items import RunRecord
from lambdatrain.logs import logger
from lambdatrain.protocol.config import COMPRESSED
from lambdatrain.roles.claimed import Stepped, publish, reduce_slice, reopen, store_state
from lambdatrain.protocol.events import CombineEvent, Outcome
from lambdatrain.roles.runtime import Runtime, invoke_all
from lambdatrain.roles.settings import COMBINER


def fan_out_shares(runtime: Runtime, ev: CombineEvent, record: RunRecord, token: str) -> Outcome:
    shards = record.config.combine_shards
    # Concurrently, as the workers are; a share left uninvoked is a share that died (see above).
    invoke_all(runtime.invoker, COMBINER, [CombineEvent(run=ev.run, round=ev.round, workers=record.workers,
                                                        epochsdone=record.epoch, shard=s, claim=token).to_event()
                                           for s in range(shards)])
    return Outcome("sharded", run=ev.run, round=ev.round, detail={"shards": shards})


def combine_share(runtime: Runtime, ev: CombineEvent, record: RunRecord) -> Outcome:
    if not 0 <= ev.shard < record.config.combine_shards:
        raise InvalidEvent("shard", f"must be below combine_shards ({record.config.combine_shards})")
    claimed = runtime.ledger.get_round(ev.run, ev.round)
    if claimed is None or claimed.claim != ev.claim:
        raise ClaimLost(f"round {ev.round} of run {ev.run} is no longer combined under this claim")
    t0 = time.perf_counter()
    paths = efs.RunLayout(runtime.settings.mount, ev.run)
    results = runtime.ledger.results(ev.run, ev.round)
    try:
        stepped = reduce_slice(runtime, record, ev.round, paths, results, shard=ev.shard)
    except CorruptFile as exc:
        return reopen(runtime, record, ev, ev.claim, exc)
    checksum = record.config.checksum
    if record.config.transport in COMPRESSED:  # its slices of the momentum and residual: in the bucket, final
        store_state(runtime, record, ev.round, ev.shard, stepped)
        efs.write_array(paths.shard_update(ev.round, ev.shard), stepped.update, checksum=checksum)
    elif stepped.momentum is not None:
        efs.write_array(paths.shard_optim(ev.round, ev.shard), stepped.momentum, checksum=checksum)
    efs.write_array(paths.shard(ev.round, ev.shard), stepped.weights, checksum=checksum)
    logger.info("share combined", extra={"shard": ev.shard, "seconds": time.perf_counter() - t0})
    if not runtime.ledger.claims.shard_done(ev.run, ev.round, ev.shard, ev.claim, record.config.combine_shards):
        return Outcome("share", run=ev.run, round=ev.round, detail={"shard": ev.shard})
    stepped = _assemble(paths, ev.round, record.config.combine_shards)
    return publish(runtime, ev, record, ev.claim, claimed, results, stepped, t0)


def _assemble(paths: efs.RunLayout, round_no: int, shards: int) -> Stepped:
    """The S slices, verified by their digests, as the new weights and momentum (a float
    transport's) or update (a compressed one's, whose momentum and residual stay in the bucket as
    the shares stored them): their slices laid end to end are the whole's."""
    def joined(path_of) -> np.ndarray | None:
        found = [path_of(s) for s in range(shards) if path_of(s).exists()]
        return np.concatenate([efs.read_array(p) for p in found]) if found else None

    return Stepped(joined(lambda s: paths.shard(round_no, s)), joined(lambda s: paths.shard_optim(round_no, s)),
                   update=joined(lambda s: paths.shard_update(round_no, s)))
