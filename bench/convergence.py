"""The convergence benchmark: validation accuracy against wall time and samples seen, for sync and
average (local SGD) modes and for float32 against 16-bit worker results.

    python -m bench.convergence [--workers 2] [--samples 4000] [--epochs 1] [--seeds 0,1,2]
                                [--val-samples 1000] [--eval-every 5] [--lr 0.05] [--lr-schedule cosine]
                                [--warmup-epochs 0]
                                [--runs-file runs.jsonl] [--no-average] [--control]
    python -m bench.convergence --divergence 30 [--seeds 0]
    python -m bench.convergence --in-process --workers 64 --batch-size 128 --samples 45000 --epochs 1
                                --local-sgd ternary_ef:4,ternary_ef:16 --no-average --control ...
    python -m bench.convergence --in-process --workers 64 --batch-size 2048 --lr 0.32 --warmup-epochs 1
                                --baseline 4:128:0.02 --transports float32,ternary_ef --control ...

Every run is ``ops.local_train.train`` on the first K training samples of the CIFAR-10 JPEG tarball with
vgg19_cifar at width 0.125, validation on the first ``--val-samples`` validation images, evaluated
every few rounds so each run gives several points; SGD at ``--lr`` with a cosine schedule by
default, so every run ends annealed, not mid-swing. Sync runs use float32, bfloat16 and float16
transport for every seed; model averaging runs once (the first seed).

Why seeds: a run is deterministic, but two runs whose gradients differ by rounding diverge
chaotically, so one pair of runs says little about a 0.5-point goal (a constant rate leaves each
run's accuracy swinging by points between evaluations; annealing the rate to 0 ends every run
settled, which shrinks the pair-to-pair spread). For every seed the 16-bit run
is compared with the float32 run of the same seed at equal samples (same rounds, same data order);
the report gives each gap (at the last evaluation, and averaged over the last three), their mean
and its standard error, and the float32 runs' own spread across seeds. ``transport_error`` measures
the cause directly: the relative L2 error that 16-bit encoding adds to a real gradient of the model.

``--control`` adds, for every seed, the same float32 run with two threads per worker instead of
one: its gradients differ from the one-thread run's only in the order of float32 additions
(about 2e-6 relative, against 2e-4 for float16 and 2e-3 for bfloat16), so its gap to float32 is
the recipe's own noise floor for a paired comparison. A 16-bit gap no wider than the control's is
rounding sending two runs apart, not 16-bit transport costing accuracy.

``--divergence R`` shows that mechanism instead of accuracy: for the first seed it runs float32, the
control and both 16-bit transports for R rounds, keeping every round's weights, and reports each
one's relative L2 distance from the float32 weights after every round.

Deciding a 0.5-point gap takes dozens of seeds, more than one sitting: ``--runs-file`` keeps every
finished run as a JSON line, and a later invocation reuses the runs there whose settings equal its
own (same seed, transport, samples, rate, ...) and trains only the missing ones, so seeds pool
across invocations and an interrupted benchmark resumes where it stopped.

``--local-sgd T:K,...`` adds, for every seed, a model-averaging run with transport T and K local
steps (the recipes the planner prices for many workers), compared with float32 sync at the end of
the same epochs (their evaluations fall at other sample counts, so only the final gap is paired).
``--in-process`` trains each run with bench/inprocess.py instead of the local stack: the system's
arithmetic without its protocol, bit-identical to it (tests/faults/test_inprocess_equivalence.py),
which is how 64 workers fit on this machine; its runs are marked ``"runner": "in-process"``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import add_data_args, emit, in_child, int_list, log, machine, prepared_dataset
from lambdatrain.protocol.config import LR_SCHEDULES
from lambdatrain.protocol.config import TRANSPORTS as ALL_TRANSPORTS

TRANSPORTS = ("float32", "bfloat16", "float16")
AVERAGE = {"mode": "average", "local_steps": 4, "transport": "float32"}
# The rounding control: float32 whose worker gradients come from two threads (a different float32
# summation order). "worker_threads" is the benchmark's, not a start setting: it sizes the worker.
CONTROL = "sync-float32-2threads"
CONTROL_RUN = {"mode": "sync", "transport": "float32", "worker_threads": 2}
# With --baseline, float32 sync at the baseline's workers, batch and rate: what a larger-batch
# recipe (its float32 run, its transports, its control) is also compared with, at the end.
BASELINE = "baseline-float32"
TAIL = 3  # evaluations averaged at the end of a run
BATCH = 256  # global batch: samples per round


def transport_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(["float32", *(t.strip() for t in text.split(",") if t.strip())]))
    unknown = [t for t in names if t not in ALL_TRANSPORTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown transport {unknown[0]!r}; known: {', '.join(ALL_TRANSPORTS)}")
    return names


def local_sgd_list(text: str) -> tuple[tuple[str, int], ...]:
    """``T:K,...``: model-averaging recipes, each a transport and its local steps."""
    recipes = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, _, steps = item.partition(":")
        if name not in ALL_TRANSPORTS:
            raise argparse.ArgumentTypeError(f"unknown transport {name!r}; known: {', '.join(ALL_TRANSPORTS)}")
        if not steps.isdigit() or int(steps) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: local steps must be a whole number of at least 1 (T:K)")
        recipes.append((name, int(steps)))
    return tuple(dict.fromkeys(recipes))


def local_sgd_name(transport: str, steps: int) -> str:
    return f"average{steps}-{transport}"


def baseline_spec(text: str) -> dict[str, Any]:
    """``N:B:LR``: the float32 sync recipe a larger-batch study is measured against (its workers,
    global batch and rate, without warm-up), as the settings it overrides."""
    parts = text.split(":")
    try:
        workers, batch, lr = int(parts[0]), int(parts[1]), float(parts[2])
        if len(parts) != 3 or workers < 1 or batch < workers or not lr > 0:
            raise ValueError
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r}: want WORKERS:BATCH:LR, for example 4:128:0.02, with a batch of "
                                         "at least the workers and a positive rate") from None
    return {"workers": workers, "batch_size": batch, "lr": lr, "warmup_epochs": None}


def runs_for(seeds: list[int], average: bool = True, control: bool = False,
             transports: tuple[str, ...] = TRANSPORTS, local_sgd: tuple[tuple[str, int], ...] = (),
             baseline: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    runs = []
    for seed in seeds:  # seed by seed, so an interrupted benchmark leaves whole seeds behind
        runs += [(f"{BASELINE}-seed{seed}", {**baseline, "mode": "sync", "transport": "float32", "seed": seed})
                 ] if baseline else []
        runs += [(f"sync-{t}-seed{seed}", {"mode": "sync", "transport": t, "seed": seed}) for t in transports]
        runs += [(f"{CONTROL}-seed{seed}", {**CONTROL_RUN, "seed": seed})] if control else []
        runs += [(f"{local_sgd_name(t, k)}-seed{seed}", {"mode": "average", "local_steps": k, "transport": t,
                                                         "seed": seed}) for t, k in local_sgd]
    # The one look at model averaging, evaluated every round (a curve, not a gap).
    look = [(f"average4-float32-seed{seeds[0]}", {**AVERAGE, "eval_every": 1, "seed": seeds[0]})]
    return runs + (look if average and (AVERAGE["transport"], AVERAGE["local_steps"]) not in local_sgd else [])


def settings_for(args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    """The start event's settings of one run: what identifies it in a runs file."""
    runner = {"runner": "in-process"} if args.in_process else {}
    # Named only when used, so the runs stored before the flag existed keep matching their settings.
    warmup = {"warmup_epochs": args.warmup_epochs} if args.warmup_epochs else {}
    settings = {"workers": args.workers, "model": "vgg19_cifar", "width": 0.125, "epochs": args.epochs,
                "batch_size": args.batch_size, "micro_batch": 64, "max_train_samples": args.samples,
                "lr": args.lr, "lr_schedule": args.lr_schedule,
                "val_samples": args.val_samples, "eval_every": args.eval_every, **warmup, **runner, **extra}
    return {k: v for k, v in settings.items() if v is not None}  # None: a setting the run leaves out


