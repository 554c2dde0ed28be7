"""A claimed round's steps, shared by the plain combine (combiner.py) and its shares (sharding.py).

Reduce a slice of the N results and step the optimizer on it; assess the round, write the new
weights and commit it; or, when a worker's result is corrupt, reopen the round for that worker.
Each step is idempotent: the new weights are a deterministic function of the round's inputs, and
only the ledger's conditional commit publishes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lambdatrain.storage import efs as efs
from lambdatrain.storage import retention
from lambdatrain.training import trainer
from lambdatrain.training import feedback
from lambdatrain.training.reduce import WorkerFile, compressed_sum, weighted_sum
from lambdatrain.training.step import apply_update, learning_rate, sgd_options
from lambdatrain.protocol.config import COMPRESSED
from lambdatrain.protocol.errors import CorruptFile
from lambdatrain.ledger.items import DONE, ResultRecord, RoundRecord, RunRecord
from lambdatrain.logs import logger
from lambdatrain.training.model import input_size
from lambdatrain.protocol.events import CombineEvent, Outcome
from lambdatrain.roles import warm
from lambdatrain.roles.recovery import fan_out
from lambdatrain.roles.runtime import Runtime


def publish(runtime: Runtime, ev: CombineEvent, record: RunRecord, token: str, claimed: RoundRecord,
            results: list[ResultRecord], stepped: Stepped, t0: float) -> Outcome:
    """Evaluate, decide, write the new weights, commit the round, and start the next one."""
    paths = efs.RunLayout(runtime.settings.mount, ev.run)
    metric, finished, extra = _assess(runtime, record, ev.round, results, stepped.weights)
    metric["sum_s"] = time.perf_counter() - t0
    if finished:
        metric["stop_reason"] = extra["stop_reason"] = finished
    t1 = time.perf_counter()
    digest = _write(runtime, paths, ev.round, stepped, metric, record)
    if record.config.combine_shards == 1:  # whoever commits the round writes these very bytes
        warm.keep(str(paths.mount), ev.run, ev.round + 1, digest, stepped.weights, stepped.momentum, stepped.residual)
    runtime.faults.point("after_write")
    round_s = runtime.clock() - claimed.created_at
    metric.update(write_s=time.perf_counter() - t1, combine_s=time.perf_counter() - t0, round_s=round_s)
    # Waiting: invocation latency, stragglers, the stream's delivery; what is neither work nor sum.
    metric["wait_s"] = max(0.0, round_s - metric["worker_s"] - metric["combine_s"])
    runtime.ledger.claims.commit(ev.run, ev.round, token, weights=digest, epoch=metric["epochs_done"],
                          finished=DONE if finished else None, metric=metric, meta_extra=extra)
    # What killed writers of this round left behind (a glob of three folders, before the next
    # round can write): its folder, and the new weights' and momentum's temporaries.
    efs.remove_temporaries(paths.round_dir(ev.round), paths.weights(ev.round + 1), paths.optim(ev.round + 1))
    runtime.faults.point("after_commit")
    if not finished:
        # The next round starts before pruning: it unlinks about 2N files, each a round trip to
        # EFS, and a sweep of later commits catches up on any this process does not reach.
        fan_out(runtime, ev.run, ev.round + 1)
    pruned = retention.prune(paths, ev.round, record.rounds_per_epoch, record.config.keep_rounds)
    if record.config.transport in COMPRESSED:
        _prune_state(runtime, record, ev.round)
    logger.info("round committed", extra={**metric, "pruned_files": len(pruned)})
    if finished:
        return Outcome("finished", run=ev.run, round=ev.round, detail={"reason": finished})
    return Outcome("committed", run=ev.run, round=ev.round)


@dataclass
class Stepped:
    """A combine's output for a slice (all of it, unsharded): what the next round starts from."""

    weights: np.ndarray
    momentum: np.ndarray | None
    residual: np.ndarray | None = None  # compressed transports: the combiner's new residual
    update: np.ndarray | None = None  # compressed transports: the update file's data (uint8)


def slice_bounds(record: RunRecord, size: int, shard: int | None) -> tuple[int, int]:
    """Elements [lo, hi) a share reduces (block-aligned for a compressed transport)."""
    if shard is None:
        return 0, size
    return feedback.shard_slices(record.config.transport, record.n_params, size, record.config.combine_shards)[shard]


def state_slice(record: RunRecord, lo: int, hi: int) -> tuple[int, int]:
    """The elements of a parameter-sized state file (momentum, residual) that weights [lo, hi) step."""
    return min(lo, record.n_params), min(hi, record.n_params)


