"""Calibration of the compressed transports' codecs (calibration.py ``calibrate`` runs these): the
seconds per parameter of what a compressed round runs besides compute, and what a second thread
adds to the combiner's sum, each timed on the functions a round runs (training/feedback.py,
training/reduce.py) at the model's size. The planner's arithmetic for them: codecs.py.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


CODEC_REPEATS = 5  # timings of each codec operation, the median kept
# The Calibration's fields ``measure_codecs`` fills, each seconds per parameter on one thread.
CODEC_CONSTANTS = ("pack_s_per_param", "apply_s_per_param", "decode_add_s_per_param")


def measure_codecs(size: int, n_params: int, repeats: int = CODEC_REPEATS) -> dict[str, float]:
    """Seconds per parameter of what a compressed round runs besides compute, on one thread, each
    the slower codec's median (``ternary`` and ``sign`` differ by about a tenth): ``pack_s_per_param``,
    a result or update compressed with error feedback; ``apply_s_per_param``, an update applied to
    the weights (decode, add); ``decode_add_s_per_param``, a result added into the combiner's sum.
    At the model's size, because the time per element depends on it (cache or memory)."""
    import numpy as np

    from lambdatrain.protocol.config import COMPRESSED
    from lambdatrain.training import feedback

    rng = np.random.default_rng(0)
    vector, residual = rng.standard_normal(size, dtype=np.float32), rng.standard_normal(n_params, dtype=np.float32)
    weights, acc = rng.standard_normal(size, dtype=np.float32), np.zeros(size, dtype=np.float32)
    times: dict[str, list[float]] = {key: [] for key in CODEC_CONSTANTS}
    for codec in dict.fromkeys(COMPRESSED.values()):
        data = feedback.pack(vector, n_params, codec, residual)[0]
        pack_key, apply_key, add_key = CODEC_CONSTANTS
        runs = {pack_key: lambda: feedback.pack(vector, n_params, codec, residual),
                apply_key: lambda: feedback.apply_update(weights, data, n_params, codec),
                add_key: lambda: feedback.add_slice(data, 0, size, n_params, codec, acc, 0.5)}
        for key, run in runs.items():
            times[key].append(statistics.median(timed(run) for _ in range(repeats)) / max(n_params, 1))
    return {key: max(values) for key, values in times.items()}


def measure_sum_efficiency(size: int, n_params: int, *, files: int = 8, repeats: int = CODEC_REPEATS) -> float:
    """What a second thread adds to the combiner's compressed sum's decode (training/reduce.py
    ``SpanSum``, which ``compressed_sum`` adds each result with, over ``files`` ternary results in
    memory: the reads are the planner's read bandwidth, apart): one thread's time over two threads',
    less one (0: nothing, 1: twice as fast), the median. The decode is bound by memory bandwidth as
    much as by the core, so more threads do not scale perfectly (0.6-0.7 on this 2-core machine with
    8 results of 20 M elements; with 4, and no first untimed sum, 0.0-0.7); 1.0 (perfect) where
    there is one core to try."""
    from lambdatrain.training.reduce import SpanSum, cores_available

    if cores_available() < 2:
        return 1.0
    import numpy as np

    from lambdatrain.training import feedback

    rng = np.random.default_rng(0)
    payloads = [feedback.pack(rng.standard_normal(size, dtype=np.float32), n_params, "ternary", None)[0]
                for _ in range(files)]

    def summed(threads: int) -> float:
        def run() -> None:
            with SpanSum(0, size, n_params, size, "ternary", threads) as s:
                for data in payloads:
                    s.add(data, np.float32(1 / files))
        return timed(run)

    summed(2)  # the pool's threads and the sum's pages, which a combine that runs every round has
    ratios = [summed(1) / summed(2) for _ in range(repeats)]
    return min(max(statistics.median(ratios) - 1.0, 0.0), 1.0)
