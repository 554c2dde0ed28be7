"""bench/convergence.py's bookkeeping: paired gaps at equal samples, and runs pooled through a runs file."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from bench import convergence



def argv(seeds: str = "0,1", *extra: str) -> list[str]:
    return ["--seeds", seeds, "--epochs", "1", "--samples", "512", "--val-samples", "100", "--eval-every", "1",
            *extra]


def fake_run(settings: dict, accuracies: list[float]) -> dict:
    points = [{"round": i + 1, "samples_seen": 256 * (i + 1), "train_s": float(i), "val_accuracy": a, "val_loss": 1.0}
              for i, a in enumerate(accuracies)]
    return {"settings": settings, "points": points, "final_accuracy": accuracies[-1], "wall_s": 1.0,
            "samples_seen": points[-1]["samples_seen"]}


@pytest.fixture
def trained(monkeypatch):
    """main() with training replaced: each run's accuracies follow from its seed and transport."""
    calls: list[str] = []
    base = {0: [0.20, 0.30, 0.40], 1: [0.25, 0.35, 0.45]}
    shift = {"float32": 0.0, "bfloat16": -0.01, "float16": 0.02, "ternary_ef": -0.02}

    def in_child(fn, *args):
        if fn is convergence.transport_error:
            return {"bfloat16": 0.002, "float16": 0.0002}
        args_ns, extra = args[-2:]  # the local stack's run also takes an output folder
        control = extra.get("worker_threads") == 2
        steps = extra.get("local_steps", 1)
        runner = "inprocess:" if fn is convergence.run_in_process else ""
        calls.append(f"{runner}{'control' if control else extra['transport']}{f'x{steps}' if steps > 1 else ''}"
                     f"-{extra['seed']}")
        baseline = 0.1 if "batch_size" in extra else 0.0  # --baseline's run: a smaller batch, more steps
        accuracies = [a + baseline + (0.005 if control else shift[extra["transport"]] - 0.01 * (steps - 1))
                      for a in base[extra["seed"]]]
        run = fake_run(convergence.settings_for(args_ns, extra), accuracies)
        for p in run["points"] if steps > 1 else []:  # K local steps a round: evaluations at other counts
            p["samples_seen"] -= 64
        return run

    monkeypatch.setattr(convergence, "in_child", in_child)
    monkeypatch.setattr("lambdatrain.training.data.resolve_dataset", lambda data, cache: data)
    return calls


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_gaps_are_taken_per_seed_at_equal_samples_and_averaged(trained, capsys):
    convergence.main(argv("0,1", "--no-average"))
    report = last_json(capsys)["transport_vs_float32"]
    assert report["sync-bfloat16"]["final_gap_pp_per_seed"] == [-1.0, -1.0]
    assert report["sync-float16"]["tail_gap_pp_per_seed"] == [2.0, 2.0]
    assert report["sync-bfloat16"]["mean_final_gap_pp"] == -1.0 and report["sync-bfloat16"]["final_gap_sem_pp"] == 0.0
    assert report["float32_final_accuracy_per_seed"] == [40.0, 45.0]
    assert sorted(trained) == sorted(f"{t}-{s}" for t in convergence.TRANSPORTS for s in (0, 1))


def test_a_runs_file_reuses_runs_with_equal_settings_and_appends_only_the_new_ones(trained, capsys, tmp_path):
    runs_file = tmp_path / "runs.jsonl"
    convergence.main(argv("0", "--no-average", "--runs-file", str(runs_file)))
    assert len(runs_file.read_text().splitlines()) == 3
    trained.clear()

    convergence.main(argv("0,1", "--no-average", "--runs-file", str(runs_file)))
    assert sorted(trained) == ["bfloat16-1", "float16-1", "float32-1"]  # seed 0 came from the file
    assert len(runs_file.read_text().splitlines()) == 6
    assert last_json(capsys)["transport_vs_float32"]["float32_final_accuracy_per_seed"] == [40.0, 45.0]

    trained.clear()  # other settings (a different rate) are other runs: nothing is reused
    convergence.main(argv("0,1", "--no-average", "--runs-file", str(runs_file), "--lr", "0.1"))
    assert len(trained) == 6