def reduce_slice(runtime: Runtime, record: RunRecord, round_no: int, paths: efs.RunLayout,
                 results: list[ResultRecord], shard: int | None = None) -> Stepped:
    """New weights (and momentum, and for a compressed transport the residual and update) of one
    slice of the flat vector (all of it when ``shard`` is None).

    Every operation is elementwise, or blockwise on codec blocks no slice splits, so a slice's
    result is bit-identical to the same elements of an unsharded combine.
    """
    files = [WorkerFile(r.worker, paths.result(round_no, r.worker), r.digest, r.samples,
                        None if shard is None else r.range_checksums[shard]) for r in results]
    if sorted(f.worker for f in files) != list(range(record.workers)):
        raise CorruptFile(paths.round_dir(round_no), f"round {round_no} of run {record.run} is ready but has "
                          f"results of workers {[f.worker for f in files]}")
    # The unsharded combine that committed the round before, warm, kept what it wrote (warm.py); a
    # share reads only its slice of the weights and state files, where the combine that wrote them
    # recorded the slices' checksums (_write), else the whole files.
    kept = warm.take(str(paths.mount), record.run, round_no, record.weights) if shard is None else None
    c = record.config
    if shard is None:
        weights = kept.weights if kept else efs.read_array(paths.weights(round_no), record.weights)
        size = weights.size
        lo, hi = 0, size
    else:
        size = efs.array_length(paths.weights(round_no))
        lo, hi = slice_bounds(record, size, shard)
        weights = efs.read_range(paths.weights(round_no), lo, hi, shard, c.combine_shards, record.weights)
    codec = COMPRESSED.get(c.transport)
    try:
        if codec:
            average = compressed_sum(files, lo=lo, hi=hi, n_params=record.n_params, size=size, codec=codec)
        else:
            average = weighted_sum(files, size, lo=lo, hi=hi)
    except CorruptFile as exc:
        worker = next((f.worker for f in files if f.path == exc.path), None)
        if worker is None:
            raise
        raise exc.of_worker(worker) from exc
    # The sum writes nothing, so dying anywhere inside it is the same as dying right here.
    runtime.faults.point("mid_sum")
    n_params = max(0, min(hi, record.n_params) - lo)  # parameters inside [lo, hi)
    step = dict(mode=c.mode, n_params=n_params, lr=learning_rate(c, round_no, record.rounds_per_epoch),
                sgd=sgd_options(c))
    if codec is None:
        momentum = kept.momentum if kept else _read_state(paths.optim(round_no), record, lo, hi, shard)
        return Stepped(*apply_update(weights, average, momentum, **step))
    momentum, residual = (kept.momentum, kept.residual) if kept else _stored_state(runtime, record, round_no, lo, hi,
                                                                                   shard)
    return Stepped(*feedback.step_slice(weights, average, momentum, residual, codec=codec, **step))


