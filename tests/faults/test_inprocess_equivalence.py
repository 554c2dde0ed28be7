"""The in-process N-worker path (bench/inprocess.py) computes what the system computes.

bench.convergence measures recipes at 64 workers with that path, because the local stack cannot
hold 64 sandboxes here; its numbers stand for the system's only if its weights are the system's.
The oracle is the system itself: the real handlers (tests/harness.py), whose weights the fault
suite shows equal the local stack's.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench import inprocess
from lambdatrain.protocol.config import parse_config
from lambdatrain.training import trainer
from tests.faults.conftest import MATRIX_ENV, SETTINGS, VARIANTS

# The recipes bench.convergence's 64-worker study runs; `make test-matrix` checks every variant.
STUDIED = list(VARIANTS) if os.environ.get(MATRIX_ENV) else ["float32", "average_ternary_ef"]


@pytest.mark.parametrize("variant", STUDIED)
def test_inprocess_path_ends_bit_identical_to_the_system(reference, tiny_dataset, variant):
    settings = {**SETTINGS, **VARIANTS[variant], "workers": 3}
    config = parse_config(settings)
    weights = inprocess.train(config, trainer.dataset(str(tiny_dataset)))
    assert np.array_equal(weights, reference(settings))


def test_inprocess_run_reports_each_epoch_and_ends_on_its_last_evaluation(tiny_dataset):
    config = parse_config({**SETTINGS, "transport": "ternary_ef"})
    data = trainer.dataset(str(tiny_dataset))
    result = inprocess.run(config, data, val_samples=32, eval_every=0)
    per_epoch = trainer.rounds_per_epoch(config, trainer.train_size(config, data))
    assert [p["round"] for p in result["points"]] == [per_epoch - 1, 2 * per_epoch - 1]
    assert result["samples_seen"] == 2 * per_epoch * config.batch_size
    # The final accuracy is the evaluation of the final weights, recomputed here.
    _, accuracy = inprocess.evaluate(config, data, inprocess.train(config, data), 32)
    assert result["final_accuracy"] == accuracy
