"""The in-process N-worker path: a run's arithmetic without its protocol, for studies at N = 64
that the local stack cannot hold (one sandbox per worker, about 0.6 GB each).

``train(config, data)`` computes, round by round, exactly what the system's roles compute: every
worker's result with ``trainer.compute_sync`` or ``trainer.compute_average`` (the worker's own
functions, on the indices ``trainer.round_indices`` gives it), encoded with ``codec.encode`` or,
for a compressed transport, ``feedback.pack`` with that worker's residual; written with
``efs.write_array`` and summed in worker order by ``reduce.weighted_sum`` or
``reduce.compressed_sum``; stepped by ``step.apply_update`` or ``feedback.step_slice`` with the
combiner's residual, at ``step.learning_rate``. What it leaves out is what changes no number: the
ledger, invocations, retries, the stream, checkpoints on EFS, residuals in S3 (each worker's lives
in this process's memory), and the warm worker's update path (the commit's digest guarantees it
yields the combiner's weights, which this path uses directly).

tests/faults/test_inprocess_equivalence.py runs the real handlers (tests/harness.py) and this
path on the same settings and finds the same weights, bit for bit, for float32 and both
compressed transports in sync and average mode; the local stack runs the same handlers
(tests/faults: the same weights in-process and on the local stack).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from lambdatrain.protocol.config import COMPRESSED, RunConfig
from lambdatrain.storage import efs
from lambdatrain.training import feedback, trainer
from lambdatrain.training.codec import encode
from lambdatrain.training.data import PreparedData
from lambdatrain.training.model import input_size
from lambdatrain.training.reduce import WorkerFile, compressed_sum, weighted_sum
from lambdatrain.training.step import apply_update, learning_rate, sgd_options

# Called after every round with (round, samples seen so far, the new weights): how a caller
# evaluates.
OnRound = Callable[[int, int, np.ndarray], None]


def train(config: RunConfig, data: PreparedData, *, on_round: OnRound | None = None) -> np.ndarray:
    """The run's final weights, after all of its epochs."""
    weights, layout = trainer.initial_weights(config, len(data.classes))
    model, _ = trainer.model_for(config, len(data.classes))
    n_params, n_train = layout.n_params, trainer.train_size(config, data)
    per_epoch = trainer.rounds_per_epoch(config, n_train)
    codec = COMPRESSED.get(config.transport)
    residuals: list[np.ndarray | None] = [None] * config.workers  # each worker's (S3 in the system)
    momentum = combiner_residual = None
    seen = 0
    with tempfile.TemporaryDirectory(prefix="lt-inprocess-") as tmp:
        for round_no in range(config.epochs * per_epoch):
            lr = learning_rate(config, round_no, per_epoch)
            files = []
            for w in range(config.workers):
                indices = trainer.round_indices(config, n_train, w, round_no, per_epoch)
                if config.mode == "sync":
                    result = trainer.compute_sync(config, data, model, layout, weights, indices,
                                                  round_no=round_no, worker=w)
                else:
                    result = trainer.compute_average(config, data, model, layout, weights, indices,
                                                     round_no=round_no, worker=w, lr=lr)
                if codec:
                    encoded, residuals[w] = feedback.pack(result.vector, n_params, codec, residuals[w])
                else:
                    encoded = encode(result.vector, config.transport)
                path = Path(tmp) / f"w{w:04d}.npy"
                digest = efs.write_array(path, encoded, checksum=config.checksum)
                files.append(WorkerFile(w, path, digest, result.samples))
                seen += result.samples
            step = dict(mode=config.mode, n_params=n_params, lr=lr, sgd=sgd_options(config))
            if codec:
                average = compressed_sum(files, lo=0, hi=weights.size, n_params=n_params, size=weights.size,
                                         codec=codec)
                weights, momentum, combiner_residual, _ = feedback.step_slice(
                    weights, average, momentum, combiner_residual, codec=codec, **step)
            else:
                weights, momentum = apply_update(weights, weighted_sum(files, weights.size), momentum, **step)
            if on_round is not None:
                on_round(round_no, seen, weights)
    return weights


def evaluate(config: RunConfig, data: PreparedData, weights: np.ndarray,
             val_samples: int | None) -> tuple[float, float]:
    """(loss, accuracy) on the first ``val_samples`` validation images (all when None), as the
    combiner evaluates."""
    model, layout = trainer.model_for(config, len(data.classes))
    k = val_samples or len(data.val_y)
    return trainer.evaluate(model, layout, weights, data.val_x[:k], data.val_y[:k], data.mean, data.std,
                            input_size(config.model))


def run(config: RunConfig, data: PreparedData, *, val_samples: int | None, eval_every: int) -> dict:
    """A whole run evaluated at every epoch's end (and every ``eval_every`` rounds when not 0):
    the points and final accuracy bench.convergence records for a local-stack run."""
    per_epoch = trainer.rounds_per_epoch(config, trainer.train_size(config, data))
    points, clock = [], time.perf_counter()

    def on_round(round_no: int, seen: int, weights: np.ndarray) -> None:
        done = round_no + 1
        if done % per_epoch == 0 or (eval_every and done % eval_every == 0):
            loss, accuracy = evaluate(config, data, weights, val_samples)
            points.append({"round": round_no, "samples_seen": seen, "train_s": round(time.perf_counter() - clock, 2),
                           "val_accuracy": accuracy, "val_loss": loss})

    train(config, data, on_round=on_round)
    return {"points": points, "final_accuracy": points[-1]["val_accuracy"], "samples_seen": points[-1]["samples_seen"]}
