"""The local Lambda service's HTTP face: Lambda's Invoke API, answered as Lambda answers it.

``POST /2015-03-31/functions/{name}/invocations`` (https://docs.aws.amazon.com/lambda/latest/api/
API_Invoke.html), so boto3 and the AWS CLI parse every answer into what they show against AWS:

- ``X-Amz-Invocation-Type: RequestResponse`` (the default): 200 with the function's result as the
  body and ``X-Amz-Executed-Version``; a function error is still 200, with
  ``X-Amz-Function-Error: Unhandled`` and Lambda's error document as the body;
- ``Event``: 202 and an empty body, the event queued; ``DryRun``: 204;
- ``x-amzn-RequestId`` is the request id the function's context sees, so a client's log and the
  function's log name the same invocation;
- errors carry their type in ``x-amzn-ErrorType`` and a JSON body with ``Type`` and ``message``, as
  the rest-json protocol expects: 404 ResourceNotFoundException, 400 InvalidRequestContentException,
  413 RequestTooLargeException, and 429 TooManyRequestsException (reason
  ReservedFunctionConcurrentInvocationLimitExceeded) for a synchronous invoke beyond the function's
  reserved concurrency, which both clients retry with backoff as they do against AWS.

Every request and answer goes to ``logs/api.jsonl`` (LambdaService.log_api_call).
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from lambdatrain.local.errors import InvocationError, Throttled
from lambdatrain.protocol.limits import ASYNC_PAYLOAD_MAX_BYTES, SYNC_PAYLOAD_MAX_BYTES

PATH_PREFIX = "/2015-03-31/functions/"
ACCOUNT_ARN = "arn:aws:lambda:us-east-1:000000000000:function:"
LATEST = "$LATEST"
STATUS = {"RequestResponse": 200, "Event": 202, "DryRun": 204}
LIMITS = {"RequestResponse": SYNC_PAYLOAD_MAX_BYTES, "Event": ASYNC_PAYLOAD_MAX_BYTES,
          "DryRun": SYNC_PAYLOAD_MAX_BYTES}


class ApiError(Exception):
    """An error answer of the Invoke API: its status, its x-amzn-ErrorType and its body."""

    def __init__(self, status: int, error_type: str, message: str, **extra: str):
        self.status, self.error_type = status, error_type
        self.body = {"Type": "User", "message": message, **extra}
        super().__init__(message)


def function_name(path: str) -> tuple[str, str | None]:
    """The function name and qualifier in an Invoke path: a name, ``name:qualifier`` or an ARN."""
    raw = urllib.parse.unquote(path[len(PATH_PREFIX):-len("/invocations")])
    if raw.startswith("arn:"):  # arn:aws:lambda:region:account:function:name[:qualifier]
        fields = raw.split(":")
        return (fields[6] if len(fields) > 6 else ""), (fields[7] if len(fields) > 7 else None)
    name, _, qualifier = raw.partition(":")
    return name, qualifier or None


class InvokeHandler(BaseHTTPRequestHandler):
    service: Any  # the service.LambdaService it answers for (service.py imports this module)
    function = ""  # the function a request names, once parsed

    def log_message(self, format, *args):  # noqa: A002 - quiet: logs/api.jsonl records each call
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        request_id = str(uuid.uuid4())
        try:
            status, body, headers = self._invoke(request_id)
        except ApiError as exc:
            status, body, headers = exc.status, exc.body, {"x-amzn-ErrorType": exc.error_type}
        self._send(status, body, {"x-amzn-RequestId": request_id, **headers})

    def _invoke(self, request_id: str) -> tuple[int, Any, dict[str, str]]:
        path, _, query = self.path.partition("?")
        if not (path.startswith(PATH_PREFIX) and path.endswith("/invocations")):
            raise ApiError(404, "UnknownOperationException", f"Unknown operation {self.command} {path}")
        name, qualifier = function_name(path)
        self.function = name
        qualifier = qualifier or urllib.parse.parse_qs(query).get("Qualifier", [None])[0]
        kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        self.service.log_api_call({"function": name, "type": kind, "request_id": request_id})
        if name not in self.service.functions or qualifier not in (None, LATEST):
            raise ApiError(404, "ResourceNotFoundException",
                           f"Function not found: {ACCOUNT_ARN}{name}" + (f":{qualifier}" if qualifier else ""))
        if kind not in STATUS:
            raise ApiError(400, "InvalidParameterValueException",
                           f"Unsupported invocation type {kind}: use RequestResponse, Event or DryRun")
        size = int(self.headers.get("Content-Length") or 0)
        if size > LIMITS[kind]:
            self.rfile.read(size)  # drained, so the client reads the answer rather than a reset
            raise ApiError(413, "RequestTooLargeException",
                           f"Request must be smaller than {LIMITS[kind]} bytes for the InvokeFunction operation")
        event = self._event(self.rfile.read(size))
        fn = self.service.function(name)
        versioned = {"X-Amz-Executed-Version": LATEST}
        if kind == "DryRun":
            return 204, None, {}
        if kind == "Event":
            fn.enqueue(event, request_id)
            return 202, None, {}
        try:
            return 200, fn.invoke_sync(event, request_id, throttle=True), versioned
        except Throttled as exc:
            raise ApiError(429, "TooManyRequestsException", "Rate Exceeded.",
                           Reason="ReservedFunctionConcurrentInvocationLimitExceeded") from exc
        except InvocationError as exc:
            return 200, exc.document, {**versioned, "X-Amz-Function-Error": "Unhandled"}

    @staticmethod
    def _event(raw: bytes) -> Any:
        if not raw:
            return {}  # the AWS CLI and boto3 send no body without --payload; Lambda passes {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "InvalidRequestContentException",
                           f"Could not parse request body into json: {exc}") from exc

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        # A synchronous result of None is the JSON null, as Lambda returns it; 202 and 204 are empty.
        data = b"" if status in (202, 204) else json.dumps(body).encode()
        self.service.log_api_call({"function": self.function, "status": status, "request_id": headers["x-amzn-RequestId"],
                                   "error": headers.get("x-amzn-ErrorType") or headers.get("X-Amz-Function-Error")})
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its read timeout): Lambda finishes the invocation all the same


def handler_for(service: Any) -> type[InvokeHandler]:
    """The request handler class of one service (http.server makes one instance per request)."""
    return type("BoundInvokeHandler", (InvokeHandler,), {"service": service})
