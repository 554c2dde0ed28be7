"""The compressed transports' CPU per round, besides compute: what training/feedback.py runs.

A warm worker applies the combiner's update to the weights it holds (decode, add), computes, then
packs its result (compress with error feedback: the residual added, the codes, the new residual).
Each of the combiner's S shares adds the N results' slices into its sum (decode_add), steps, packs
its slice of the update with its own residual and applies it to its weights. Each is single-threaded
NumPy over the parameters (buffers travel as float32), at the seconds per parameter ``calibrate``
measured (calibration.py ``measure_codecs``); 0 for a float transport. At N = 64 the combiner's
sum is most of it: 64 results of 20 M parameters at about 2.5 ns each are 3 s a round at S = 1.
"""

from __future__ import annotations

from typing import Protocol


class Scenario(Protocol):  # what of planner.Scenario this needs (planner imports this module)
    params: int
    buffers: int
    workers: int
    shards: int

    @property
    def compressed(self) -> bool: ...


class Calibration(Protocol):  # and of planner.Calibration
    pack_s_per_param: float
    apply_s_per_param: float
    decode_add_s_per_param: float


def worker_codec_s(s: Scenario, c: Calibration) -> dict[str, float]:
    """A warm worker's seconds on one vCPU: the update's ``apply`` (before compute) and its result's
    ``pack`` (after)."""
    if not s.compressed:
        return {"apply": 0.0, "pack": 0.0}
    p = s.params - s.buffers
    return {"apply": p * c.apply_s_per_param, "pack": p * c.pack_s_per_param}


def combiner_codec_s(s: Scenario, c: Calibration) -> float:
    """One share's seconds on one vCPU (the shares run at once): its slice of the N results added
    into the sum, then of the update packed and applied."""
    if not s.compressed:
        return 0.0
    share = (s.params - s.buffers) / s.shards
    return share * (s.workers * c.decode_add_s_per_param + c.pack_s_per_param + c.apply_s_per_param)
