"""bench/_common.py: what every benchmark relies on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_benchmark_takes_its_training_child_with_it():
    parent = subprocess.Popen([sys.executable, "-c", "import time\nfrom bench._common import in_child\n"
                               "print('start', flush=True)\nin_child(time.sleep, 120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert parent.stdout.readline().strip() == "start"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not workers:  # the pool's worker: the grandchild that sleeps
            workers = [g for c in children_of(parent.pid) for g in [c, *children_of(c)]
                       if "spawn_main" in (Path("/proc") / str(g) / "cmdline").read_text(errors="replace")]
            time.sleep(0.2)
        assert workers, "the benchmark started no child"
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(alive(w) for w in workers)
    finally:  # nothing outlives the test, whatever it found
        parent.kill()
        for pid in workers + children_of(parent.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
