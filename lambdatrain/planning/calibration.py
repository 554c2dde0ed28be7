"""Calibration: the planner's constants measured on this machine (lambdatrain/planning/planner.py predicts
from them). Each measurement runs the code a worker or combiner runs, not a proxy for it:

* seconds per image and the per-round fixed cost: ``trainer.compute_sync`` on one thread (decode,
  augment, normalize, forward, backward; weights in, gradients out), the slope and intercept of
  its time at one and at four of the run's micro-batches;
* cold start: a fresh interpreter importing what a worker imports and building the model;
* file bandwidth: ``efs.write_array`` / ``efs.stream_array`` (checksum and fsync included);
* the codecs' CPU per element: training/feedback.py's ``pack`` (compress with error feedback),
  ``apply_update`` and ``add_slice`` on a vector of the model's size, and what a second thread adds
  to the combiner's compressed sum (codec_timing.py).

torch and numpy load only here, so the planner's arithmetic imports neither.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from lambdatrain.planning.codec_timing import measure_codecs, measure_sum_efficiency, timed as _timed
from lambdatrain.planning.planner import Calibration

if TYPE_CHECKING:
    from lambdatrain.training.data import PreparedData


@contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread, one vCPU's worth, whatever this machine has; restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def generated_data(images: int, *, seed: int = 0) -> PreparedData:
    """A CIFAR-shaped stand-in for a prepared dataset (32x32 uint8 images, 10 classes), for when
    none is at hand: a worker's per-image cost depends on the images' shape, not their pixels."""
    import numpy as np

    from lambdatrain.training.data import CIFAR10_CLASSES, PreparedData

    x = np.random.default_rng(seed).integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(images) % len(CIFAR10_CLASSES)).astype(np.int64)
    return PreparedData(Path("<generated>"), x, y, x[:0], y[:0], CIFAR10_CLASSES, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _round_fixed(net: Any, layout: Any, weights: Any) -> None:
    """What compute_sync does once per round whatever its images: the round's weights into the
    model, the gradients and buffers out into one vector."""
    import numpy as np

    layout.load(net, weights)
    np.concatenate([layout.grads(net), layout.flatten(net)[layout.n_params:]])


def _median_round_fixed(net: Any, layout: Any, weights: Any, repeats: int) -> float:
    """Median seconds of ``_round_fixed`` (call inside ``_one_thread``)."""
    return statistics.median(_timed(lambda: _round_fixed(net, layout, weights)) for _ in range(repeats))


FIT_MICRO_BATCHES = 4  # measure_compute's larger batch, in micro-batches (bench.planner's batch at N = 1)


def measure_compute(model: str, width: float, *, micro_batch: int = 64, repeats: int = 1,
                    data: PreparedData | None = None) -> tuple[float, float]:
    """(seconds per image, fixed seconds per round) of a worker's compute, ``trainer.compute_sync``,
    on one thread over ``data``'s first images (generated ones if None): the line through its
    medians at one micro-batch and at ``FIT_MICRO_BATCHES``, timed in turn. A call costs more than
    its images: the weights in, the gradients out, and a first backward that allocates them (at
    width 0.125 here 6-17 ms against 0.6 ms an image), so one micro-batch's time over its images
    overstates a larger batch's per-image time by a quarter (docs/benchmarks.md section 4)."""
    import numpy as np

    from lambdatrain.training import trainer
    from lambdatrain.protocol.config import RunConfig

    large = FIT_MICRO_BATCHES * micro_batch
    data = data if data is not None else generated_data(large)
    config = RunConfig(workers=1, model=model, width=width, batch_size=large, micro_batch=micro_batch)
    net, layout = trainer.model_for(config, len(data.classes))
    weights = layout.flatten(net)
    # A dataset smaller than the fit's batch repeats its images: the time depends on their count.
    sizes = (micro_batch, large)
    indices = {n: np.resize(np.arange(len(data.train_y)), n) for n in sizes}

    def one_round(n: int, round_no: int) -> float:
        return trainer.compute_sync(config, data, net, layout, weights, indices[n], round_no=round_no,
                                    worker=0).compute_s

    with _one_thread():
        one_round(large, 0)  # a new batch shape's first pass sets up kernels that a warm worker already has
        times: dict[int, list[float]] = {n: [] for n in sizes}
        for r in range(1, repeats + 1):  # in turn, so a slow spell of the machine hits both sizes
            for n in sizes:
                times[n].append(one_round(n, r))
    # The medians, not the minima: the machine is shared, and so are the runs this predicts.
    small_s, large_s = (statistics.median(times[n]) for n in sizes)
    per_image = max(large_s - small_s, 0.0) / (large - micro_batch)
    return per_image, max(small_s - micro_batch * per_image, 0.0)


def measure_compute_fixed(model: str, width: float, *, repeats: int = 3) -> float:
    """For a given seconds per image: the per-round cost of the weights in and the gradients out
    alone, without images. Less than ``measure_compute``'s intercept, which also holds a call's
    first backward (its allocations): timing that takes compute at two batch sizes, which a given
    per-image time is there to skip."""
    from lambdatrain.training import trainer
    from lambdatrain.protocol.config import RunConfig

    net, layout = trainer.model_for(RunConfig(workers=1, model=model, width=width), 10)
    weights = layout.flatten(net)
    with _one_thread():
        return _median_round_fixed(net, layout, weights, repeats)


