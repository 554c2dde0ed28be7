"""What the planner can price and what it may recommend: the recipes (transport, mode, local steps,
global batch) that ``lambdatrain plan`` evaluates by default, and ``EVIDENCE``, the table of which
recipes' accuracy has been measured. The transports themselves (how a worker's result travels,
and its size) are lambdatrain/planning/transports.py's.

Priced is not recommended: ``lambdatrain plan --recommend`` considers only recipes that
``EVIDENCE`` backs with a measured gap to float32 (``backing``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

from lambdatrain.planning.transports import transport
from lambdatrain.protocol.config import MODES
from lambdatrain.protocol.errors import LambdaTrainError


@dataclass(frozen=True)
class Recipe:
    transport: str
    mode: str = "sync"
    local_steps: int = 1  # optimizer steps per worker per round (average mode only)
    batch_size: int = 128  # global batch of one optimizer step, over all workers

    def __post_init__(self) -> None:
        transport(self.transport)
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; known: {', '.join(MODES)}")
        if self.local_steps < 1 or (self.mode == "sync" and self.local_steps != 1):
            raise ValueError(f"local_steps {self.local_steps}: must be 1 in sync mode and at least 1 in average")
        if self.batch_size < 1:
            raise ValueError(f"batch_size {self.batch_size}: must be at least 1")

    @property
    def label(self) -> str:
        steps = f" K={self.local_steps}" if self.mode == "average" else ""
        return f"{self.transport} {self.mode}{steps}, batch {self.batch_size}"


# The recipes `lambdatrain plan` evaluates when nothing narrows it, defined here only. Batch 128 is
# the training default (its accuracy is the one docs/benchmarks.md measures); the 16-bit
# transports are the ones the 16-bit study compared; local SGD with K = 4 and 16 and the two
# compressed codecs are issue 14's candidates for many workers. Which of them keeps accuracy is
# not decided here: a recipe in this list is priced; EVIDENCE below decides what is recommended.
# Batch 2048 is issue 14's large-batch recipe for many workers: 32 images per worker at N = 64 (the
# batch-norm batch of float32 sync at N = 4), a sixteenth of the rounds per epoch; its study runs
# the training default's rate scaled with the batch (0.02 x 16) after one epoch of warm-up. Batches
# 256, 512 and 1024 with ternary_ef are the nearer steps: 4, 8 and 16 images per worker at N = 64.
RECIPES: tuple[Recipe, ...] = (
    Recipe("float32"),
    Recipe("float16"),
    Recipe("bfloat16"),
    Recipe("float32", "average", 4),
    Recipe("float16", "average", 4),
    Recipe("float16", "average", 16),
    Recipe("ternary_ef"),
    Recipe("sign_ef"),
    Recipe("ternary_ef", "average", 4),
    Recipe("ternary_ef", "average", 16),
    Recipe("ternary_ef", batch_size=256),
    Recipe("ternary_ef", batch_size=512),
    Recipe("ternary_ef", batch_size=1024),
    Recipe("float32", batch_size=2048),
    Recipe("ternary_ef", batch_size=2048),
)


def narrow(recipes: Iterable[Recipe], *, transports: Iterable[str] | None = None, modes: Iterable[str] | None = None,
           local_steps: Iterable[int] | None = None, batch_size: int | None = None) -> list[Recipe]:
    """The recipes whose transport, mode and local steps are among those given (None: any), each
    at ``batch_size`` when given; a name that is no transport or mode is an error, as is an
    empty result."""
    transports = None if transports is None else {transport(t).name for t in transports}
    if modes is not None and (unknown := set(modes) - set(MODES)):
        raise ValueError(f"unknown mode {sorted(unknown)[0]!r}; known: {', '.join(MODES)}")
    steps = None if local_steps is None else set(local_steps)
    recipes = list(recipes)
    kept = [r for r in recipes if (transports is None or r.transport in transports)
            and (modes is None or r.mode in modes) and (steps is None or r.local_steps in steps)]
    if not kept:
        raise ValueError("no recipe matches; known: " + "; ".join(r.label for r in recipes))
    if batch_size is None:
        return kept
    return list(dict.fromkeys(replace(r, batch_size=batch_size) for r in kept))  # recipes apart only by batch merge


class NoBackedRecipe(LambdaTrainError):
    """No configuration of a recipe whose accuracy has been measured fits the budget."""


# A measured recipe may trail float32 by at most this much more than float32 trails itself (the
# rounding control's gap): issue 14's rule for what the planner recommends.
TOLERANCE_PP = 1.0


@dataclass(frozen=True)
class Evidence:
    """One measurement of a recipe's accuracy: its gap to float32 on the same seeds, in points."""

    source: str  # the runs file (or document) that holds the runs
    command: str  # what reproduces the numbers from it
    gap_pp: float  # mean final-accuracy gap to the float32 run of the same seed, percentage points
    se_pp: float | None  # standard error of that mean; None for float32 itself (the reference)
    control_gap_pp: float  # float32 against itself (the rounding control) in the same study
    control_se_pp: float
    batch_size: int  # global batch of the study: it backs the recipe up to this batch
    conditions: str  # the rest of the study's setting, said with the recommendation
    # Workers of the study. A float transport's sync step does not depend on N (one step on the
    # global batch; each worker's rounding is tiny and unbiased), so such a measurement backs any N.
    # It backs up to this many where each worker carries state of its own: local SGD's workers
    # drift apart more the more there are, and a codec's workers each compress their share with
    # their own residual, so N workers hold N residuals, each fed a noisier gradient (a smaller
    # share of the batch) and each paid back later.
    workers: int
    # The float32 reference runs' settings in the runs file, all but the seed: from them a test
    # finds every run of the study and recomputes the gaps (tests/unit/test_bench_convergence.py).
    reference: Mapping[str, Any] = field(default_factory=dict)
    # What the recipe's runs set apart from the reference's besides the transport, mode and local
    # steps (a larger batch, its learning rate and warm-up): empty where the study compares the
    # transport alone. The control is float32 with these settings on two threads, against float32
    # with these settings: the recipe's own noise floor.
    variant: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shown(self) -> bool:
        """The gap is within TOLERANCE_PP of float32's own (the control's), or better."""
        return self.gap_pp >= self.control_gap_pp - TOLERANCE_PP

    def describe(self) -> str:
        """One line: the gap and its conditions; ``source`` and ``command`` say where it comes from."""
        gap = "the reference" if self.se_pp is None else f"gap {self.gap_pp:+.2f} pp (se {self.se_pp:.2f})"
        return (f"{gap}, float32 against itself {self.control_gap_pp:+.2f} pp (se {self.control_se_pp:.2f}); "
                f"{self.conditions}, batch {self.batch_size}")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "shown": self.shown, "summary": self.describe()}


