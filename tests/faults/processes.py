"""Finding and SIGKILLing a local stack's processes, for tests that kill them for real.

A stack's execution environments run ``lambdatrain.local.sandbox`` in sessions of their own (so a
killed parent does not take them along); they are told apart by the mount in their environment.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lambdatrain.roles import settings as names

SANDBOX = b"lambdatrain.local.sandbox"


def sandboxes(mount: Path, function: str | None = None) -> list[int]:
    """Process ids of the stack's execution environments (of ``function``, or all), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if SANDBOX not in argv or (function and argv[argv.index(SANDBOX) + 1] != function.encode()):
                continue
            if f"{names.ENV_MOUNT}={mount}\0".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # not a process, gone meanwhile, or not ours
    return found


def function_of(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return argv[argv.index(SANDBOX) + 1].decode()
    except (OSError, ValueError, IndexError):
        return "?"


def kill(pids: list[int]) -> int:
    """SIGKILL each; how many were still there to kill."""
    killed = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def stack_report(state_dir: Path, lines: int = 12) -> str:
    """What a stalled local stack was doing, for a test's failure output: each function's last log
    lines (the watchdog's idle ticks left out), its dead letters and the last Invoke API calls."""
    out = []
    for log in sorted((state_dir / "logs").glob("*.log")):
        kept = [line for line in log.read_text(errors="replace").splitlines()
                if '"redriven":[]' not in line.replace(" ", "")]
        out += [f"--- {log.name}: last {min(lines, len(kept))} of {len(kept)} lines"] + kept[-lines:]
    for dlq in sorted((state_dir / "dlq").glob("*.jsonl")):
        out += [f"--- dead letters {dlq.name}"] + dlq.read_text().splitlines()[-lines:]
    api = state_dir / "logs" / "api.jsonl"
    if api.exists():
        out += ["--- api.jsonl"] + api.read_text().splitlines()[-lines:]
    return "\n".join(out)