def load_runs(path: Path | None) -> list[dict[str, Any]]:
    """The finished runs a runs file holds (one JSON object a line); a missing file holds none."""
    if path is None or not path.exists():
        return []
    runs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                entry = json.loads(line)
            except ValueError as e:
                raise SystemExit(f"{path}:{n}: not JSON ({e})") from None
            missing = sorted({"settings", "points", "final_accuracy"} - set(entry if isinstance(entry, dict) else ()))
            if missing:
                raise SystemExit(f"{path}:{n}: not a finished run (no {', '.join(missing)})")
            runs.append(entry)
    return runs


def run(prepared: Path, out: Path, args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    from lambdatrain.local.stack import LocalStackConfig
    from lambdatrain.ops.local_train import TrainRequest, train
    from lambdatrain.protocol.limits import MB_PER_VCPU

    settings = settings_for(args, extra)
    start = {k: v for k, v in settings.items() if k != "worker_threads"}
    # The local stack gives a worker one thread per 1,769 MB, as Lambda gives a vCPU. Workers with
    # more threads run fewer at a time: oversubscribed cores made the control 2x slower here, and
    # how many run at once changes no number a worker computes.
    threads = settings.get("worker_threads", 1)
    stack = LocalStackConfig(state_dir=out / "stack", worker_memory_mb=MB_PER_VCPU * threads)
    if threads > 1:
        stack.worker_concurrency = max(1, (os.cpu_count() or 1) // threads)
    started = time.time()
    summary = train(TrainRequest(data=prepared, out=out, settings=start, stack=stack))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    clock = 0.0  # seconds of rounds (fan-out to commit): wall time without the stack's start-up
    points = []
    for m in metrics:
        clock += m["round_s"]
        if "val_accuracy" in m:
            points.append({"round": m["round"], "samples_seen": m["samples_seen"], "train_s": round(clock, 2),
                           "val_accuracy": m["val_accuracy"], "val_loss": m["val_loss"]})
    return {"settings": settings, "points": points, "wall_s": time.time() - started, "run_id": summary["run_id"],
            "final_accuracy": summary["val_accuracy"], "samples_seen": summary["samples_seen"]}


def run_in_process(prepared: Path, args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    """One run with bench/inprocess.py, in this (child) process, with the worker's threads."""
    import torch

    from bench import inprocess
    from lambdatrain.protocol.config import parse_config
    from lambdatrain.training import trainer

    settings = settings_for(args, extra)
    torch.set_num_threads(settings.get("worker_threads", 1))  # the local stack's one thread per 1,769 MB
    start = {k: v for k, v in settings.items() if k not in ("worker_threads", "runner")}
    started = time.time()
    result = inprocess.run(parse_config(start), trainer.dataset(str(prepared)), val_samples=args.val_samples,
                           eval_every=settings["eval_every"])
    return {"settings": settings, **result, "wall_s": time.time() - started}


def divergence(prepared: Path, tmp: Path, args: argparse.Namespace, rounds: int) -> dict[str, Any]:
    """Relative L2 distance of each variant's weights from float32's after every one of ``rounds``
    rounds (one epoch of exactly that many rounds, every round's weights kept)."""
    import numpy as np

    from lambdatrain.storage.efs import RunLayout

    short = argparse.Namespace(**{**vars(args), "epochs": 1, "samples": rounds * BATCH, "eval_every": 0})
    seed = args.seeds[0]
    weights = {}
    for name, extra in runs_for([seed], average=False, control=True):
        log(f"divergence: {name}, {rounds} rounds")
        out = tmp / f"divergence-{name}"
        result = in_child(run, prepared, out, short, {**extra, "keep_rounds": 0})
        paths = RunLayout(out / "stack" / "efs", result["run_id"])
        weights[name.removesuffix(f"-seed{seed}")] = [np.load(paths.weights(r), mmap_mode="r")
                                                     for r in range(1, rounds + 1)]
    base = weights.pop("sync-float32")
    distances = {name: [float(np.linalg.norm(w - b) / np.linalg.norm(b)) for w, b in zip(ws, base)]
                 for name, ws in weights.items()}
    for name, d in distances.items():
        log(f"divergence: {name}: " + " ".join(f"{x:.1e}" for x in d))
    return {"rounds": rounds, "seed": seed, "relative_l2_to_float32": distances}


def compare(results: dict[str, dict[str, Any]], seeds: list[int],
            transports: tuple[str, ...] = TRANSPORTS, local_sgd: tuple[tuple[str, int], ...] = ()) -> dict[str, Any]:
    """Each transport, local-SGD recipe and the control minus float32 accuracy (percentage points),
    per seed at equal samples, and over seeds."""
    out: dict[str, Any] = {}
    base_final = [results[f"sync-float32-seed{seed}"]["final_accuracy"] for seed in seeds]
    others = tuple(t for t in transports if t != "float32")
    variants = [f"sync-{t}" for t in others] + [local_sgd_name(t, k) for t, k in local_sgd]
    variants += [CONTROL] if all(f"{CONTROL}-seed{seed}" in results for seed in seeds) else []
    for variant in variants:
        finals, tails, max_gaps = [], [], []
        for seed in seeds:
            base = {p["samples_seen"]: p["val_accuracy"] for p in results[f"sync-float32-seed{seed}"]["points"]}
            run = results[f"{variant}-seed{seed}"]
            gaps = [100 * (p["val_accuracy"] - base[p["samples_seen"]]) for p in run["points"] if p["samples_seen"] in base]
            max_gaps.append(max(map(abs, gaps), default=0.0))
            # The last TAIL evaluations averaged: one evaluation swings by points from round to round.
            # A recipe evaluated at other sample counts (local steps) has only its final gap.
            tails += [statistics.fmean(gaps[-TAIL:])] if gaps else []
            finals.append(100 * (run["final_accuracy"] - results[f"sync-float32-seed{seed}"]["final_accuracy"]))
        out[variant] = {"final_gap_pp_per_seed": [round(g, 2) for g in finals], **_mean_and_sem("final_gap", finals)}
        if len(tails) == len(seeds):
            out[variant].update({"tail_gap_pp_per_seed": [round(g, 2) for g in tails],
                                 "max_abs_gap_pp_per_seed": [round(g, 2) for g in max_gaps],
                                 **_mean_and_sem("tail_gap", tails),
                                 "tail_mean_within_0.5pp": abs(statistics.fmean(tails)) <= 0.5})
    if all(f"{BASELINE}-seed{seed}" in results for seed in seeds):
        # A different batch is a different number of steps: only the final accuracies compare.
        for variant in ["sync-float32", *variants]:
            gaps = [100 * (results[f"{variant}-seed{seed}"]["final_accuracy"]
                           - results[f"{BASELINE}-seed{seed}"]["final_accuracy"]) for seed in seeds]
            out.setdefault(variant, {}).update({"final_gap_to_baseline_pp_per_seed": [round(g, 2) for g in gaps],
                                                **_mean_and_sem("final_gap_to_baseline", gaps)})
    if CONTROL in variants:
        # Both float32 runs of a seed are draws of the same recipe: their mean is a steadier baseline
        # (variance 1.5x one run's, not 2x, for each 16-bit gap).
        both = [statistics.fmean(results[f"{v}-seed{seed}"]["final_accuracy"] for v in ("sync-float32", CONTROL))
                for seed in seeds]
        for variant in [v for v in variants if v != CONTROL]:
            gaps = [100 * (results[f"{variant}-seed{seed}"]["final_accuracy"] - b) for seed, b in zip(seeds, both)]
            out[variant].update({"final_gap_to_both_float32_pp_per_seed": [round(g, 2) for g in gaps],
                                     **_mean_and_sem("final_gap_to_both_float32", gaps)})
    out["float32_final_accuracy_per_seed"] = [round(100 * a, 2) for a in base_final]
    out["float32_seed_spread_pp"] = round(100 * statistics.stdev(base_final), 2) if len(seeds) > 1 else None
    return out


def _mean_and_sem(name: str, values: list[float]) -> dict[str, float | None]:
    """Mean, the spread of single pairs (sd) and the mean's standard error (sem)."""
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {f"mean_{name}_pp": round(statistics.fmean(values), 2), f"{name}_sd_pp": None if sd is None else round(sd, 2),
            f"{name}_sem_pp": None if sd is None else round(sd / len(values) ** 0.5, 2)}


def transport_error(prepared: Path, samples: int = 64) -> dict[str, float]:
    """Relative L2 error 16-bit encoding adds to one real gradient of the benchmark's model."""
    import numpy as np
    import torch

    from lambdatrain.training.codec import decode_chunk, encode
    from lambdatrain.training.batches import to_tensor_batch
    from lambdatrain.training.data import open_prepared
    from lambdatrain.training.model import ModelSpec, build_model

    torch.manual_seed(0)
    data = open_prepared(prepared)
    model = build_model(ModelSpec("vgg19_cifar", 0.125, num_classes=len(data.classes)))
    x = to_tensor_batch(data.train_x[:samples], data.mean, data.std)
    y = torch.from_numpy(np.array(data.train_y[:samples], dtype=np.int64))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()]).numpy()
    return {t: float(np.linalg.norm(decode_chunk(encode(grad, t)) - grad) / np.linalg.norm(grad))
            for t in TRANSPORTS[1:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, workers=2, samples=4000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=5, help="rounds between evaluations (sync runs)")
    parser.add_argument("--seeds", type=int_list, default=[0], help="seeds; each runs every transport")
    parser.add_argument("--val-samples", type=int, default=1000, help="validation images per evaluation")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (peak)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine")
    parser.add_argument("--warmup-epochs", type=float, default=0.0,
                        help="linear warm-up of the rate over the first epochs (large batches)")
    parser.add_argument("--runs-file", type=Path, help="JSON lines of finished runs: those with equal settings are "
                        "reused, new ones appended (pools seeds over invocations, resumes an interrupted one)")
    parser.add_argument("--transports", type=transport_list, default=TRANSPORTS,
                        help=f"sync transports to run for every seed, float32 always among them (default: "
                             f"{','.join(TRANSPORTS)}; also: {', '.join(t for t in ALL_TRANSPORTS if t not in TRANSPORTS)})")
    parser.add_argument("--no-average", action="store_true", help="skip the model-averaging run")
    parser.add_argument("--control", action="store_true",
                        help="also a float32 run with two threads per worker for every seed (the rounding control)")
    parser.add_argument("--local-sgd", type=local_sgd_list, default=(), metavar="T:K,...",
                        help="also, for every seed, model averaging with transport T and K local steps")
    parser.add_argument("--batch-size", type=int, default=BATCH, help="global batch of one optimizer step")
    parser.add_argument("--baseline", type=baseline_spec, metavar="N:B:LR",
                        help="also, for every seed, float32 sync on N workers at batch B and rate LR, without "
                             "warm-up: the recipe a larger batch is measured against (final accuracies)")
    parser.add_argument("--in-process", action="store_true",
                        help="train with bench/inprocess.py (the system's arithmetic, no protocol): many workers")
    parser.add_argument("--divergence", type=int, default=0, metavar="ROUNDS",
                        help="instead: how far each variant's weights drift from float32's over ROUNDS rounds")
    args = parser.parse_args(argv)
    if args.divergence < 0:
        parser.error(f"--divergence must be a number of rounds, not {args.divergence}")
    if not 0 <= args.warmup_epochs <= args.epochs:
        parser.error(f"--warmup-epochs {args.warmup_epochs} must lie between 0 and --epochs ({args.epochs})")
    if args.batch_size < args.workers:
        parser.error(f"--batch-size {args.batch_size} gives each of the {args.workers} workers no sample")
    if args.divergence and (args.in_process or args.batch_size != BATCH):
        parser.error("--divergence runs the local stack at the study's batch; drop --in-process and --batch-size")
    started = time.time()
    prepared = prepared_dataset(args)
    if args.divergence:
        with tempfile.TemporaryDirectory(prefix="lt-bench-divergence-") as tmp:
            emit({"divergence": divergence(prepared, Path(tmp), args, args.divergence),
                  "wall_s": time.time() - started, "machine": machine()})
        return
    stored = load_runs(args.runs_file)
    results = {}
    with tempfile.TemporaryDirectory(prefix="lt-bench-convergence-") as tmp:
        for name, extra in runs_for(args.seeds, average=not args.no_average, control=args.control,
                                    transports=args.transports, local_sgd=args.local_sgd, baseline=args.baseline):
            wanted = settings_for(args, extra)
            reused = next((r for r in stored if r["settings"] == wanted), None)
            if reused is not None:
                log(f"{name}: reused from {args.runs_file}")
                results[name] = reused
                continue
            log(f"{name}: training")
            results[name] = (in_child(run_in_process, prepared, args, extra) if args.in_process
                             else in_child(run, prepared, Path(tmp) / name, args, extra))
            if args.runs_file is not None:  # appended as it finishes: an interruption loses one run at most
                with args.runs_file.open("a") as f:
                    f.write(json.dumps(results[name], sort_keys=True) + "\n")
            log(f"  {name}: " + ", ".join(f"{p['samples_seen']} samples/{p['train_s']:.0f} s -> "
                                          f"{p['val_accuracy']:.1%}" for p in results[name]["points"]))
    emit({"runs": results, "transport_vs_float32": compare(results, args.seeds, args.transports, args.local_sgd),
          "transport_error": in_child(transport_error, prepared), "wall_s": time.time() - started,
          "machine": machine()})


if __name__ == "__main__":
    main()
