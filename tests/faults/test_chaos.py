"""Seeded random faults, many times over: every run must survive with the fault-free weights.

``LAMBDATRAIN_CHAOS_TRIALS`` raises the number of trials (docs/reliability.md reports a long run);
the summary line printed at the end is the figure recorded there.
"""

from __future__ import annotations

import os
import random

import numpy as np

from lambdatrain.roles.faults import POINTS
from lambdatrain.roles.settings import STARTER
from tests.faults.conftest import assert_survived, final_weights

CHAOS = {"workers": 3, "epochs": 1, "batch_size": 48, "max_train_samples": 144}  # over each variant's settings
TRIALS = int(os.environ.get("LAMBDATRAIN_CHAOS_TRIALS", "6"))


def _random_faults(rng: random.Random) -> str:
    entries = set()
    for _ in range(rng.randint(1, 4)):
        handler = rng.choice(["worker", "worker", "combiner", "starter"])
        entries.add(f"{handler}:{rng.choice(POINTS[handler])}:{rng.randint(1, 4)}")
    return ",".join(sorted(entries))


def test_random_faults_never_change_the_trained_model(make_system, reference, settings, capsys):
    chaos = {**settings, **CHAOS}
    expected = reference(chaos)
    injected = survived = lost_or_doubled = 0
    for trial in range(TRIALS):
        rng = random.Random(trial)
        system = make_system(faults=_random_faults(rng), duplicate=rng.random() < 0.5,
                             stream_duplicate_rate=rng.choice([0.0, 0.5]), seed=trial)
        run = None
        for attempt in range(3):  # the starter itself may die: its caller (or Lambda) retries
            try:
                run = system.invoke(STARTER, {"start": True, **chaos, "run": f"chaos-{trial}"})["run"]
                break
            except BaseException as exc:  # noqa: BLE001 - InjectedCrash is a BaseException
                assert "starter:" in str(exc)
        system.run_to_end(run)
        injected += len(system.crashes)
        metrics = system.ledger.metrics(run)
        lost_or_doubled += sum(m["samples"] != chaos["batch_size"] * chaos.get("local_steps", 1) for m in metrics)
        assert_survived(system, run, expected)
        survived += int(np.array_equal(final_weights(system, run), expected))
    with capsys.disabled():
        print(f"\nchaos: {TRIALS} runs, {injected} injected faults, {survived} survived bit-identical, "
              f"{lost_or_doubled} lost or doubled updates")
    assert survived == TRIALS and lost_or_doubled == 0