def test_a_damaged_runs_file_stops_the_benchmark_with_the_line_that_is_wrong(trained, tmp_path):
    runs_file = tmp_path / "runs.jsonl"
    runs_file.write_text(json.dumps(fake_run({}, [0.1])) + "\n" + '{"settings": {}}\n')
    with pytest.raises(SystemExit, match=r"runs.jsonl:2: not a finished run \(no final_accuracy, points\)"):
        convergence.main(argv("0,1", "--runs-file", str(runs_file)))
    runs_file.write_text("{truncated\n")
    with pytest.raises(SystemExit, match=r"runs.jsonl:1: not JSON"):
        convergence.main(argv("0,1", "--runs-file", str(runs_file)))
    assert trained == []


def test_the_rounding_control_is_compared_with_float32_like_a_transport(trained, capsys):
    convergence.main(argv("0,1", "--no-average", "--control"))
    report = last_json(capsys)["transport_vs_float32"]
    assert sorted(c for c in trained if c.startswith("control")) == ["control-0", "control-1"]
    assert report[convergence.CONTROL]["final_gap_pp_per_seed"] == [0.5, 0.5]
    assert report[convergence.CONTROL]["final_gap_sd_pp"] == 0.0
    # bfloat16 ends 1 point below float32 and 1.5 below the control: 1.25 below their mean
    assert report["sync-bfloat16"]["final_gap_to_both_float32_pp_per_seed"] == [-1.25, -1.25]


def test_the_control_run_gives_each_worker_two_threads_and_starts_with_valid_settings(monkeypatch, tmp_path):
    seen = {}

    def train(request):
        seen["request"] = request
        (request.out / "metrics.jsonl").write_text(json.dumps({"round": 1, "round_s": 2.0, "samples_seen": 256,
                                                               "val_accuracy": 0.3, "val_loss": 1.9}) + "\n")
        return {"val_accuracy": 0.3, "samples_seen": 256, "run_id": "run-1"}

    monkeypatch.setattr("lambdatrain.ops.local_train.train", train)
    args = argparse.Namespace(workers=2, epochs=1, samples=512, lr=0.05, lr_schedule="cosine",
                              val_samples=100, eval_every=1, batch_size=convergence.BATCH, in_process=False,
                              warmup_epochs=0.0)
    (tmp_path / "out").mkdir()
    result = convergence.run(tmp_path, tmp_path / "out", args, {**convergence.CONTROL_RUN, "seed": 3})
    request = seen["request"]
    assert request.stack.worker_memory_mb == 2 * 1769  # two threads in the local stack, as two vCPUs on Lambda
    assert request.stack.worker_concurrency * 2 <= max(2, os.cpu_count() or 1)  # and no more threads than cores
    assert "worker_threads" not in request.settings and request.settings["transport"] == "float32"
    assert result["settings"]["worker_threads"] == 2  # it identifies the run in a runs file
    assert result["points"] == [{"round": 1, "samples_seen": 256, "train_s": 2.0, "val_accuracy": 0.3,
                                 "val_loss": 1.9}]


def test_divergence_measures_each_variants_distance_from_float32_after_every_round(monkeypatch, capsys, tmp_path):
    import numpy as np

    from lambdatrain.storage.efs import RunLayout

    offsets = {"float32": 0.0, "bfloat16": 1e-3, "float16": 1e-4}
    started = []

    def in_child(fn, prepared, out, args, extra):
        assert fn is convergence.run and extra["keep_rounds"] == 0  # every round's weights stay
        started.append((args.samples, args.epochs, extra.get("worker_threads", 1), extra["transport"]))
        offset = 1e-6 if extra.get("worker_threads") == 2 else offsets[extra["transport"]]
        paths = RunLayout(out / "stack" / "efs", "run-x")
        paths.weights(1).parent.mkdir(parents=True)
        for r in range(1, 4):
            np.save(paths.weights(r), np.full(8, 1.0 + r * offset, dtype=np.float32))
        return {"run_id": "run-x"}

    monkeypatch.setattr(convergence, "in_child", in_child)
    monkeypatch.setattr("lambdatrain.training.data.resolve_dataset", lambda data, cache: data)
    convergence.main(["--divergence", "3", "--seeds", "5"])
    report = last_json(capsys)["divergence"]
    assert report["rounds"] == 3 and report["seed"] == 5
    assert started[0] == (3 * convergence.BATCH, 1, 1, "float32")  # one epoch of exactly 3 rounds
    assert set(report["relative_l2_to_float32"]) == {convergence.CONTROL, "sync-bfloat16", "sync-float16"}
    assert np.allclose(report["relative_l2_to_float32"]["sync-bfloat16"], [1e-3, 2e-3, 3e-3], rtol=1e-3)
    assert np.allclose(report["relative_l2_to_float32"][convergence.CONTROL], [1e-6, 2e-6, 3e-6], rtol=0.2)