# docs/benchmarks.md section 3 "Convergence": vgg19_cifar width 0.125, 2 workers, global batch 256,
# 7 seeds, 5 epochs of 8,000 samples, lr 0.05 cosine; the control is float32 with two threads.
# tests/unit/test_bench_convergence.py recomputes every gap below from the runs file.
_STUDY = {"model": "vgg19_cifar", "width": 0.125, "micro_batch": 64, "lr": 0.05, "lr_schedule": "cosine",
          "mode": "sync", "transport": "float32", "eval_every": 0}
_CONVERGENCE = dict(
    source="docs/results/convergence-5ep.jsonl (docs/benchmarks.md, 3. Convergence)",
    command="python -m bench.convergence --seeds 0,1,2,3,4,5,6 --epochs 5 --samples 8000 --val-samples 5000 "
            "--eval-every 0 --no-average --control --runs-file docs/results/convergence-5ep.jsonl",
    control_gap_pp=-1.04, control_se_pp=0.82, batch_size=256, workers=2,
    conditions="7 seeds, vgg19_cifar width 0.125, 2 workers",
    reference={**_STUDY, "workers": 2, "batch_size": 256, "epochs": 5, "max_train_samples": 8000,
               "val_samples": 5000})

# docs/benchmarks.md section 3 "Many workers: a large batch at N = 64": the whole 45,000-image split,
# 5 epochs, width 0.125, in process; the reference is the training default's recipe (float32 sync,
# batch 128, lr 0.02 cosine) at 4 workers, the recipes run at 64 workers and batch 2048 with the
# rate scaled with the batch after one epoch of warm-up (the variant); the control is float32 with
# the variant on two threads. tests/unit/test_bench_convergence.py recomputes the gaps below.
_LARGE_BATCH = dict(
    source="docs/results/convergence-large-batch.jsonl (docs/benchmarks.md, 3. Convergence, Many workers)",
    command="python -m bench.convergence --in-process --workers 64 --batch-size 2048 --lr 0.32 --warmup-epochs 1 "
            "--samples 45000 --epochs 5 --val-samples 5000 --eval-every 0 --no-average --control "
            "--transports float32,ternary_ef --baseline 4:128:0.02 --seeds 0,1,2,3,4,5,6 "
            "--runs-file docs/results/convergence-large-batch.jsonl",
    control_gap_pp=-5.26, control_se_pp=2.42, batch_size=2048, workers=64,
    conditions="7 seeds, vgg19_cifar width 0.125, 64 workers, 5 epochs of 45,000 images, lr 0.32 after 1 epoch "
               "of warm-up, against float32 at batch 128 and lr 0.02 on 4 workers",
    reference={**_STUDY, "workers": 4, "batch_size": 128, "lr": 0.02, "epochs": 5, "max_train_samples": 45000,
               "val_samples": 5000, "runner": "in-process"},
    variant={"workers": 64, "batch_size": 2048, "lr": 0.32, "warmup_epochs": 1.0})

