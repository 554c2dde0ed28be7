"""The local Lambda service: the Invoke HTTP API, pools of warm execution environments, async retries.

``POST /2015-03-31/functions/{name}/invocations`` with ``X-Amz-Invocation-Type`` ``Event`` (202,
queued, retried twice on failure, then written to the function's dead-letter file) or
``RequestResponse`` (200 with the payload; a failure sets ``X-Amz-Function-Error`` and returns
Lambda's error document). Each invocation runs in an execution environment (environment.py) of
its function, reused while warm; at most the function's concurrency run at once. Listens on
127.0.0.1 only.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lambdatrain.local.environment import Environment, FunctionConfig, InvocationError

PATH_PREFIX = "/2015-03-31/functions/"


@dataclass
class Delivery:
    """Knobs for fault-injection tests: duplicate or drop asynchronous events (seeded)."""

    duplicate_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class Function:
    """A function's pool of warm environments, and its asynchronous event queue."""

    def __init__(self, fn: FunctionConfig, service: "LambdaService"):
        self.fn, self.service = fn, service
        self.idle: list[Environment] = []
        self.all: set[Environment] = set()
        self.lock = threading.Lock()
        self.returned = threading.Condition(self.lock)  # an environment became idle
        self.warming = 0  # environments being initialised by prewarm()
        self.waiting = 0  # invocations waiting for one of those
        self.slots = threading.Semaphore(fn.concurrency)
        self.events: queue.Queue = queue.Queue()
        self.invocations = 0
        self.dispatcher = threading.Thread(target=self._dispatch, daemon=True, name=f"dispatch-{fn.name}")
        self.dispatcher.start()

    def invoke_sync(self, event: Any, request_id: str | None = None) -> Any:
        with self.slots:
            return self._run(event, request_id or uuid.uuid4().hex)

    def _run(self, event: Any, request_id: str) -> Any:
        with self.lock:
            self.invocations += 1
            # An environment prewarm() is initialising is nearer than a new cold start, and on a
            # small machine a second torch import would only slow both down.
            while not self.idle and self.warming > self.waiting:
                self.waiting += 1
                self.returned.wait()
                self.waiting -= 1
            env = self.idle.pop() if self.idle else None
        if env is None or not env.alive:
            env = Environment(self.fn, self.service.env, self.service.log_dir)
            with self.lock:
                self.all.add(env)
        try:
            result = env.invoke(event, request_id)
        finally:
            with self.lock:
                if env.alive and not self.service.stopping:
                    self.idle.append(env)
                    self.returned.notify()
                else:
                    self.all.discard(env)
        return result

    def prewarm(self, n: int) -> None:
        """Start initialising environments until n exist (at most the concurrency), in the background."""
        with self.lock:
            more = max(0, min(n, self.fn.concurrency) - len(self.all) - self.warming)
            self.warming += more
        for _ in range(more):
            threading.Thread(target=self._warm_one, daemon=True, name=f"prewarm-{self.fn.name}").start()

    def _warm_one(self) -> None:
        env = None
        try:
            env = Environment(self.fn, self.service.env, self.service.log_dir)
        except InvocationError:
            pass  # the next invocation starts its own environment and reports the init error
        with self.lock:
            self.warming -= 1
            keep = env is not None and not self.service.stopping
            if keep:
                self.all.add(env)
                self.idle.append(env)
            # Waiters re-check: take this environment, or start their own if none is coming.
            self.returned.notify_all()
        if env is not None and not keep:
            env.kill()

    def enqueue(self, event: Any) -> str:
        request_id = uuid.uuid4().hex
        delivery = self.service.delivery
        if delivery.drop_rate and delivery.rng.random() < delivery.drop_rate:
            return request_id  # lost on the way: the watchdog must notice
        copies = 2 if delivery.duplicate_rate and delivery.rng.random() < delivery.duplicate_rate else 1
        for _ in range(copies):
            self.events.put((event, request_id, 0))
        return request_id

    def _dispatch(self) -> None:
        while not self.service.stopping:
            try:
                item = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            self.slots.acquire()
            threading.Thread(target=self._attempt, args=item, daemon=True).start()

    def _attempt(self, event: Any, request_id: str, attempt: int) -> None:
        try:
            self._run(event, request_id)
        except InvocationError as exc:
            if attempt < self.fn.retries and not self.service.stopping:
                delay = self.fn.retry_delays_s[min(attempt, len(self.fn.retry_delays_s) - 1)]
                threading.Timer(delay, self.events.put, args=((event, request_id, attempt + 1),)).start()
            else:
                self.service.dead_letter(self.fn.name, event, request_id, exc.document)
        finally:
            self.slots.release()

    def stop(self) -> None:
        with self.lock:
            envs = list(self.all)
        for env in envs:
            env.kill()

    def kill_random(self, rng: random.Random) -> bool:
        """SIGKILL one live environment (chaos tests); True if there was one."""
        with self.lock:
            live = [e for e in self.all if e.alive]
        if not live:
            return False
        rng.choice(live).proc.kill()
        return True


