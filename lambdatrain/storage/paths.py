"""Every path of a run on the shared file system (EFS): where each file of a run lives.

::

    <mount>/runs/<run>/config.json              the run's settings
    <mount>/runs/<run>/weights/r000012.npy      flat float32 weights at the start of round 12
    <mount>/runs/<run>/optim/r000012.npy        optimizer state (momentum) beside them (float transports;
                                                a compressed run's is in the stack's bucket, storage/state.py)
    <mount>/runs/<run>/rounds/r000012/w0003.npy worker 3's result for round 12
    <mount>/runs/<run>/rounds/r000012/metric.json what the combiner measured (copy of the ledger's)
    <mount>/runs/<run>/.../*.digest.json        sidecar: length and checksum of the file beside it
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lambdatrain.protocol.events import check_run_id


@dataclass(frozen=True)
class RunLayout:
    """The folder of one run; the run id is validated so no path can leave ``runs/``."""

    mount: Path
    run: str

    def __post_init__(self) -> None:
        check_run_id(self.run)

    @property
    def root(self) -> Path:
        return self.mount / "runs" / self.run

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    def weights(self, round_no: int) -> Path:
        return self.root / "weights" / f"r{round_no:06d}.npy"

    def optim(self, round_no: int) -> Path:
        return self.root / "optim" / f"r{round_no:06d}.npy"

    def round_dir(self, round_no: int) -> Path:
        return self.root / "rounds" / f"r{round_no:06d}"

    def result(self, round_no: int, worker: int) -> Path:
        return self.round_dir(round_no) / f"w{worker:04d}.npy"

    def metric(self, round_no: int) -> Path:
        return self.round_dir(round_no) / "metric.json"

    def shard(self, round_no: int, shard: int) -> Path:
        """A sharded combine's slice of the new weights (see sharding.py)."""
        return self.round_dir(round_no) / f"combined-s{shard:03d}.npy"

    def shard_optim(self, round_no: int, shard: int) -> Path:
        """The same slice of the new optimizer state."""
        return self.round_dir(round_no) / f"optim-s{shard:03d}.npy"

    def shard_update(self, round_no: int, shard: int) -> Path:
        """The same slice of a compressed run's update (the assembled whole goes to the bucket)."""
        return self.round_dir(round_no) / f"update-s{shard:03d}.npy"

    def checkpoint_rounds(self) -> list[int]:
        """Rounds with any weights or momentum file left, whole or not (retention sweeps them)."""
        return sorted({r for p in (self.weights(0), self.optim(0))
                       for r, _ in _round_files(p.parent, ".npy*")})

    def committed_rounds(self) -> list[int]:
        """Rounds whose starting weights exist with a digest, oldest first (for resume)."""
        return sorted(r for r, p in _round_files(self.weights(0).parent, ".npy") if digest_path(p).exists())


def _round_files(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    """(round, path) of the files ``r<6 digits><suffix>`` in folder (the names ``weights`` and
    ``optim`` give); none if the folder does not exist."""
    if not folder.is_dir():
        return []
    return [(int(p.name[1:7]), p) for p in folder.glob("r" + "[0-9]" * 6 + suffix)]


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".digest.json")