# docs/benchmarks.md section 3 "Many workers": the whole 45,000-image split, 1 epoch, width 0.125,
# in process, 64 workers at the training default's batch 128 (2 images per worker), lr 0.05 cosine;
# the control is float32 on two threads. tests/unit/test_bench_convergence.py recomputes the gaps below.
_MANY_WORKERS = dict(
    source="docs/results/convergence-64w.jsonl (docs/benchmarks.md, 3. Convergence, Many workers)",
    command="python -m bench.convergence --in-process --workers 64 --batch-size 128 --samples 45000 --epochs 1 "
            "--val-samples 5000 --eval-every 0 --no-average --control --transports float32,ternary_ef "
            "--seeds 0,1,2,3,4,5,6,7,8,9,10,11,12,13 --runs-file docs/results/convergence-64w.jsonl",
    control_gap_pp=-1.24, control_se_pp=0.66, batch_size=128, workers=64,
    conditions="14 seeds, vgg19_cifar width 0.125, 64 workers, 1 epoch of 45,000 images",
    reference={**_STUDY, "workers": 64, "batch_size": 128, "epochs": 1, "max_train_samples": 45000,
               "val_samples": 5000, "runner": "in-process"})


def _many_workers_at(batch: int, lr: float, control_gap_pp: float, control_se_pp: float,
                     warmup: float = 0.0) -> dict[str, Any]:
    """docs/benchmarks.md section 3 "Many workers: batch 256 and 512 at N = 64": _MANY_WORKERS's
    study at ``batch`` and rate ``lr`` (after ``warmup`` epochs of warm-up; the variant), against
    that study's float32 at batch 128 (7 of its seeds); the control is float32 with the variant on
    two threads."""
    warm = f" --warmup-epochs {warmup}" if warmup else ""
    return dict(
        source=_MANY_WORKERS["source"],
        command=f"python -m bench.convergence --in-process --workers 64 --batch-size {batch} --lr {lr}{warm} --samples "
                "45000 --epochs 1 --val-samples 5000 --eval-every 0 --no-average --control --transports "
                "float32,ternary_ef --baseline 64:128:0.05 --seeds 0,1,2,3,4,5,6 "
                "--runs-file docs/results/convergence-64w.jsonl",
        control_gap_pp=control_gap_pp, control_se_pp=control_se_pp, batch_size=batch, workers=64,
        conditions=f"7 seeds, vgg19_cifar width 0.125, 64 workers, 1 epoch of 45,000 images, lr {lr}"
                   f"{f' after {warmup} epochs of warm-up' if warmup else ''}, against float32 at batch 128 and "
                   "lr 0.05 on 64 workers", reference=_MANY_WORKERS["reference"],
        variant={"batch_size": batch, "lr": lr, **({"warmup_epochs": warmup} if warmup else {})})


_MANY_WORKERS_256, _MANY_WORKERS_512 = _many_workers_at(256, 0.1, -0.93, 0.63), _many_workers_at(512, 0.2, 0.25, 0.64)
_MANY_WORKERS_512_WARM = _many_workers_at(512, 0.2, -0.57, 0.64, warmup=0.25)
_MANY_WORKERS_512_RATE = _many_workers_at(512, 0.1, 0.38, 0.71)  # batch 512 at batch 256's rate
_MANY_WORKERS_1024 = _many_workers_at(1024, 0.1, 0.08, 0.69)  # and batch 1,024 at it