def _stored_state(runtime: Runtime, record: RunRecord, round_no: int, lo: int, hi: int,
                  shard: int | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A compressed run's (momentum, residual) of weights [lo, hi), from the bucket (storage/state.py):
    none for round 0, which starts from zeros; for any later round both must be there (momentum in
    sync mode, over a slice with parameters), stored before its weights were (``store_state``)."""
    if round_no == 0:
        return None, None
    a, b = state_slice(record, lo, hi)
    store, s = runtime.state_store, shard or 0
    momentum = None
    if record.config.mode == "sync" and b > a:
        momentum = store.get_combiner(record.run, "momentum", s, round_no, b - a)
    return momentum, store.get_combiner(record.run, "residual", s, round_no, b - a)


def store_state(runtime: Runtime, record: RunRecord, round_no: int, shard: int | None, stepped: Stepped) -> None:
    """Store what a compressed run's combine of ``round_no`` (or its share ``shard``) computed for
    the next round's: its slice of the momentum and the residual, in the bucket."""
    if stepped.momentum is not None:
        runtime.state_store.put_combiner(record.run, "momentum", shard or 0, round_no + 1, stepped.momentum)
    runtime.state_store.put_combiner(record.run, "residual", shard or 0, round_no + 1, stepped.residual)


def _write(runtime: Runtime, paths: efs.RunLayout, round_no: int, stepped: Stepped, metric: dict[str, Any],
           record: RunRecord) -> efs.Digest:
    # Optimizer state, residual, update and metric first, weights last: weights with their digest
    # mark a round as complete on EFS, from which `resume` can rebuild a lost ledger (recovery.py).
    # A compressed run's momentum, residual and update go to the bucket (storage/state.py; a
    # sharded combine's shares stored their slices of the first two, combine_share). Sharded, each
    # state file's digest records its S slices' checksums: the next round's shares read only their
    # own (reduce_slice), a model size in all instead of S.
    checksum = record.config.checksum
    slices = feedback.state_ranges(record.config.transport, record.n_params, stepped.weights.size,
                                   record.config.combine_shards)
    state = None if slices is None else [state_slice(record, lo, hi) for lo, hi in slices]
    if record.config.transport in COMPRESSED:
        if record.config.combine_shards == 1:  # a sharded combine's shares stored their slices
            store_state(runtime, record, round_no, None, stepped)
        runtime.state_store.put_update(record.run, round_no, stepped.update)
    elif stepped.momentum is not None:
        efs.write_array(paths.optim(round_no + 1), stepped.momentum, checksum=checksum, ranges=state)
    efs.write_json(paths.metric(round_no), metric)
    return efs.write_array(paths.weights(round_no + 1), stepped.weights, checksum=checksum, ranges=slices)


def _prune_state(runtime: Runtime, record: RunRecord, committed_round: int) -> None:
    """A compressed run's state in S3 follows the weights' retention; like it, never fails the commit."""
    rounds = retention.stale_state_rounds(committed_round, record.rounds_per_epoch, record.config.keep_rounds)
    if not rounds:
        return
    try:
        runtime.state_store.prune(record.run, rounds)
    except Exception as exc:  # the next commit's sweep covers these rounds again; S3's lifecycle rule expires the rest
        logger.warning("could not prune the run's state in the bucket", extra={"rounds": rounds, "error": str(exc)})


def _read_state(path: Path, record: RunRecord, lo: int, hi: int, shard: int | None) -> np.ndarray | None:
    """The elements of a parameter-sized state file (momentum, residual) that weights [lo, hi) step
    (``state_slice``); None if absent."""
    if not path.exists():
        return None
    if shard is None:
        return efs.read_array(path)
    a, b = state_slice(record, lo, hi)
    return efs.read_range(path, a, b, shard, record.config.combine_shards)


def reopen(runtime: Runtime, record: RunRecord, ev: CombineEvent, token: str, exc: CorruptFile) -> Outcome:
    """A result failed its checksum: drop it and run that worker again (its bytes are reproducible)."""
    bad = exc.worker
    if bad is None:  # not a worker's file (the weights, a missing result): nothing to re-run
        raise exc
    logger.warning("corrupt result; re-running its worker", extra={"worker": bad, "error": str(exc)})
    runtime.ledger.claims.reopen_worker(ev.run, ev.round, bad, token)
    fan_out(runtime, ev.run, ev.round, only=[bad])
    return Outcome("reopened", run=ev.run, round=ev.round, detail={"worker": bad})


def _assess(runtime: Runtime, record: RunRecord, round_no: int, results: list[ResultRecord],
            new: np.ndarray) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """Metrics of the round, and whether training stops (max epochs, target accuracy, plateau)."""
    c = record.config
    samples = sum(r.samples for r in results)
    rounds_done = round_no + 1
    epochs_done = rounds_done // record.rounds_per_epoch
    at_boundary = rounds_done % record.rounds_per_epoch == 0
    metric: dict[str, Any] = {
        "round": round_no, "workers": record.workers, "epochs_done": epochs_done, "epoch": rounds_done / record.rounds_per_epoch,
        "samples": samples, "train_loss": sum(r.loss_sum for r in results) / max(samples, 1),
        "train_accuracy": sum(r.correct for r in results) / max(samples, 1),
        "worker_compute_s": max(r.compute_s for r in results),
        "worker_s": max(r.load_s + r.compute_s + r.write_s for r in results),
        "samples_seen": record.samples_seen + samples,
        "lr": learning_rate(c, round_no, record.rounds_per_epoch),
    }
    extra: dict[str, Any] = {"samples_seen": metric["samples_seen"], "last_train_loss": metric["train_loss"]}
    if at_boundary or (c.eval_every and rounds_done % c.eval_every == 0) or epochs_done >= c.epochs:
        t0 = time.perf_counter()
        data = trainer.dataset(str(runtime.data_root(c)))
        model, layout = trainer.model_for(c, len(data.classes))
        k = c.val_samples or len(data.val_y)
        val_loss, val_acc = trainer.evaluate(model, layout, new, data.val_x[:k], data.val_y[:k],
                                             data.mean, data.std, input_size(c.model))
        metric.update(val_loss=val_loss, val_accuracy=val_acc, eval_s=time.perf_counter() - t0)
        best = -1.0 if record.best_accuracy is None else float(record.best_accuracy)
        stale = 0 if val_acc > best else record.evals_without_best + 1
        extra.update(best_accuracy=max(best, val_acc), evals_without_best=stale, last_val_loss=val_loss,
                     last_val_accuracy=val_acc)
        if c.target_accuracy is not None and val_acc >= c.target_accuracy:
            return metric, "target accuracy reached", extra
        if c.patience is not None and stale >= c.patience:
            return metric, "plateau", extra
    if epochs_done >= c.epochs:
        return metric, "max epochs", extra
    return metric, None, extra