# The child prints its own elapsed time once ready: a process that has imported torch takes
# seconds more to exit, which no worker pays.
_COLD_START = """\
import sys, time
import lambdatrain.roles.edge, lambdatrain.roles.worker  # what functions/worker/handler.py imports at init
from lambdatrain.training import trainer
from lambdatrain.training.model import ModelSpec, build_model
build_model(ModelSpec(sys.argv[2], float(sys.argv[3])))
if sys.argv[4]:
    trainer.dataset(sys.argv[4])
print(time.time() - float(sys.argv[1]))
"""


def measure_cold_start(model: str, width: float, *, data: Path | None = None, timeout_s: float = 600.0) -> float:
    """Seconds from launching a fresh Python on one thread to a worker ready to compute: the
    handler's imports (torch among them), the model built, the prepared dataset (if any) opened."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", _COLD_START, repr(time.time()), model, repr(width), str(data or "")]
    child = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)
    if child.returncode != 0:
        raise RuntimeError(f"the cold-start probe failed: {child.stderr.strip()[-2000:]}")
    return float(child.stdout.split()[-1])


def measure_file_bandwidth(params: int, folder: Path) -> tuple[float, float]:
    """(read, write) bytes/s of efs.stream_array / write_array on a ``params``-element file."""
    import numpy as np

    from lambdatrain.storage import efs

    vector = np.random.default_rng(0).standard_normal(params, dtype=np.float32)
    path = folder / "planner-calibration.npy"
    try:
        t0 = time.perf_counter()
        digest = efs.write_array(path, vector)
        write = vector.nbytes / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in efs.stream_array(path, digest):
            pass
        return vector.nbytes / (time.perf_counter() - t0), write
    finally:
        path.unlink(missing_ok=True)
        efs.digest_path(path).unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def model_sizes(model: str, width: float) -> tuple[int, int]:
    """(elements of the flat vector, of which batch-norm buffers): what a compressed transport
    sends as codes and what it sends as float32. Built once per model and width."""
    from lambdatrain.training.flat import FlatLayout
    from lambdatrain.training.model import ModelSpec, build_model

    layout = FlatLayout.of(build_model(ModelSpec(model, width)))
    return layout.size, layout.size - layout.n_params


def model_params(model: str, width: float) -> int:
    return model_sizes(model, width)[0]


# The largest vector the calibration times a file or a codec on: far past the caches, where the time
# per element no longer depends on the size, and a few of them (the codecs keep about six) fit in a
# laptop's memory whatever the model (vgg19 at ImageNet width has 143 M parameters).
TIMED_ELEMENTS = 50_000_000


def _quiet(what: str) -> None:
    """The default ``step``: library callers see nothing."""


def calibrate(model: str, width: float, folder: Path, *, micro_batch: int = 64, data: Path | None = None,
              repeats: int = 1, step: Callable[[str], None] = _quiet, **overrides: Any) -> tuple[int, Calibration]:
    """(params, calibration) for ``model`` measured here, on the prepared dataset ``data`` (generated
    images if None; ``repeats`` timed rounds, the median kept); ``overrides`` that are not None
    replace fields and skip their measurement. ``step`` hears of each measurement as it starts."""
    step(f"building {model} at width {width:g}")
    params = model_params(model, width)
    given = {k: v for k, v in overrides.items() if v is not None}
    measured: dict[str, float] = {}
    if "seconds_per_image" not in given:
        from lambdatrain.training.data import open_prepared

        prepared = open_prepared(data) if data is not None else None
        step("timing a worker's compute on one thread")
        measured["seconds_per_image"], measured["compute_fixed_s"] = measure_compute(
            model, width, micro_batch=micro_batch, repeats=repeats, data=prepared)
    elif "compute_fixed_s" not in given:
        step("timing a round's fixed cost")
        measured["compute_fixed_s"] = measure_compute_fixed(model, width)
    if "cold_start_s" not in given:
        step("timing a cold start in a fresh interpreter")
        measured["cold_start_s"] = measure_cold_start(model, width, data=data)
    size = min(params, TIMED_ELEMENTS)
    step("timing a model-sized file written and read back")
    measured["read_bps"], measured["write_bps"] = measure_file_bandwidth(size, folder)
    step("timing the compressed transports' codecs")
    n_params = size - min(model_sizes(model, width)[1], size - 1)
    measured.update(measure_codecs(size, n_params))
    measured["sum_thread_efficiency"] = measure_sum_efficiency(size, n_params)
    return params, Calibration(**{**measured, **given})


def calibration_dict(c: Calibration) -> dict[str, Any]:
    """The calibration as strict JSON (an unlimited bandwidth is null, not Infinity)."""
    return {k: v if math.isfinite(v) else None for k, v in dataclasses.asdict(c).items()}


def calibration_from_dict(d: dict[str, Any]) -> Calibration:
    """``calibration_dict``'s inverse (a saved run's calibration, bench/planner.py ``--from``)."""
    return Calibration(**{k: math.inf if v is None else v for k, v in d.items()})