# The one place to record a measurement: (transport, mode, local_steps) -> its studies, each at its
# own global batch; none for "not measured" (never recommended). Add a study when its runs are stored.
EVIDENCE: dict[tuple[str, str, int], tuple[Evidence, ...]] = {
    ("float32", "sync", 1): (Evidence(gap_pp=0.0, se_pp=None, **_CONVERGENCE),
                             Evidence(gap_pp=5.52, se_pp=0.37, **_MANY_WORKERS_256),
                             Evidence(gap_pp=3.84, se_pp=0.88, **_MANY_WORKERS_512),
                             Evidence(gap_pp=3.30, se_pp=0.93, **_MANY_WORKERS_512_WARM),
                             Evidence(gap_pp=4.66, se_pp=0.83, **_MANY_WORKERS_512_RATE),
                             Evidence(gap_pp=-0.81, se_pp=1.18, **_MANY_WORKERS_1024),
                             Evidence(gap_pp=-18.04, se_pp=1.04, **_LARGE_BATCH)),  # measured, not shown
    ("float16", "sync", 1): (Evidence(gap_pp=-0.17, se_pp=0.93, **_CONVERGENCE),),
    ("bfloat16", "sync", 1): (Evidence(gap_pp=-0.93, se_pp=0.71, **_CONVERGENCE),),
    # One seed at N = 2 and two at N = 64 (-14.42 pp, docs/benchmarks.md "Many workers"): looks, not gaps.
    ("float32", "average", 4): (),
    ("float16", "average", 4): (),
    ("float16", "average", 16): (),
    # Shown on 2 workers at batch 256, and on 64 at batch 256 with the rate doubled (lr 0.1) and at
    # 512 and 1024 with that same rate; short on 64 at batch 128 (2 images per residual), at 512
    # with the rate doubled again (lr 0.2, with or without a warm-up) and at 2048: evidence_for says
    # which speaks for which N (at batch 512 the shown study of the three backs it).
    ("ternary_ef", "sync", 1): (Evidence(gap_pp=-1.25, se_pp=0.75, **_CONVERGENCE),
                                Evidence(gap_pp=-2.89, se_pp=0.37, **_MANY_WORKERS),  # measured, not shown
                                Evidence(gap_pp=2.81, se_pp=1.10, **_MANY_WORKERS_256),
                                Evidence(gap_pp=-3.94, se_pp=2.42, **_MANY_WORKERS_512),  # measured, not shown
                                Evidence(gap_pp=-7.02, se_pp=1.96, **_MANY_WORKERS_512_WARM),  # measured, not shown
                                Evidence(gap_pp=2.88, se_pp=0.96, **_MANY_WORKERS_512_RATE),
                                Evidence(gap_pp=-0.37, se_pp=0.94, **_MANY_WORKERS_1024),
                                Evidence(gap_pp=-36.79, se_pp=3.64, **_LARGE_BATCH)),  # measured, not shown
    ("sign_ef", "sync", 1): (Evidence(gap_pp=-12.72, se_pp=1.57, **_CONVERGENCE),),  # measured, not shown
    # Two seeds at N = 64 and batch 128 (docs/benchmarks.md, "Many workers"; docs/results/convergence-64w.jsonl):
    # -15.47 pp (K = 4) and -20.01 pp (K = 16) against float32 sync, whose control is -2.76 pp. Far
    # short already, but two seeds are not the seven a row needs: unmeasured, never recommended.
    ("ternary_ef", "average", 4): (),
    ("ternary_ef", "average", 16): (),
}


def carries_own_state(transport_name: str, mode: str) -> bool:
    """Each worker carries state of its own (local SGD's walk, a codec's residual): a study then
    speaks only up to its workers (``Evidence.workers``)."""
    return mode == "average" or transport(transport_name).codec is not None


def evidence_for(r: Recipe, workers: int) -> Evidence | None:
    """The study that speaks for recipe ``r`` on ``workers`` workers, of its transport, mode and
    local steps. A study covers ``r`` when it was at least as hard: a global batch at least ``r``'s
    and, where each worker carries state of its own (``carries_own_state``), at least ``workers``
    workers. Of those, the nearest speak (no other covering study is at most as far in batch and,
    with per-worker state, in workers); a shown one backs ``r`` (smallest batch, then fewest
    workers). Else the verdict is the nearest batch's: the study at the smallest batch at least
    ``r``'s on the fewest workers at least ``workers`` (short), or None: not measured. So a large
    batch's verdict does not stand in for a nearer study that did not cover ``workers``; a short
    study on more workers does not overrule a shown one on as few at a larger batch; and a shown
    study at a larger batch (its rate scaled) does not overrule a short one at ``r``'s batch."""
    own_state = carries_own_state(r.transport, r.mode)
    studies = [e for e in EVIDENCE.get((r.transport, r.mode, r.local_steps), ()) if e.batch_size >= r.batch_size]
    covering = [e for e in studies if not own_state or e.workers >= workers]

    def reach(e: Evidence) -> tuple[int, int]:
        return e.batch_size, e.workers if own_state else 0

    def farther(e: Evidence, o: Evidence) -> bool:  # o is at most as far as e in every respect, nearer in one
        return reach(o) != reach(e) and all(a <= b for a, b in zip(reach(o), reach(e)))

    nearest = [e for e in covering if not any(farther(e, o) for o in covering)]
    shown = [e for e in nearest if e.shown]
    if shown:
        return min(shown, key=lambda e: (e.batch_size, e.workers))
    smallest = min((e.batch_size for e in studies), default=None)
    return min((e for e in covering if e.batch_size == smallest), key=lambda e: e.workers, default=None)


def backing(r: Recipe, workers: int) -> Evidence | None:
    """The measurement that backs recipe ``r`` on ``workers`` workers: the study ``evidence_for``
    picks, if its gap is shown (``Evidence.shown``). None: not backed."""
    evidence = evidence_for(r, workers)
    return evidence if evidence is not None and evidence.shown else None
