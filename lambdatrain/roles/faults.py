"""Fault injection for the local stack: make an invocation die hard at a named point.

``LAMBDATRAIN_FAULTS`` holds comma-separated ``handler:point:occurrence[:hang]`` entries, e.g.
``combiner:after_claim:1`` kills the process the first time any combiner reaches ``after_claim``;
with ``:hang`` the invocation stops responding instead, until its timeout kills it.
Occurrences are counted across processes in ``<mount>/.faults`` (one file per hit, created with
O_EXCL, so two processes never take the same count). ``settings.load`` refuses the variable unless
every AWS endpoint is on loopback, so a deployment can never enable it by accident.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

# Every point the handlers pass; tests parametrize over this list.
POINTS = {
    "starter": ("after_data", "after_config", "after_weights", "after_create", "after_fan_out"),
    "worker": ("before_write", "after_state", "after_write", "before_ready", "after_record"),
    "combiner": ("after_claim", "mid_sum", "after_write", "after_commit"),
}
EXIT_CODE = 137  # what a SIGKILL'd process reports


class InjectedCrash(BaseException):
    """Raised instead of exiting by in-process test harnesses (BaseException: no handler catches it)."""


def hard_exit(point: str) -> None:
    os._exit(EXIT_CODE)  # no cleanup, no finally blocks: as if the machine vanished


class Faults:
    def __init__(self, spec: str | None, handler: str, state_dir: Path, crash: Callable[[str], None] = hard_exit):
        self.handler = handler
        self.state_dir = state_dir
        self.crash = crash
        self.armed: dict[str, dict[int, str]] = {}
        for entry in filter(None, (spec or "").split(",")):
            name, point, occurrence, *action = entry.strip().split(":")
            if name == handler:
                self.armed.setdefault(point, {})[int(occurrence)] = action[0] if action else "exit"

    def point(self, name: str) -> None:
        """Count one pass through ``name``; exit hard if this occurrence is armed."""
        if name not in self.armed:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            try:
                fd = os.open(self.state_dir / f"{self.handler}.{name}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
                break
            except FileExistsError:
                n += 1
        action = self.armed[name].get(n)
        if action == "hang" and self.crash is hard_exit:
            time.sleep(10**6)  # a worker that runs into its timeout: the service kills it
        if action:
            self.crash(name)

