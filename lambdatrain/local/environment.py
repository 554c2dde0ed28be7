"""One execution environment of a local Lambda function: a warm process and the pipe to it.

A function's environment runs ``sandbox.py`` in its own process (and session, so it can be killed
whole) with the function's handler, a thread count derived from its memory as Lambda derives
vCPUs, and Lambda's environment variables. Invocations go in on stdin, one JSON line each; replies
come back on a pipe of their own, so the handler's prints (stdout, stderr) go to the function's
log. Its init (the handler module's import) has Lambda's 10 s: one that runs longer is started
again and finished inside the first invocation, under the function's timeout. An invocation that
outlives the function's timeout kills the environment, as Lambda does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdatrain.local.errors import InvocationError
from lambdatrain.protocol.limits import (ASYNC_MAX_EVENT_AGE_S, ASYNC_RETRIES, INIT_TIMEOUT_S, MAX_TIMEOUT_S,
                                         MB_PER_VCPU)


@dataclass(frozen=True)
class FunctionConfig:
    """What the local stack honours of a function's configuration on Lambda."""

    name: str
    handler_path: Path  # functions/<name>/handler.py
    memory_mb: int = MB_PER_VCPU
    timeout_s: float = MAX_TIMEOUT_S
    concurrency: int = 4  # reserved concurrency: invocations beyond it are throttled (service.py)
    retries: int = ASYNC_RETRIES
    retry_delays_s: tuple[float, ...] = (1.0, 2.0)  # Lambda's 1 and 2 minutes, in seconds
    init_timeout_s: float = INIT_TIMEOUT_S  # Lambda's 10 s; tests shorten it
    # A throttled asynchronous event is tried again after the first wait, doubling up to the
    # second (Lambda's 1 s to 5 min, shortened so a local run does not idle), until it is older
    # than max_event_age_s (Lambda's 6 h); then it goes to the dead-letter file.
    throttle_backoff_s: tuple[float, float] = (0.05, 2.0)
    max_event_age_s: float = ASYNC_MAX_EVENT_AGE_S


class Environment:
    """One warm process of a function; ``init_timeout_s`` overrides the function's init limit."""

    def __init__(self, fn: FunctionConfig, env: dict[str, str], log_dir: Path, init_timeout_s: float | None = None):
        self.fn, self._env, self._log_dir = fn, env, log_dir
        self.inits = 0  # processes started: 2 after an init over its limit
        self.ready = False
        self._spawn()
        if not self._await_ready(fn.init_timeout_s if init_timeout_s is None else init_timeout_s):
            # lambda-runtime-environment.html: an Init phase over 10 s is retried at the first
            # invocation with the function's timeout; Lambda starts it afresh, and so do we.
            self.kill()
            self._spawn()

    def _spawn(self) -> None:
        read_fd, write_fd = os.pipe()
        fn = self.fn
        threads = str(max(1, min(os.cpu_count() or 1, round(fn.memory_mb / MB_PER_VCPU))))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self._log_dir / f"{fn.name}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lambdatrain.local.sandbox", fn.name, str(fn.handler_path), str(fn.memory_mb)],
            stdin=subprocess.PIPE, stdout=self.log, stderr=self.log, pass_fds=(write_fd,),
            env={**self._env, "LAMBDATRAIN_SANDBOX_REPLY_FD": str(write_fd), "OMP_NUM_THREADS": threads,
                 "MKL_NUM_THREADS": threads, "AWS_LAMBDA_FUNCTION_NAME": fn.name,
                 "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb)},
            start_new_session=True)
        os.close(write_fd)
        self.replies = os.fdopen(read_fd, "r")
        self.inits += 1

    def _await_ready(self, timeout_s: float) -> bool:
        """Wait for the end of init: True when done, False when still running after timeout_s."""
        line = self._read_reply(timeout_s)
        if line is None:
            return False
        if not line or not json.loads(line).get("ready"):
            self.kill()
            raise InvocationError({"errorMessage": f"Init failed for {self.fn.name} (see its log)",
                                   "errorType": "Runtime.InitError"})
        self.ready = True
        return True

    def _read_reply(self, timeout_s: float) -> str | None:
        box: list = []
        reader = threading.Thread(target=lambda: box.append(self.replies.readline()), daemon=True)
        reader.start()
        reader.join(max(0.0, timeout_s))
        return None if reader.is_alive() else (box[0] if box else "")

    def invoke(self, event: Any, request_id: str) -> Any:
        started = time.monotonic()
        if not self.ready and not self._await_ready(self.fn.timeout_s):
            self._time_out()
        left = self.fn.timeout_s - (time.monotonic() - started)  # a late init spends the invocation's time
        request = {"event": event, "request_id": request_id, "deadline": time.time() + left}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            line = self._read_reply(left)
        except BrokenPipeError:  # killed while idle, after the pool's liveness check: it exited
            line = ""
        if line is None:
            self._time_out()
        if not line:
            code = self.proc.wait()
            raise InvocationError({"errorMessage": f"Runtime exited with error: exit status {code}",
                                   "errorType": "Runtime.ExitError"})
        reply = json.loads(line)
        if "error" in reply:
            raise InvocationError(reply["error"])
        return reply["ok"]

    def _time_out(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)  # the stacks of the stuck invocation, into its log
        time.sleep(0.5)
        self.kill()
        raise InvocationError({"errorMessage": f"Task timed out after {self.fn.timeout_s:.2f} seconds",
                               "errorType": "TimeoutError"})

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        self.log.close()
