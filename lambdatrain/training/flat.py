"""The flat parameter vector: where each state_dict entry lives in it, and its slices.

A model's state (parameters, then buffers, in ``state_dict`` order) is one contiguous float32
vector, so a combine is one vectorized add per worker file (reduce.py), and the optimizer runs on
one tensor (step.py). A sharded combine splits the vector into contiguous slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch


@dataclass(frozen=True)
class FlatLayout:
    """Where each state_dict entry lives in the flat vector; parameters come first."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    offsets: tuple[int, ...]
    n_params: int  # elements [0, n_params) are trainable parameters, the rest are buffers
    size: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> "FlatLayout":
        state = model.state_dict()
        param_names = [n for n, _ in model.named_parameters()]
        buffer_names = [n for n in state if n not in set(param_names)]
        names = tuple(param_names + buffer_names)
        shapes = tuple(tuple(state[n].shape) for n in names)
        sizes = [int(np.prod(s)) for s in shapes]
        offsets = tuple(int(x) for x in np.cumsum([0] + sizes[:-1]))
        n_params = sum(sizes[: len(param_names)])
        return cls(names, shapes, tuple(state[n].dtype for n in names), offsets, n_params, sum(sizes))

    def flatten(self, model: torch.nn.Module) -> np.ndarray:
        state = model.state_dict()
        out = np.empty(self.size, dtype=np.float32)
        for name, off, shape in zip(self.names, self.offsets, self.shapes):
            n = int(np.prod(shape))
            out[off: off + n] = state[name].detach().reshape(-1).to(torch.float32).numpy()
        return out

    def state_dict(self, flat: np.ndarray) -> dict[str, torch.Tensor]:
        """The flat vector as a state_dict (integer buffers rounded back to their dtype)."""
        if flat.shape != (self.size,):
            raise ValueError(f"flat vector has {flat.shape} elements, model needs {self.size}")
        tensor = torch.from_numpy(np.asarray(flat, dtype=np.float32))
        out = {}
        for name, off, shape, dtype in zip(self.names, self.offsets, self.shapes, self.dtypes):
            piece = tensor[off: off + int(np.prod(shape))].reshape(shape)
            out[name] = piece.round().to(dtype) if not dtype.is_floating_point else piece.to(dtype).clone()
        return out

    def load(self, model: torch.nn.Module, flat: np.ndarray) -> None:
        model.load_state_dict(self.state_dict(flat))

    def grads(self, model: torch.nn.Module) -> np.ndarray:
        """The parameters' .grad as one float32 vector (zeros where a parameter got none)."""
        out = np.zeros(self.n_params, dtype=np.float32)
        for (name, p), off in zip(model.named_parameters(), self.offsets):
            if p.grad is not None:
                out[off: off + p.numel()] = p.grad.detach().reshape(-1).numpy()
        return out


def iter_slices(size: int, shards: int) -> Iterable[tuple[int, int]]:
    """Contiguous [lo, hi) slices of the parameter vector for a sharded combine."""
    base, extra = divmod(size, shards)
    lo = 0
    for s in range(shards):
        hi = lo + base + (1 if s < extra else 0)
        yield lo, hi
        lo = hi
