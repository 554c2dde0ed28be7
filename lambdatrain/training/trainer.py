"""A worker's compute and the combiner's evaluation: which samples a round uses, gradients, deltas.

Everything a round computes is a deterministic function of (run settings, round, worker): the
shard permutation is seeded by (seed, epoch, worker), augmentation by (seed, round, worker,
micro-batch). A re-driven or duplicated worker therefore writes the very same bytes, which is
what makes the fault-tolerance guarantees of docs/reliability.md bit-exact.

Warm reuse: a Lambda process serves many invocations, so the memory-mapped dataset and the built
model are cached here per process and reused while their key is unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from lambdatrain.training.flat import FlatLayout
from lambdatrain.training.batches import shard_bounds, to_tensor_batch
from lambdatrain.training.data import PreparedData, open_prepared
from lambdatrain.protocol.errors import InvalidEvent
from lambdatrain.training.model import ModelSpec, build_model, input_size
from lambdatrain.protocol.config import RunConfig
from lambdatrain.training.step import sgd_options, sgd_update

EVAL_BATCH = 256


@lru_cache(maxsize=4)
def dataset(root: str) -> PreparedData:
    """The prepared dataset at ``root``, memory-mapped once per process."""
    return open_prepared(Path(root))


@lru_cache(maxsize=4)
def _model_and_layout(name: str, width: float, num_classes: int) -> tuple[torch.nn.Module, FlatLayout]:
    model = build_model(ModelSpec(name=name, width=width, num_classes=num_classes))
    return model, FlatLayout.of(model)


def model_for(config: RunConfig, num_classes: int) -> tuple[torch.nn.Module, FlatLayout]:
    """A (cached) model of the run's architecture; callers load the weights they need into it."""
    return _model_and_layout(config.model, config.width, num_classes)


def initial_weights(config: RunConfig, num_classes: int) -> tuple[np.ndarray, FlatLayout]:
    """Round 0's weights: the architecture built under the run's seed."""
    torch.manual_seed(config.seed)
    model = build_model(ModelSpec(name=config.model, width=config.width, num_classes=num_classes))
    layout = FlatLayout.of(model)
    return layout.flatten(model), layout


def train_size(config: RunConfig, data: PreparedData) -> int:
    n = len(data.train_y)
    return min(n, config.max_train_samples) if config.max_train_samples else n


def samples_per_round(config: RunConfig) -> int:
    """Samples one worker consumes per round."""
    return config.per_worker_batch * config.local_steps


def rounds_per_epoch(config: RunConfig, n_train: int) -> int:
    """Rounds in one pass over the training split (a remainder smaller than a round is dropped)."""
    if config.workers > n_train:
        raise InvalidEvent("workers", f"must not exceed the {n_train} training samples")
    smallest = min(b - a for a, b in (shard_bounds(n_train, config.workers, w) for w in range(config.workers)))
    rounds = smallest // samples_per_round(config)
    if rounds < 1:
        raise InvalidEvent("batch_size", f"is too large: each worker's shard holds only {smallest} samples "
                                         f"but a round takes {samples_per_round(config)} from each")
    return rounds


def round_indices(config: RunConfig, n_train: int, worker: int, round_no: int, per_epoch: int) -> np.ndarray:
    """The training-sample indices worker uses in round ``round_no``, in the order it uses them."""
    epoch, k = divmod(round_no, per_epoch)
    lo, hi = shard_bounds(n_train, config.workers, worker)
    perm = np.random.default_rng([config.seed, epoch, worker]).permutation(hi - lo) + lo
    per = samples_per_round(config)
    return perm[k * per:(k + 1) * per]


