"""The retention policy: which checkpoints and results a run keeps on EFS."""

from __future__ import annotations

import numpy as np

from lambdatrain.storage import efs as efs
from lambdatrain.storage.retention import prune, stale_checkpoints


def test_the_newest_rounds_and_every_epoch_boundary_are_kept():
    committed = list(range(0, 12))
    # 4 rounds per epoch, newest weights r11, keep 3: r9-r11 stay, and r0, r4, r8 (epoch boundaries).
    assert stale_checkpoints(committed, 11, 4, 3) == [1, 2, 3, 5, 6, 7]


def test_keep_rounds_zero_keeps_everything(tmp_path):
    paths = efs.RunLayout(tmp_path, "r")
    for r in range(4):
        efs.write_array(paths.weights(r), np.zeros(3, dtype=np.float32))
        efs.write_array(paths.result(r, 0), np.zeros(3, dtype=np.float32))
    assert stale_checkpoints(list(range(4)), 3, 1, 0) == []
    assert prune(paths, 2, 10, 0) == []
    assert paths.committed_rounds() == [0, 1, 2, 3] and paths.result(0, 0).exists()


def test_prune_deletes_old_results_and_stale_weights_but_never_metrics(tmp_path):
    paths = efs.RunLayout(tmp_path, "r")
    for r in range(6):
        efs.write_array(paths.weights(r), np.zeros(3, dtype=np.float32))
        efs.write_array(paths.optim(r), np.zeros(3, dtype=np.float32))
        efs.write_array(paths.result(r, 0), np.zeros(3, dtype=np.float32))
        efs.write_json(paths.metric(r), {"round": r})
    (paths.weights(1).parent / "r000001.npy").unlink()  # a crash between the data and its digest
    # The combiner prunes after every commit; round 4 committed last: r5 is the newest weights.
    deleted = [path for r in range(5) for path in prune(paths, r, 10, 2)]
    assert paths.committed_rounds() == [0, 4, 5]  # r0 is an epoch boundary
    assert all(not paths.optim(r).exists() for r in (1, 2, 3)) and paths.optim(4).exists()
    assert [r for r in range(6) if paths.result(r, 0).exists()] == [4, 5]  # only the committed round's and later
    assert all(paths.metric(r).exists() for r in range(6))
    assert efs.digest_path(paths.weights(1)) in deleted and not efs.digest_path(paths.weights(1)).exists()
    assert prune(paths, 4, 10, 2) == []  # idempotent


def test_a_folder_that_cannot_be_listed_prunes_nothing_and_raises_nothing(tmp_path, monkeypatch):
    paths = efs.RunLayout(tmp_path, "r")
    for r in range(3):
        efs.write_array(paths.result(r, 0), np.zeros(3, dtype=np.float32))

    def unreadable(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(paths.root), "iterdir", unreadable)
    assert prune(paths, 2, 10, 1) == []
    assert all(paths.result(r, 0).exists() for r in range(3))


def test_a_commit_inside_an_epoch_deletes_the_round_gone_stale_without_listing_the_checkpoints(tmp_path, monkeypatch):
    """The checkpoint folder keeps every epoch boundary, so listing it grows with the run: only
    the commit of an epoch boundary lists it, and that one also sweeps what earlier commits left."""
    paths = efs.RunLayout(tmp_path, "r")
    for r in range(9):
        efs.write_array(paths.weights(r), np.zeros(3, dtype=np.float32))
    listings = []
    listed = efs.RunLayout.checkpoint_rounds
    monkeypatch.setattr(efs.RunLayout, "checkpoint_rounds", lambda self: listings.append(1) or listed(self))
    # 4 rounds per epoch, keep 2. Round 6 commits: r7 is the newest weights and r5 has gone stale;
    # r1 and r2 were left by a combiner that crashed before pruning them.
    prune(paths, 6, 4, 2)
    assert listings == [] and paths.committed_rounds() == [0, 1, 2, 3, 4, 6, 7, 8]
    prune(paths, 7, 4, 2)  # r8, an epoch boundary: the one listing, and the sweep
    assert listings == [1] and paths.committed_rounds() == [0, 4, 7, 8]
