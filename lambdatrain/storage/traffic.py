"""Bytes read and written on the mount, counted where they move: per process, per path category.

efs.py reports the length of every read and write call it makes on a run's files, and
training/data.py the length of every dataset file it memory-maps (a mapped file's reads are page
faults no call returns, so its mapped length is what is counted, under the direction "mapped").
The totals per (category, direction) are a few integers in a dict: always on.

Getting the counts out of a process: when the environment variable named by ``ENV_DIR`` is set
(read here from ``os.environ``, and declared here rather than in roles/settings.py because storage
must not import roles), the process also keeps a total per path and rewrites its own JSON file,
``<dir>/<function>-<pid>.json``, after every file operation, so a local-stack sandbox's counts
are on disk whenever it is killed or stopped. The function is Lambda's ``AWS_LAMBDA_FUNCTION_NAME``
("process" outside Lambda). bench/traffic.py reads these files.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import threading
from pathlib import Path

import numpy as np

ENV_DIR = "LAMBDATRAIN_TRAFFIC_DIR"
# "update": a sharded combine's slices of a compressed run's update; "state": what a compressed run
# keeps in S3 (storage/state.py), not on EFS: the workers' and the combiner's residuals, the
# combiner's momentum and the whole update.
CATEGORIES = ("weights", "optim", "update", "results", "metric", "config", "digests", "datasets", "state", "other")
DIRECTIONS = ("read", "write", "mapped")
_ROUND_FILE = re.compile(r"r\d{6}\.npy$")

_totals: dict[tuple[str, str], int] = {}
_paths: dict[str, dict[str, int]] = {}  # only while ENV_DIR is set: one entry per file touched
# The combine reads files on several threads (training/reduce.py): every update and snapshot of
# the counts, and each dump, happens under this lock.
_lock = threading.Lock()


def category(path: Path | str) -> str:
    """The category of a run file by its place in efs.RunLayout (datasets are named by data.py)."""
    p = Path(path)
    name, parent = p.name, p.parent.name
    if name.endswith(".digest.json"):
        return "digests"
    if name == "config.json":
        return "config"
    if name == "metric.json":
        return "metric"
    if parent == "weights" and _ROUND_FILE.match(name) or name.startswith("combined-s"):
        return "weights"  # combined-sNNN.npy: a sharded combine's slice of the new weights
    if parent == "optim" and _ROUND_FILE.match(name) or name.startswith("optim-s"):
        return "optim"
    if name.startswith("update-s"):
        return "update"
    if p.parent.parent.name == "rounds" and name.startswith("w") and name.endswith(".npy"):
        return "results"
    return "other"


def add(path: Path | str, direction: str, nbytes: int, kind: str | None = None) -> None:
    """Count ``nbytes`` moved by one call on ``path`` (``kind`` overrides the category)."""
    key = (kind or category(path), direction)
    with _lock:
        _totals[key] = _totals.get(key, 0) + nbytes
        if os.environ.get(ENV_DIR):
            per = _paths.setdefault(str(path), {})
            per[direction] = per.get(direction, 0) + nbytes


class Counted:
    """A file object whose read, readinto and write calls are counted under ``path``; leaving its
    ``with`` block ends one file operation (:func:`done`). Text is counted in UTF-8 bytes."""

    def __init__(self, f, path: Path | str):
        self._f, self._path = f, path

    def read(self, n: int = -1):
        data = self._f.read(n)
        add(self._path, "read", len(data.encode() if isinstance(data, str) else data))
        return data

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        add(self._path, "read", n or 0)
        return n

    def write(self, data) -> int:
        n = self._f.write(data)
        add(self._path, "write", len(data[:n].encode()) if isinstance(data, str) else n)
        return n

    def __getattr__(self, name: str):  # tell, seek, fileno, flush: the file's own
        return getattr(self._f, name)

    def __enter__(self) -> "Counted":
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()
        done()


def mapped(path: Path | str, array: np.ndarray) -> None:
    """Count a memory-mapped dataset array: mmap maps from the page (allocation granule) below the
    data's offset in the file, so the mapped length is the array's bytes plus that remainder."""
    offset = int(getattr(array, "offset", 0) or 0)
    add(path, "mapped", array.nbytes + offset % mmap.ALLOCATIONGRANULARITY, kind="datasets")
    done()


def totals() -> dict[str, dict[str, int]]:
    """{category: {direction: bytes}} of this process since start (or the last reset)."""
    out: dict[str, dict[str, int]] = {}
    with _lock:
        snapshot = sorted(_totals.items())
    for (cat, direction), n in snapshot:
        out.setdefault(cat, {})[direction] = n
    return out


def by_path() -> dict[str, dict[str, int]]:
    """{path: {direction: bytes}}, kept only while ``ENV_DIR`` is set."""
    with _lock:
        return {p: dict(d) for p, d in _paths.items()}


def reset() -> None:
    with _lock:
        _totals.clear()
        _paths.clear()


def done() -> Path | None:
    """End of a file operation: rewrite this process's dump if ``ENV_DIR`` asks for one."""
    folder = os.environ.get(ENV_DIR)
    if not folder:
        return None
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "process")
    path = Path(folder) / f"{function}-{os.getpid()}.json"
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")  # one per thread: no shared temp
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps({"function": function, "pid": os.getpid(), "totals": totals(),
                               "paths": by_path()}, sort_keys=True))
    os.replace(tmp, path)  # a reader never sees half a dump
    return path