def micro_batches(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        # Sorted within the micro-batch: reads from the memory map go forward through the file;
        # the order inside a batch does not change the batch's gradient.
        yield np.sort(indices[start:start + size])


def _augment_generator(config: RunConfig, round_no: int, worker: int, micro: int) -> torch.Generator:
    seed = np.random.SeedSequence([config.seed, round_no, worker, micro]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(seed))


def batch(config: RunConfig, data: PreparedData, idx: np.ndarray, *, round_no: int, worker: int,
          micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = to_tensor_batch(np.asarray(data.train_x[idx]), data.mean, data.std, size=input_size(config.model),
                        augment=config.augment, generator=_augment_generator(config, round_no, worker, micro))
    return x, torch.from_numpy(np.array(data.train_y[idx], dtype=np.int64))


@dataclass
class WorkResult:
    vector: np.ndarray  # sync: mean gradient ++ buffers; average: weight delta ++ buffers
    samples: int
    loss_sum: float
    correct: int
    truncated: bool  # stopped early to respect the Lambda deadline
    compute_s: float


def _forward_backward(model, x, y, scale: float) -> tuple[float, int]:
    out = model(x)
    loss = F.cross_entropy(out, y, reduction="sum")
    (loss * scale).backward()
    return float(loss.detach()), int((out.argmax(1) == y).sum())


def compute_sync(config: RunConfig, data: PreparedData, model, layout: FlatLayout, weights: np.ndarray,
                 indices: np.ndarray, *, round_no: int, worker: int,
                 time_left: Callable[[], float] = lambda: math.inf) -> WorkResult:
    """Sum-of-loss gradients over the worker's micro-batches, returned as the mean gradient."""
    start = time.perf_counter()
    layout.load(model, weights)
    model.train()
    model.zero_grad(set_to_none=True)
    samples, loss_sum, correct, truncated, slowest = 0, 0.0, 0, False, 0.0
    for micro, idx in enumerate(micro_batches(indices, config.micro_batch)):
        if micro and time_left() < 2 * slowest:
            truncated = True  # keep what is done: the mean over processed samples stays unbiased
            break
        t0 = time.perf_counter()
        x, y = batch(config, data, idx, round_no=round_no, worker=worker, micro=micro)
        loss, ok = _forward_backward(model, x, y, 1.0)
        samples, loss_sum, correct = samples + len(idx), loss_sum + loss, correct + ok
        slowest = max(slowest, time.perf_counter() - t0)
    vector = np.concatenate([layout.grads(model) / np.float32(max(samples, 1)),
                             layout.flatten(model)[layout.n_params:]])
    return WorkResult(vector, samples, loss_sum, correct, truncated, time.perf_counter() - start)


def compute_average(config: RunConfig, data: PreparedData, model, layout: FlatLayout, weights: np.ndarray,
                    indices: np.ndarray, *, round_no: int, worker: int,
                    time_left: Callable[[], float] = lambda: math.inf, lr: float | None = None) -> WorkResult:
    """K local SGD steps from the round's weights at rate ``lr`` (default: config.lr); returns the
    weight delta (local SGD)."""
    start = time.perf_counter()
    layout.load(model, weights)
    model.train()
    params, sgd, rate = list(model.parameters()), sgd_options(config), config.lr if lr is None else lr
    buffers: list[torch.Tensor | None] = [None] * len(params)  # torch's momentum buffers, made by the first step
    samples, loss_sum, correct, truncated, micro = 0, 0.0, 0, False, 0
    step_size, slowest = config.per_worker_batch, 0.0
    for step in range(config.local_steps):
        if step and time_left() < 2 * slowest:
            truncated = True
            break
        t0 = time.perf_counter()
        for p in params:
            p.grad = None  # as SGD's zero_grad(set_to_none=True)
        step_idx = indices[step * step_size:(step + 1) * step_size]
        for idx in micro_batches(step_idx, config.micro_batch):
            x, y = batch(config, data, idx, round_no=round_no, worker=worker, micro=micro)
            loss, ok = _forward_backward(model, x, y, 1.0 / len(step_idx))
            samples, loss_sum, correct, micro = samples + len(idx), loss_sum + loss, correct + ok, micro + 1
        sgd_update(params, buffers, lr=rate, sgd=sgd)
        slowest = max(slowest, time.perf_counter() - t0)
    flat = layout.flatten(model)
    vector = np.concatenate([flat[:layout.n_params] - weights[:layout.n_params], flat[layout.n_params:]])
    return WorkResult(vector, samples, loss_sum, correct, truncated, time.perf_counter() - start)


def evaluate(model, layout: FlatLayout | None, weights: np.ndarray | None, x: np.ndarray, y: np.ndarray,
             mean, std, size: int) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model on (x, y); weights are loaded first if given."""
    if weights is not None and layout is not None:
        layout.load(model, weights)
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            xb = to_tensor_batch(np.asarray(x[start:start + EVAL_BATCH]), mean, std, size=size)
            yb = torch.from_numpy(np.array(y[start:start + EVAL_BATCH], dtype=np.int64))
            out = model(xb)
            loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    n = max(len(y), 1)
    return loss_sum / n, correct / n
