"""One execution environment of the local Lambda service: a process that serves invocations.

Like a Lambda execution environment it imports the handler once and then serves invocations one
at a time for as long as it lives (warm reuse). Requests arrive as JSON lines on stdin; replies go
as JSON lines to the file descriptor named by ``LAMBDATRAIN_SANDBOX_REPLY_FD``, so whatever the
handler prints cannot corrupt the protocol. The service kills the process when an invocation
outlives its timeout.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass


@dataclass
class LambdaContext:
    """The attributes and method of AWS's context object that handlers use."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int
    deadline: float
    invoked_function_arn: str = ""
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def _load_handler(path: str):
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("handler", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def main() -> None:
    # SIGUSR1 writes every thread's stack to the log: the service sends it before killing an
    # invocation at its timeout, so a timeout always says where the function was stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    function, handler_path, memory = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reply = os.fdopen(int(os.environ["LAMBDATRAIN_SANDBOX_REPLY_FD"]), "w", buffering=1)
    handler = _load_handler(handler_path)
    reply.write(json.dumps({"ready": True}) + "\n")  # init done: invocation timeouts start now
    for line in sys.stdin:
        request = json.loads(line)
        context = LambdaContext(function_name=function, aws_request_id=request["request_id"],
                                memory_limit_in_mb=memory, deadline=request["deadline"],
                                invoked_function_arn=f"arn:aws:lambda:us-east-1:000000000000:function:{function}",
                                log_group_name=f"/aws/lambda/{function}")
        try:
            result = {"ok": handler(request["event"], context)}
        except Exception as exc:  # noqa: BLE001 - reported to the caller as Lambda does
            result = {"error": {"errorMessage": str(exc), "errorType": type(exc).__name__,
                                "stackTrace": traceback.format_exc().splitlines()}}
        reply.write(json.dumps(result, default=str) + "\n")
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    main()