def test_a_baseline_recipe_runs_for_every_seed_and_every_run_is_compared_with_it_at_the_end(trained, capsys,
                                                                                              tmp_path):
    runs_file = tmp_path / "runs.jsonl"
    convergence.main(argv("0,1", "--no-average", "--control", "--transports", "float32,ternary_ef", "--workers", "8",
                          "--batch-size", "2048", "--lr", "0.32", "--warmup-epochs", "1", "--baseline", "4:128:0.02",
                          "--runs-file", str(runs_file)))
    assert trained == ["float32-0", "float32-0", "ternary_ef-0", "control-0",
                       "float32-1", "float32-1", "ternary_ef-1", "control-1"]
    compared = last_json(capsys)["transport_vs_float32"]
    assert compared["sync-float32"]["final_gap_to_baseline_pp_per_seed"] == [-10.0, -10.0]
    assert compared["sync-ternary_ef"]["mean_final_gap_to_baseline_pp"] == -12.0
    assert compared[convergence.CONTROL]["mean_final_gap_to_baseline_pp"] == -9.5
    assert compared["sync-ternary_ef"]["mean_final_gap_pp"] == -2.0  # and to float32 at its own batch, as before
    stored = [json.loads(line)["settings"] for line in runs_file.read_text().splitlines()]
    baseline = [s for s in stored if s["batch_size"] == 128]
    assert len(baseline) == 2 and all(s["workers"] == 4 and s["lr"] == 0.02 and "warmup_epochs" not in s
                                      for s in baseline)


@pytest.mark.parametrize("value", ["4:128", "4:2:0.1", "x:128:0.02", "4:128:0", "4:128:0.02:1"])
def test_a_bad_baseline_is_refused_in_one_line(value, capsys):
    with pytest.raises(SystemExit):
        convergence.main(["--baseline", value])
    assert "want WORKERS:BATCH:LR" in capsys.readouterr().err


def test_a_warm_up_is_part_of_a_runs_settings_only_when_used_and_never_longer_than_the_run(capsys):
    """Runs stored before --warmup-epochs existed must keep matching their settings in a runs file."""
    args = argparse.Namespace(workers=64, epochs=5, samples=45000, lr=0.32, lr_schedule="cosine", val_samples=5000,
                              eval_every=0, batch_size=2048, in_process=True, warmup_epochs=0.0)
    assert "warmup_epochs" not in convergence.settings_for(args, {})
    args.warmup_epochs = 1.0
    assert convergence.settings_for(args, {})["warmup_epochs"] == 1.0
    with pytest.raises(SystemExit):
        convergence.main(["--epochs", "1", "--warmup-epochs", "2"])
    assert "--warmup-epochs 2.0 must lie between 0 and --epochs (1)" in capsys.readouterr().err


def test_a_negative_number_of_divergence_rounds_is_refused():
    with pytest.raises(SystemExit):
        convergence.main(["--divergence", "-1"])


