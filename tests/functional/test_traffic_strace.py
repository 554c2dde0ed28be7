"""The storage layer's byte counts are complete: one round under ``strace -f`` moves no byte of the
run's files that the counter (lambdatrain/storage/traffic.py) did not see.

A child process runs one whole round in process (tests/harness.py's InlineSystem: starter, two
workers, the combine, the epoch's evaluation) under ``strace -f -y``, which names each call's file;
with ``ternary_ef``, two rounds, so that a warm worker reads the combiner's compressed update and the
combiner its residual. The workers' residuals go to S3 (a moto server, over a socket): they are no
file's bytes, so the counter's ``state`` category is left out of the comparison.
Per file below the run's folder, strace's read and write totals must equal the counter's (a write
goes to a temporary name and is renamed: strace's ``.<name>.<hex>.tmp`` is the counter's
``<name>``). Dataset files are memory-mapped, and strace cannot see page faults, so for them the
counter's mapped length is compared with strace's ``mmap`` lengths. ``/proc/PID/io`` would not
do: ``read_bytes`` misses the page cache and ``rchar`` misses memory-mapped reads.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lambdatrain.storage import traffic

REPO = Path(__file__).resolve().parents[2]
# slow: a fresh Python with torch under strace takes 10-20 s on 2 busy cores.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("strace") is None,
                                 reason="strace is not installed (make test installs Debian's package)")]

ONE_ROUND = """
import json, sys
from pathlib import Path
from lambdatrain.storage import traffic
from lambdatrain.roles.settings import STARTER
from tests.harness import InlineSystem

mount, table, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
transport, rounds = sys.argv[4], int(sys.argv[5])
system = InlineSystem(mount, table, bucket=f"{table}-bucket")
settings = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 16, "augment": False,
            "max_train_samples": 32 * rounds, "val_samples": 32, "epochs": 1, "transport": transport}
run = system.invoke(STARTER, {"start": True, "workers": 2, **settings})["run"]
system.drain()
record = system.ledger.get_run(run)
assert record.state == "done" and record.round == rounds, record
out.write_text(json.dumps({"run": run, "paths": traffic.by_path()}))
"""

# 1234  read(5</x/y.npy>, ""..., 8388608) = 8388608   and the split forms of a call another
# thread interrupted:  1234  read(5</x/y.npy>, <unfinished ...>   /   1234  <... read resumed>...) = 128
CALL = re.compile(r"^(\d+)\s+(read|write|pread64|pwrite64|mmap)\((.*)$")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (read|write|pread64|pwrite64|mmap) resumed>.*\) = (-?\d+)")
FD_PATH = re.compile(r"\d+<([^>]*)>")
RESULT = re.compile(r"\) = (-?\d+)")
TMP_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{32}\.tmp$")


def _strace_totals(trace: Path) -> dict[str, dict[str, int]]:
    """{path: {read|write|mapped: bytes}} of the calls strace saw, temporary names folded in."""
    totals: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    pending: dict[tuple[str, str], tuple[str, int]] = {}
    for line in trace.read_text(errors="replace").splitlines():
        if m := CALL.match(line):
            pid, call, rest = m.groups()
            fds = FD_PATH.findall(rest)
            if not fds:
                continue
            path, size = (fds[0], None) if call != "mmap" else (fds[0], int(rest.split(",")[1]))
            if "<unfinished" in rest:
                pending[(pid, call)] = (path, size)
                continue
            result = RESULT.search(rest)
            _add(totals, call, path, size, int(result.group(1)) if result else -1)
        elif m := RESUMED.match(line):
            pid, call, result = m.groups()
            if (pid, call) in pending:
                path, size = pending.pop((pid, call))
                _add(totals, call, path, size, int(result))
    return {p: dict(c) for p, c in totals.items()}


def _add(totals, call: str, path: str, size: int | None, result: int) -> None:
    if result < 0 and call != "mmap":
        return
    p = Path(path)
    if m := TMP_NAME.match(p.name):
        p = p.with_name(m.group(1))
    direction = {"read": "read", "pread64": "read", "write": "write", "pwrite64": "write"}.get(call, "mapped")
    totals[str(p)][direction] += size if call == "mmap" else result


@pytest.mark.parametrize(("transport", "rounds", "categories"), [
    ("float32", 1, {"weights", "results", "optim", "metric", "config", "digests"}),
    # A compressed run's momentum, residual and update are S3 objects (storage/state.py), not files.
    ("ternary_ef", 2, {"weights", "results", "metric", "config", "digests"}),
])
def test_one_round_counts_match_strace(tmp_path, tiny_dataset, moto_url, transport, rounds, categories):
    mount = tmp_path / "efs"
    (mount / "datasets").mkdir(parents=True)
    (mount / "datasets" / "cifar10").symlink_to(tiny_dataset, target_is_directory=True)
    trace, out = tmp_path / "trace.txt", tmp_path / "counts.json"
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_url, traffic.ENV_DIR: str(tmp_path / "dumps"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["strace", "-f", "-qq", "-s", "0", "-y", "-o", str(trace),
                    "-e", "trace=read,write,pread64,pwrite64,openat,mmap", sys.executable, "-c", ONE_ROUND,
                    str(mount), f"t-{uuid.uuid4().hex[:8]}", str(out), transport, str(rounds)],
                   env=env, cwd=REPO, check=True, timeout=240)
    counted = json.loads(out.read_text())
    run_dir = str((mount / "runs" / counted["run"]).resolve())
    seen = _strace_totals(trace)

    moved = {p: d for p, d in seen.items() if p.startswith(run_dir + os.sep)}
    files = {p: d for p, d in counted["paths"].items() if not p.startswith("s3://")}  # "state": S3 objects
    ours = {str(Path(p).resolve()): {k: v for k, v in d.items() if k != "mapped"}
            for p, d in files.items() if p.startswith(str(mount / "runs"))}
    assert moved == ours
    assert categories <= {traffic.category(p) for p in ours}
    assert (len(counted["paths"]) > len(files)) == (transport != "float32")  # the residuals' PUTs were counted
    if transport != "float32":
        assert not {traffic.category(p) for p in ours} & {"optim", "update"}
    # round 1's worker rebuilt its weights from round 0's update, read from the bucket
    assert any("/update/r000000.npy" in p and "read" in d for p, d in counted["paths"].items()) == (
        transport != "float32")

    data = str(Path(tiny_dataset).resolve())
    mapped = {p: d["mapped"] for p, d in seen.items() if p.startswith(data) and "mapped" in d}
    ours_mapped = {str(Path(p).resolve()): d["mapped"] for p, d in files.items() if "mapped" in d}
    assert mapped == ours_mapped and len(mapped) == 4  # the four arrays, each mapped once per process
