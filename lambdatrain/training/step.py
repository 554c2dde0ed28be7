"""The optimizer step of a round: the learning-rate schedule and the update of the flat weights.

Parameter-server update (sync mode, the paper's mini-batch scheme): worker w returns the mean
gradient g_w over its n_w samples; the combiner forms g = sum_w (n_w / n) g_w (reduce.py) and takes
one SGD step. This equals one step of a single process that accumulates gradients over the same
micro-batches.

Batch-norm running statistics drift apart on the workers (each sees only its micro-batches); the
combiner replaces them with their sample-weighted average, the same weighted sum as the gradients.

Average mode (local SGD / federated averaging): worker w returns delta_w = w_end - w_start after K
local steps; the new weights are w + sum_w (n_w / n) delta_w.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

if TYPE_CHECKING:
    from lambdatrain.protocol.config import RunConfig


def learning_rate(config: RunConfig, round_no: int, rounds_per_epoch: int) -> float:
    """The learning rate of round ``round_no`` (one optimizer step per round in sync mode).

    ``constant``: ``lr``. ``cosine``: torch's CosineAnnealingLR (eta_min 0) over the run's
    T = epochs * rounds_per_epoch rounds, lr * (1 + cos(pi * t / T)) / 2 at round t, so the last
    rounds take tiny steps and a run ends settled rather than wherever its last large step left
    it. Warm-up (W = warmup_epochs * rounds_per_epoch rounds, rounded): lr * (t + 1) / W for t < W,
    then the schedule over the remaining T - W rounds (Goyal et al. 2017, for the large global
    batches many workers make). A pure function of the round, so a resumed or re-driven round
    steps exactly as the first attempt did.
    """
    lr, schedule = config.lr, config.lr_schedule
    total = config.epochs * rounds_per_epoch
    warmup = min(total, round(config.warmup_epochs * rounds_per_epoch))
    if round_no < warmup:
        return lr * (round_no + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        t, span = round_no - warmup, max(1, total - warmup)
        return lr * (1 + math.cos(math.pi * min(t, span) / span)) / 2
    raise ValueError(f"unknown lr_schedule {schedule!r}")


def sgd_options(config: RunConfig) -> dict[str, Any]:
    """torch.optim.SGD's keyword arguments from a run's settings, all but the per-round ``lr``.

    The one place a run's optimizer settings meet torch: the combiner's step (sync mode) and the
    workers' local steps (average mode) both step with it (``sgd_update``).
    """
    return {"momentum": config.momentum, "weight_decay": config.weight_decay, "nesterov": config.nesterov}


def sgd_update(params: list[torch.Tensor], buffers: list[torch.Tensor | None], *, lr: float,
               sgd: Mapping[str, Any]) -> None:
    """One torch.optim.SGD step, in place, as ``SGD.step`` takes it: each parameter with a ``.grad``
    stepped, the others skipped; ``buffers[i]``, the momentum buffer of ``params[i]`` (None before
    its first step), set to the new one.

    torch's own arithmetic (its functional ``sgd``, which ``SGD.step`` calls with these arguments
    for CPU tensors), without the ``SGD`` class: building the first optimizer of a process imports
    torch._dynamo (about 1 s of CPU here), which every combiner's and every average-mode worker's
    first round would pay. Bit-identical to ``SGD.step`` (tests/unit/test_combine.py for the
    combiner's flat step, tests/functional/test_round_protocol.py for average mode's local steps).
    """
    from torch.optim.sgd import sgd as functional_sgd

    live = [i for i, p in enumerate(params) if p.grad is not None]
    stepped = [buffers[i] for i in live]
    with torch.no_grad():
        functional_sgd([params[i] for i in live], [params[i].grad for i in live], stepped, foreach=False,
                       fused=False, has_sparse_grad=False, lr=lr, weight_decay=sgd.get("weight_decay", 0.0),
                       momentum=sgd.get("momentum", 0.0), dampening=0.0, nesterov=sgd.get("nesterov", False),
                       maximize=False)
    for i, buffer in zip(live, stepped):
        buffers[i] = buffer


def sgd_step(params: np.ndarray, grad: np.ndarray, momentum_buf: np.ndarray | None, *, lr: float,
             sgd: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """One SGD step (``sgd_update``) on a flat vector; returns (new params, new momentum buffer).

    torch's own optimizer arithmetic, so the step is exactly what a single-process PyTorch loop
    would take. A zero momentum buffer equals torch's "first step" initialisation.
    """
    p = torch.from_numpy(np.array(params, dtype=np.float32))
    p.grad = torch.from_numpy(np.asarray(grad, dtype=np.float32))
    buffers = [torch.from_numpy(np.array(momentum_buf, dtype=np.float32))
               if sgd.get("momentum", 0) and momentum_buf is not None else None]
    sgd_update([p], buffers, lr=lr, sgd=sgd)
    # Without momentum torch keeps no buffer; zeros stand for it.
    return p.numpy(), buffers[0].numpy() if buffers[0] is not None else np.zeros_like(params)


def apply_update(weights: np.ndarray, average: np.ndarray, momentum_buf: np.ndarray | None, *, mode: str,
                 n_params: int, lr: float, sgd: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """New flat weights (and optimizer state) from the round's weights and the weighted average."""
    new = np.empty_like(weights)
    if mode == "sync" and n_params > 0:
        new[:n_params], momentum_buf = sgd_step(weights[:n_params], average[:n_params], momentum_buf,
                                                lr=lr, sgd=sgd)
    else:
        new[:n_params] = weights[:n_params] + average[:n_params]
    new[n_params:] = average[n_params:]  # batch-norm statistics: the workers' weighted average
    return new, momentum_buf