def test_the_planners_evidence_is_what_the_runs_file_holds():
    """Every measured gap in lambdatrain/planning/recipes.py EVIDENCE, recomputed from its runs file:
    the recipe's runs against the float32 reference runs of the same seeds, and the rounding
    control (float32 with the recipe's settings on two threads) against float32 with them."""
    import statistics
    from pathlib import Path

    from lambdatrain.planning.recipes import EVIDENCE

    root = Path(__file__).resolve().parents[2]
    checked = set()
    for (transport, mode, steps), studies in EVIDENCE.items():
        for evidence in studies:
            if evidence.se_pp is None:
                continue
            runs = convergence.load_runs(root / evidence.source.split()[0])
            reference = dict(evidence.reference)
            recipe = {**reference, **evidence.variant}

            def final(seed: int, settings: dict, **extra) -> float:
                wanted = {**settings, **extra, "seed": seed}
                (run,) = [r for r in runs if r["settings"] == wanted]
                return 100 * run["final_accuracy"]

            # The study's seeds: those its float32 runs with the recipe's settings hold (a study at
            # another batch may share a reference that more seeds hold).
            seeds = sorted({r["settings"]["seed"] for r in runs
                            if {**r["settings"], "seed": None} == {**recipe, "seed": None}})
            assert len(seeds) >= 7, (transport, mode, steps, evidence.batch_size)
            variant = {"transport": transport} if mode == "sync" else {"transport": transport, "mode": mode,
                                                                         "local_steps": steps}
            gaps = [final(seed, recipe, **variant) - final(seed, reference) for seed in seeds]
            control = [final(seed, recipe, worker_threads=2) - final(seed, recipe) for seed in seeds]
            assert evidence.gap_pp == pytest.approx(statistics.fmean(gaps), abs=0.005), transport
            assert evidence.se_pp == pytest.approx(statistics.stdev(gaps) / len(seeds) ** 0.5, abs=0.005), transport
            assert evidence.control_gap_pp == pytest.approx(statistics.fmean(control), abs=0.005)
            assert evidence.control_se_pp == pytest.approx(statistics.stdev(control) / len(seeds) ** 0.5, abs=0.005)
            assert evidence.batch_size == recipe["batch_size"] and evidence.workers == recipe["workers"]
            checked.add((transport, mode, steps, evidence.batch_size, evidence.workers))
    assert {("ternary_ef", "sync", 1, 256, 2), ("ternary_ef", "sync", 1, 128, 64), ("float32", "sync", 1, 2048, 64),
            ("ternary_ef", "sync", 1, 2048, 64), ("float32", "sync", 1, 256, 64),
            ("ternary_ef", "sync", 1, 256, 64), ("float32", "sync", 1, 512, 64),
            ("ternary_ef", "sync", 1, 512, 64), ("float32", "sync", 1, 1024, 64),
            ("ternary_ef", "sync", 1, 1024, 64)} <= checked
    assert len([e for e in EVIDENCE[("ternary_ef", "sync", 1)] if e.batch_size == 512]) >= 2  # with a warm-up too


def test_local_sgd_recipes_run_for_every_seed_and_compare_at_the_end_of_the_same_epochs(trained, capsys):
    convergence.main(argv("0,1", "--no-average", "--transports", "float32", "--local-sgd", "ternary_ef:4,float32:2"))
    report = last_json(capsys)["transport_vs_float32"]
    # ternary_ef is 2 points down, and each local step beyond the first 1 point more.
    assert report["average4-ternary_ef"]["final_gap_pp_per_seed"] == [-5.0, -5.0]
    assert report["average2-float32"]["mean_final_gap_pp"] == -1.0
    # Its evaluations fall at other sample counts: no pairs but the final one, so no tail gap.
    assert "tail_gap_pp_per_seed" not in report["average4-ternary_ef"]
    assert sorted(trained) == ["float32-0", "float32-1", "float32x2-0", "float32x2-1",
                               "ternary_efx4-0", "ternary_efx4-1"]


def test_in_process_runs_are_marked_and_never_stand_in_for_local_stack_runs(trained, capsys, tmp_path):
    runs_file = tmp_path / "runs.jsonl"
    convergence.main(argv("0", "--no-average", "--transports", "float32", "--runs-file", str(runs_file)))
    convergence.main(argv("0", "--no-average", "--transports", "float32", "--runs-file", str(runs_file),
                          "--in-process", "--workers", "64", "--batch-size", "128"))
    assert trained == ["float32-0", "inprocess:float32-0"]
    stored = [json.loads(line)["settings"] for line in runs_file.read_text().splitlines()]
    assert [s.get("runner") for s in stored] == [None, "in-process"]
    assert stored[1]["workers"] == 64 and stored[1]["batch_size"] == 128


@pytest.mark.parametrize("value, message", [("ternary:4", "unknown transport 'ternary'"),
                                            ("ternary_ef:0", "local steps must be a whole number")])
def test_a_bad_local_sgd_recipe_is_refused_in_one_line(value, message, capsys):
    with pytest.raises(SystemExit):
        convergence.main(argv("0", "--local-sgd", value))
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_global_batch_smaller_than_the_workers_is_refused(capsys):
    with pytest.raises(SystemExit):
        convergence.main(argv("0", "--workers", "64", "--batch-size", "32"))
    assert "gives each of the 64 workers no sample" in capsys.readouterr().err


def test_a_dataset_that_is_not_there_ends_the_benchmark_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        convergence.main(["--data", str(tmp_path / "missing.tar.gz"), "--cache-dir", str(tmp_path)])
    message = str(stopped.value.code)
    assert "dataset not found" in message and str(tmp_path / "missing.tar.gz") in message and "\n" not in message
