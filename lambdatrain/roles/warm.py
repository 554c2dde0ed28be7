"""What a warm combiner keeps between rounds: the state it just wrote for the next round (the
weights, the momentum and the compressed transports' residual), so that its next combine in the
same execution environment takes them from memory instead of reading them back from EFS.

Reading them back is three model sizes a round (240 MB for vgg19_cifar at width 1 with a
compressed transport), which at many workers is a large share of the round's EFS bytes and time
once the workers' results are compressed (docs/benchmarks.md, "Traffic"). Lambda keeps an
environment for the function's next invocation when one is idle
(https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html) and a run's rounds
are combined one after another, so in a steady run round r + 1's combine usually lands where round
r's ran.

The files stay the truth. A kept state is used only by a combine of the run and round it was
written for, on the same mount, while its weights' digest is the one the ledger committed
(``RunRecord.weights``); anything else (a cold environment, another run, a round rolled back to an
older checkpoint) reads EFS as before, and the bytes are the same either way. The arrays are
read-only. One slot, emptied by the combine that looks at it: an environment keeps one run's
state at most, and only between two combines, so a combine's peak memory is a cold one's (a
retry of the same round in the same environment reads EFS). Only the unsharded combine keeps
state; a share of a sharded one reads its slice of the files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lambdatrain.storage.efs import Digest


@dataclass(frozen=True)
class Kept:
    mount: str
    run: str
    round: int  # the round these are the starting state of
    weights_digest: Digest
    weights: np.ndarray
    momentum: np.ndarray | None
    residual: np.ndarray | None


_kept: list[Kept] = []  # at most one


def keep(mount: str, run: str, round_no: int, digest: Digest, weights: np.ndarray, momentum: np.ndarray | None,
         residual: np.ndarray | None) -> None:
    """Remember what was just written as round ``round_no``'s starting state (``digest``: the weights')."""
    for array in (weights, momentum, residual):
        if array is not None:
            array.setflags(write=False)
    _kept[:] = [Kept(mount, run, round_no, digest, weights, momentum, residual)]


def take(mount: str, run: str, round_no: int, committed: Digest) -> Kept | None:
    """The kept state if it is round ``round_no``'s of ``run`` with the committed weights, else None;
    either way the environment no longer keeps it, so a combine holds no more memory than a cold
    one (the arrays live as long as the caller uses them, and its new state is kept in their place)."""
    kept = next(iter(_kept), None)
    _kept.clear()
    if kept is None or (kept.mount, kept.run, kept.round, kept.weights_digest) != (mount, run, round_no, committed):
        return None
    return kept


def forget() -> None:
    """A cold environment (tests; an environment that needs the memory)."""
    _kept.clear()
