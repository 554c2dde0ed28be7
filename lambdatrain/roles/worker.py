"""The worker: train on this worker's shard for one round, write the result to EFS, record it.

Order matters for safety: the file is written atomically (with its digest) *before* the ledger
records it, so a recorded result always has its bytes on EFS; a worker that dies between the two
leaves a file nobody counts, and its re-drive rewrites the same bytes and records them.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from lambdatrain.storage import efs as efs
from lambdatrain.ledger import schema
from lambdatrain.training import trainer
from lambdatrain.training.codec import encode
from lambdatrain.training.flat import iter_slices
from lambdatrain.training.step import learning_rate
from lambdatrain.protocol.errors import AlreadyDone, InvalidEvent, StaleRound
from lambdatrain.ledger.items import RUNNING, ResultRecord
from lambdatrain.logs import bind, logger
from lambdatrain.protocol.events import Outcome, parse_work
from lambdatrain.roles.runtime import Runtime


def work(runtime: Runtime, event: Mapping[str, Any], time_left=lambda: float("inf")) -> Outcome:
    ev = parse_work(event)
    bind(run=ev.run, round=ev.round, worker=ev.workerno)
    record = runtime.ledger.get_run(ev.run)
    if ev.workers != record.workers:
        raise InvalidEvent("workers", f"run {ev.run} has {record.workers} workers, not {ev.workers}")
    if record.round != ev.round:
        raise StaleRound(f"round {ev.round} is not the current round ({record.round}) of run {ev.run}")
    if record.state != RUNNING:
        return Outcome("skipped", run=ev.run, round=ev.round, detail={"reason": f"run is {record.state}"})
    current = runtime.ledger.get_round(ev.run, ev.round)
    if current is None or current.status != schema.OPEN or ev.workerno in current.reported:
        return Outcome("duplicate", run=ev.run, round=ev.round, detail={"worker": ev.workerno})

    t0 = time.perf_counter()
    config = record.config
    paths = efs.RunLayout(runtime.settings.mount, ev.run)
    data = trainer.dataset(str(runtime.data_root(config)))
    model, layout = trainer.model_for(config, len(data.classes))
    weights = efs.read_array(paths.weights(ev.round), record.weights)
    indices = trainer.round_indices(config, trainer.train_size(config, data), ev.workerno, ev.round,
                                    record.rounds_per_epoch)
    load_s = time.perf_counter() - t0
    if config.mode == "sync":  # the combiner takes the step
        result = trainer.compute_sync(config, data, model, layout, weights, indices, round_no=ev.round,
                                      worker=ev.workerno, time_left=time_left)
    else:  # local steps at the round's scheduled rate
        result = trainer.compute_average(config, data, model, layout, weights, indices, round_no=ev.round,
                                         worker=ev.workerno, time_left=time_left,
                                         lr=learning_rate(config, ev.round, record.rounds_per_epoch))

    runtime.faults.point("before_write")
    t1 = time.perf_counter()
    encoded = encode(result.vector, config.transport)
    digest = efs.write_array(paths.result(ev.round, ev.workerno), encoded, checksum=config.checksum)
    write_s = time.perf_counter() - t1
    runtime.faults.point("after_write")
    started_at = runtime.clock() - (time.perf_counter() - t0)
    # Each share of a sharded combine verifies just the slice it reads.
    ranges = (efs.range_digests(encoded, list(iter_slices(encoded.size, config.combine_shards)), config.checksum)
              if config.combine_shards > 1 else [])
    recorded = ResultRecord(worker=ev.workerno, digest=digest, samples=result.samples, loss_sum=result.loss_sum,
                            correct=result.correct, truncated=result.truncated, load_s=load_s,
                            compute_s=result.compute_s, write_s=write_s,
                            started_at=started_at, range_checksums=tuple(ranges))
    try:
        completed = runtime.ledger.record_result(ev.run, ev.round, recorded)
    except AlreadyDone:
        return Outcome("duplicate", run=ev.run, round=ev.round, detail={"worker": ev.workerno})
    runtime.faults.point("after_record")
    logger.info("result recorded", extra={**recorded.stats(), "completed_round": completed, "bytes": digest.bytes})
    return Outcome("recorded", run=ev.run, round=ev.round,
                   detail={"worker": ev.workerno, "samples": result.samples, "completed_round": completed})
