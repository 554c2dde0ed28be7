"""What a run keeps on EFS: the retention policy applied after every committed round.

Every round writes N worker results and a new copy of the weights and momentum; kept forever,
the CIFAR VGG19 (80 MB per file) with 16 workers would leave ~1.4 GB per round on EFS, over
500 GB per epoch, billed per GB-month. Nothing reads them again once the round that produced
or used them is committed, so the combiner that commits round r deletes:

* the worker results (and sharded-combine slices) of round r - 1: round r - 1 is committed and
  its results are never read again; round r's stay until the next commit, for inspection;
* the weights and momentum of rounds older than the newest ``keep_rounds``, except every epoch
  boundary (and round 0): those are the checkpoints a user may want to go back to. A compressed
  run's state in S3 (the workers' and combiner's residuals, its momentum and updates) follows the
  same rounds (``stale_state_rounds``; roles/claimed.py deletes them).

Each round's ``metric.json`` always stays (``resume`` rebuilds a lost ledger from them), as does
everything with ``keep_rounds = 0``. Weights that are kept fall back for each other: ``resume``
verifies the newest and falls back to the next intact one (rebuild.py).

Pruning runs after the commit and never fails it: a missing file is already pruned, and an
error is logged and left for the next commit's sweep, which also covers rounds a crashed
combiner did not get to.

What a commit looks at does not grow with the run: results in the last SWEEP round folders, and
the one checkpoint round that has just gone stale, found by name. Only a commit that publishes an
epoch boundary lists the checkpoint folder (which keeps every epoch boundary's files, so it grows
with the epochs) and deletes every stale round there: once an epoch, it catches up whatever a
crashed combiner or a failed delete left behind. (The listing once cost every commit a growing
readdir on EFS, while the stream may already be delivering the next round to this combiner.)
"""

from __future__ import annotations

from pathlib import Path

from lambdatrain.storage.efs import RunLayout, digest_path
from lambdatrain.logs import logger

SWEEP = 3  # rounds of results looked at behind the one being pruned: catches up after a crash


def stale_checkpoints(committed: list[int], newest: int, rounds_per_epoch: int, keep_rounds: int) -> list[int]:
    """Rounds among ``committed`` whose weights and momentum may go once ``newest`` exists."""
    if keep_rounds <= 0:
        return []
    return [r for r in committed
            if r <= newest - keep_rounds and r % rounds_per_epoch != 0]


def stale_state_rounds(committed_round: int, rounds_per_epoch: int, keep_rounds: int) -> list[int]:
    """Rounds whose state in S3 may go once ``committed_round`` commits: the rounds whose
    weights ``prune`` deletes, found without listing the bucket (the newest stale one and a sweep
    of SWEEP before it, for commits a crashed combiner did not prune after)."""
    if keep_rounds <= 0:
        return []
    newest = committed_round + 1
    candidates = range(max(1, newest - keep_rounds - SWEEP), newest - keep_rounds + 1)
    return stale_checkpoints(list(candidates), newest, rounds_per_epoch, keep_rounds)


def prune(paths: RunLayout, committed_round: int, rounds_per_epoch: int, keep_rounds: int) -> list[Path]:
    """Apply the policy after round ``committed_round`` committed; returns the files deleted."""
    if keep_rounds <= 0:
        return []
    doomed: list[Path] = []
    try:
        for r in range(max(0, committed_round - 1 - SWEEP), committed_round):
            folder = paths.round_dir(r)
            if folder.is_dir():
                doomed += [p for p in folder.iterdir() if p.name != paths.metric(r).name]
        newest = committed_round + 1  # the weights the commit published
        if newest % rounds_per_epoch == 0:
            looked_at = paths.checkpoint_rounds()
        else:
            looked_at = [newest - keep_rounds] if newest > keep_rounds else []
        for r in stale_checkpoints(looked_at, newest, rounds_per_epoch, keep_rounds):
            for path in (paths.weights(r), paths.optim(r)):
                doomed += [path, digest_path(path)]
    except OSError as exc:  # the round is committed and its successor must still start
        logger.warning("could not list files to prune", extra={"run": paths.run, "error": str(exc)})
        return []
    deleted = []
    for path in doomed:
        try:
            path.unlink()
            deleted.append(path)
        except FileNotFoundError:
            continue
        except OSError as exc:  # left for the next commit's sweep
            logger.warning("could not prune a file", extra={"path": str(path), "error": str(exc)})
    return deleted
