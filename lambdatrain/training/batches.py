"""A worker's shard of a prepared dataset, and its uint8 batches as normalized tensors.

Shards are contiguous, so a worker touches only its own pages of the memory-mapped arrays. Batches
are converted and augmented on whole tensors (random crop of the zero-padded image, horizontal
flip), as KellerJordan/cifar10-airbench does, not image by image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lambdatrain.protocol.errors import InvalidEvent


def shard_bounds(n: int, workers: int, worker: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of ``worker``'s shard; shards are disjoint, cover ``range(n)``
    and differ in size by at most one (the first ``n % workers`` shards get the extra item)."""
    if workers < 1:
        raise InvalidEvent("workers", f"must be at least 1, got {workers}")
    if not 0 <= worker < workers:
        raise InvalidEvent("worker", f"must be in [0, {workers}), got {worker}")
    base, extra = divmod(n, workers)
    start = worker * base + min(worker, extra)
    return start, start + base + (1 if worker < extra else 0)


def to_tensor_batch(
    x: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    size: int | None = None,
    augment: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW, augmented (crop + flip), resized to ``size``, normalized."""
    # Copy: the input is usually a read-only memmap slice, which torch refuses to share.
    batch = torch.from_numpy(np.array(x, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2).float().div_(255.0)
    if augment:
        batch = _random_flip(_random_crop(batch, 4, generator), generator)
    if size is not None and size != batch.shape[-1]:
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((batch - mean_t) / std_t).contiguous()


def _random_crop(batch: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Per-image random crop of the zero-padded (black) batch, back to the original size."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    rows = (dy + torch.arange(h)).view(n, h, 1)
    cols = (dx + torch.arange(w)).view(n, 1, w)
    # Advanced indices around a slice put their dimensions first: (N, H, W, C).
    return padded[torch.arange(n).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)


def _random_flip(batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
