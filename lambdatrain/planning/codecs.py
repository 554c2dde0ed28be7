"""The compressed transports' CPU per round, besides compute: what training/feedback.py runs.

A warm worker applies the combiner's update to the weights it holds (decode, add), computes, then
packs its result (compress with error feedback: the residual added, the codes, the new residual).
Each of the combiner's S shares adds the N results' slices into its sum (decode_add), steps, packs
its slice of the update with its own residual and applies it to its weights. Each is single-threaded
NumPy over the parameters (buffers travel as float32) but the combiner's sum, which takes a thread
per vCPU, at the seconds per parameter ``calibrate`` measured (codec_timing.py ``measure_codecs``);
0 for a float transport. At N = 64 the sum is most of it: 64 results of 20 M parameters at 0.75 ns
each (this machine, one core) are about a second a round at S = 1 on one vCPU.
"""

from __future__ import annotations

import math
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
    sum_thread_efficiency: float


def worker_codec_s(s: Scenario, c: Calibration) -> dict[str, float]:
    """A warm worker's seconds on one vCPU: the update's ``apply`` (before compute) and its result's
    ``pack`` (after)."""
    if not s.compressed:
        return {"apply": 0.0, "pack": 0.0}
    p = s.params - s.buffers
    return {"apply": p * c.apply_s_per_param, "pack": p * c.pack_s_per_param}


def combiner_codec_s(s: Scenario, c: Calibration, vcpus: float) -> float:
    """One share's seconds with ``vcpus`` (the shares run at once): its slice of the N results added
    into the sum, in one thread per vCPU (training/reduce.py ``SpanSum``: a thread per core,
    each on a span of at least MIN_DECODE_SPAN elements; each thread past the first adds
    ``sum_thread_efficiency`` of one, measured with two), then of the update packed and applied,
    single-threaded."""
    from lambdatrain.training.reduce import decode_threads  # numpy: not for `plan --help`

    if not s.compressed:
        return 0.0
    share = (s.params - s.buffers) / s.shards
    k = min(vcpus, decode_threads(int(share), cores=math.ceil(vcpus)))
    speedup = k if k <= 1 else 1 + (k - 1) * c.sum_thread_efficiency
    summed = share * s.workers * c.decode_add_s_per_param / speedup
    return summed + share * (c.pack_s_per_param + c.apply_s_per_param) / min(1.0, vcpus)
