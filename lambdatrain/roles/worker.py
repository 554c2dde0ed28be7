"""The worker: train on this worker's shard for one round, write the result to EFS, record it.

Order matters for safety: the file is written atomically (with its digest) *before* the ledger
records it, so a recorded result always has its bytes on EFS; a worker that dies between the two
leaves a file nobody counts, and its re-drive rewrites the same bytes and records them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lambdatrain.storage import efs as efs
from lambdatrain.storage.digest import algorithm_of
from lambdatrain.storage.state import MissingState
from lambdatrain.training import feedback
from lambdatrain.protocol.config import COMPRESSED
from lambdatrain.ledger import schema
from lambdatrain.training import trainer
from lambdatrain.training.codec import encode
from lambdatrain.training.step import learning_rate
from lambdatrain.protocol.errors import AlreadyDone, InvalidEvent, StaleRound
from lambdatrain.ledger.items import RUNNING, ResultRecord, RunRecord
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
        if current is not None and current.status == schema.OPEN and not current.missing:
            _mark_ready(runtime, ev.run, ev.round, record.workers)  # its completer died before this write
        return Outcome("duplicate", run=ev.run, round=ev.round, detail={"worker": ev.workerno})

    t0 = time.perf_counter()
    config = record.config
    paths = efs.RunLayout(runtime.settings.mount, ev.run)
    data = trainer.dataset(str(runtime.data_root(config)))
    model, layout = trainer.model_for(config, len(data.classes))
    codec = COMPRESSED.get(config.transport)
    # The residual's GET runs beside loading and compute (state.py); only its answer waits.
    residual = runtime.state_store.prefetch(ev.run, ev.workerno, ev.round, record.n_params) if codec else None
    weights = _round_weights(runtime, paths, record, ev.round, codec) if codec else efs.read_array(
        paths.weights(ev.round), record.weights)
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
    if codec:
        # In: the residual this worker starts the round with; out: the next round's, stored before
        # the result is written, so a recorded result always has its successor's residual (state.py).
        encoded, residual = feedback.pack(result.vector, record.n_params, codec, residual.result())
        runtime.state_store.put(ev.run, ev.workerno, ev.round + 1, residual)
        runtime.faults.point("after_state")
    else:
        encoded = encode(result.vector, config.transport)
    slices = feedback.shard_slices(config.transport, record.n_params, result.vector.size, config.combine_shards)
    if codec:  # a share reads the bytes of its elements (compressed: not a fixed width per element)
        slices = [feedback.byte_range(lo, hi, record.n_params, result.vector.size, codec) for lo, hi in slices]
    digest = efs.write_array(paths.result(ev.round, ev.workerno), encoded, checksum=config.checksum)
    write_s = time.perf_counter() - t1
    runtime.faults.point("after_write")
    started_at = runtime.clock() - (time.perf_counter() - t0)
    # Each share of a sharded combine verifies just the slice it reads.
    ranges = efs.range_digests(encoded, slices, config.checksum) if config.combine_shards > 1 else []
    recorded = ResultRecord(worker=ev.workerno, digest=digest, samples=result.samples, loss_sum=result.loss_sum,
                            correct=result.correct, truncated=result.truncated, load_s=load_s,
                            compute_s=result.compute_s, write_s=write_s,
                            started_at=started_at, range_checksums=tuple(ranges))
    try:
        full = runtime.ledger.record_result(ev.run, ev.round, recorded)
    except AlreadyDone:
        return Outcome("duplicate", run=ev.run, round=ev.round, detail={"worker": ev.workerno})
    completed = full and _mark_ready(runtime, ev.run, ev.round, record.workers)
    runtime.faults.point("after_record")
    logger.info("result recorded", extra={**recorded.stats(), "completed_round": completed, "bytes": digest.bytes})
    return Outcome("recorded", run=ev.run, round=ev.round,
                   detail={"worker": ev.workerno, "samples": result.samples, "completed_round": completed})


def _mark_ready(runtime: Runtime, run: str, round_no: int, workers: int) -> bool:
    """Move a round that holds all N results to READY (its stream record starts the combine);
    False if another worker, a re-run or the watchdog already did."""
    runtime.faults.point("before_ready")
    return runtime.ledger.mark_ready(run, round_no, workers)


@dataclass
class _Held:
    mount: str
    run: str
    round: int
    checksum: str
    weights: np.ndarray


_held: list[_Held] = []  # the weights this environment last started a round from (one model)


def _round_weights(runtime: Runtime, paths: efs.RunLayout, record: RunRecord, round_no: int,
                   codec: str) -> np.ndarray:
    """Round ``round_no``'s weights, for a compressed transport: the ones this environment holds if
    they are that round's; else the previous round's plus the combiner's compressed update from the
    bucket (feedback.apply_update: the same float32 additions as the combiner's), checked against
    the round's recorded digest; else, cold or lagging, the full weights from EFS."""
    held = next((h for h in _held if h.mount == str(paths.mount) and h.run == paths.run), None)
    weights = None
    if held is not None and held.round == round_no and held.checksum == record.weights.checksum:
        weights = held.weights
    elif held is not None and held.round == round_no - 1:
        try:
            update = runtime.state_store.get_update(paths.run, round_no - 1,
                                                    feedback.update_nbytes(held.weights.size, record.n_params, codec))
            candidate = feedback.apply_update(held.weights, update, record.n_params, codec)
        except (MissingState, ValueError) as exc:  # missing or damaged: the full weights are still there
            logger.warning("update unusable; reading the full weights", extra={"error": str(exc)})
        else:
            if efs.digest_of(candidate, algorithm_of(record.weights.checksum)) == record.weights:
                weights = candidate
            else:
                logger.warning("update does not yield the recorded weights; reading them in full")
    if weights is None:
        weights = efs.read_array(paths.weights(round_no), record.weights)
    _held[:] = [_Held(str(paths.mount), paths.run, round_no, record.weights.checksum, weights)]
    return weights