class LambdaService:
    """The service behind the HTTP API; also called directly by the stream poller."""

    def __init__(self, functions: list[FunctionConfig], env: dict[str, str], state_dir: Path,
                 delivery: Delivery | None = None):
        self.env, self.state_dir = env, state_dir
        self.log_dir = state_dir / "logs"
        self.delivery = delivery or Delivery()
        self.stopping = False
        self.functions = {fn.name: Function(fn, self) for fn in functions}
        self.server: ThreadingHTTPServer | None = None

    def dead_letter(self, function: str, event: Any, request_id: str, error: dict[str, Any]) -> None:
        folder = self.state_dir / "dlq"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{function}.jsonl", "a") as f:
            f.write(json.dumps({"request_id": request_id, "event": event, "error": error,
                                "time": time.time()}, default=str) + "\n")

    def dead_letters(self, function: str) -> list[dict[str, Any]]:
        path = self.state_dir / "dlq" / f"{function}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def function(self, name: str) -> Function:
        if name not in self.functions:
            raise KeyError(name)
        return self.functions[name]

    def serve(self, port: int = 0) -> str:
        """Start the HTTP API on 127.0.0.1 (never on other interfaces); returns its URL."""
        service = self

        class Handler(_InvokeHandler):
            pass

        Handler.service = service
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="lambda-api").start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.stopping = True
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        for fn in self.functions.values():
            fn.stop()


class _InvokeHandler(BaseHTTPRequestHandler):
    service: LambdaService

    def log_message(self, format, *args):  # noqa: A002 - quiet: the stack logs elsewhere
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", uuid.uuid4().hex)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0]
        if not (path.startswith(PATH_PREFIX) and path.endswith("/invocations")):
            return self._send(404, {"message": f"unknown path {path}"})
        name = urllib.parse.unquote(path[len(PATH_PREFIX):-len("/invocations")])
        # A function ARN's 7th field is the name; "name:qualifier" drops the qualifier.
        name = name.split(":")[6] if name.startswith("arn:") else name.split(":")[0]
        try:
            fn = self.service.function(name)
        except KeyError:
            return self._send(404, {"Type": "User", "message": f"Function not found: {name}"},
                              {"x-amzn-ErrorType": "ResourceNotFoundException"})
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"
        try:
            event = json.loads(raw)
        except ValueError:
            return self._send(400, {"Type": "User", "message": "Could not parse request body into json"},
                              {"x-amzn-ErrorType": "InvalidRequestContentException"})
        if self.headers.get("X-Amz-Invocation-Type", "RequestResponse") == "Event":
            fn.enqueue(event)
            return self._send(202, None)
        try:
            return self._send(200, fn.invoke_sync(event))
        except InvocationError as exc:
            return self._send(200, exc.document, {"X-Amz-Function-Error": "Unhandled"})
