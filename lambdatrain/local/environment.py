"""One execution environment of a local Lambda function: a warm process and the pipe to it.

A function's environment runs ``sandbox.py`` in its own process (and session, so it can be killed
whole) with the function's handler, a thread count derived from its memory as Lambda derives
vCPUs, and Lambda's environment variables. Invocations go in on stdin, one JSON line each; replies
come back on a pipe of their own, so the handler's prints (stdout, stderr) go to the function's
log. An invocation that outlives the function's timeout kills the environment, as Lambda does.
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

from lambdatrain.protocol.limits import ASYNC_RETRIES, INIT_TIMEOUT_S as LAMBDA_INIT_TIMEOUT_S, MAX_TIMEOUT_S, MB_PER_VCPU

# A cold start's imports: 30 times Lambda's limit, for loaded test machines.
INIT_TIMEOUT_S = 30 * LAMBDA_INIT_TIMEOUT_S


@dataclass(frozen=True)
class FunctionConfig:
    """What the local stack honours of a function's configuration on Lambda."""

    name: str
    handler_path: Path  # functions/<name>/handler.py
    memory_mb: int = MB_PER_VCPU
    timeout_s: float = MAX_TIMEOUT_S
    concurrency: int = 4  # like reserved concurrency: async events beyond it wait in the queue
    retries: int = ASYNC_RETRIES
    retry_delays_s: tuple[float, ...] = (1.0, 2.0)  # Lambda's 1 and 2 minutes, in seconds


class InvocationError(Exception):
    """A failed invocation, carrying Lambda's error document (errorMessage, errorType)."""

    def __init__(self, document: dict[str, Any]):
        self.document = document
        super().__init__(document.get("errorMessage", "function error"))


class Environment:
    """One warm process of a function."""

    def __init__(self, fn: FunctionConfig, env: dict[str, str], log_dir: Path):
        read_fd, write_fd = os.pipe()
        threads = str(max(1, min(os.cpu_count() or 1, round(fn.memory_mb / MB_PER_VCPU))))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(log_dir / f"{fn.name}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lambdatrain.local.sandbox", fn.name, str(fn.handler_path), str(fn.memory_mb)],
            stdin=subprocess.PIPE, stdout=self.log, stderr=self.log, pass_fds=(write_fd,),
            env={**env, "LAMBDATRAIN_SANDBOX_REPLY_FD": str(write_fd), "OMP_NUM_THREADS": threads,
                 "MKL_NUM_THREADS": threads, "AWS_LAMBDA_FUNCTION_NAME": fn.name,
                 "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb)},
            start_new_session=True)
        os.close(write_fd)
        self.replies = os.fdopen(read_fd, "r")
        self.fn = fn
        # Lambda runs a function's init (imports, here torch) before, and apart from, the
        # invocation's timeout; a cold start slower than the timeout must not kill every attempt.
        ready = self._read_reply(INIT_TIMEOUT_S)
        if not ready or not json.loads(ready).get("ready"):
            self.kill()
            raise InvocationError({"errorMessage": f"Init failed for {fn.name} (see its log)",
                                   "errorType": "Runtime.InitError"})

    def _read_reply(self, timeout_s: float) -> str | None:
        box: list = []
        reader = threading.Thread(target=lambda: box.append(self.replies.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        return None if reader.is_alive() else (box[0] if box else "")

    def invoke(self, event: Any, request_id: str) -> Any:
        deadline = time.time() + self.fn.timeout_s
        self.proc.stdin.write((json.dumps({"event": event, "request_id": request_id, "deadline": deadline}) + "\n").encode())
        self.proc.stdin.flush()
        line = self._read_reply(self.fn.timeout_s)
        if line is None:
            self.proc.send_signal(signal.SIGUSR1)  # the stacks of the stuck invocation, into its log
            time.sleep(0.5)
            self.kill()
            raise InvocationError({"errorMessage": f"Task timed out after {self.fn.timeout_s:.2f} seconds",
                                   "errorType": "TimeoutError"})
        if not line:
            code = self.proc.wait()
            raise InvocationError({"errorMessage": f"Runtime exited with error: exit status {code}",
                                   "errorType": "Runtime.ExitError"})
        reply = json.loads(line)
        if "error" in reply:
            raise InvocationError(reply["error"])
        return reply["ok"]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        self.log.close()
