"""The local Lambda service: pools of warm execution environments, reserved concurrency, async queues.

Each function runs its invocations in execution environments (environment.py), reused while warm,
at most its reserved concurrency at once. A synchronous invocation beyond that is throttled
(``Throttled``, which the Invoke API in api.py answers with 429); an asynchronous event is queued,
tried when a slot is free, put back with a growing wait while the function is throttled, retried
twice on a function error, and written to the function's dead-letter file when its retries or its
age run out, never dropped silently. In-process callers (the stream poller, ``LocalStack.invoke``)
wait for a slot instead, as an event source mapping retries a throttled batch.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lambdatrain.local.api import handler_for
from lambdatrain.local.environment import Environment, FunctionConfig
from lambdatrain.local.errors import InvocationError, Throttled
from lambdatrain.protocol.limits import PROVISIONED_INIT_MIN_S


@dataclass
class Delivery:
    """Knobs for fault-injection tests: duplicate or drop asynchronous events (seeded)."""

    duplicate_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


@dataclass(frozen=True)
class Queued:
    """An asynchronous event in a function's queue, with what its retries depend on."""

    event: Any
    request_id: str
    enqueued_at: float  # time.monotonic(): the event's age decides when it is discarded
    attempt: int = 0  # function errors so far (ASYNC_RETRIES)
    throttles: int = 0  # times it found the function throttled


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
        self.invocations = 0  # run in an environment
        self.throttles = 0  # asynchronous events that found every slot busy
        self.dispatcher = threading.Thread(target=self._dispatch, daemon=True, name=f"dispatch-{fn.name}")
        self.dispatcher.start()

    def invoke_sync(self, event: Any, request_id: str | None = None, *, throttle: bool = False) -> Any:
        """Run one invocation and return its result; a function error raises InvocationError.

        With ``throttle`` (the Invoke API), a function at its concurrency raises Throttled at once,
        as Lambda answers 429; without, the caller waits for a slot.
        """
        if not self.slots.acquire(blocking=not throttle):
            raise Throttled(self.fn.name, self.fn.concurrency)
        try:
            return self._run(event, request_id or uuid.uuid4().hex)
        finally:
            self.slots.release()

    def _run(self, event: Any, request_id: str) -> Any:
        dead = None
        with self.lock:
            self.invocations += 1
            # An environment prewarm() is initialising is nearer than a new cold start, and on a
            # small machine a second torch import would only slow both down.
            while not self.idle and self.warming > self.waiting:
                self.waiting += 1
                self.returned.wait()
                self.waiting -= 1
            env = self.idle.pop() if self.idle else None
            if env is not None and not env.alive:  # killed while idle: dropped, as Lambda drops it
                self.all.discard(env)
                dead, env = env, None
        if dead is not None:
            dead.kill()  # reaps it and closes its log
        if env is None:
            env = Environment(self.fn, self.service.env, self.service.log_dir)  # on demand: Lambda's 10 s init
            with self.lock:
                stopping = self.service.stopping
                if not stopping:
                    self.all.add(env)
            if stopping:  # stop() has already taken its list of environments: this one it would miss
                env.kill()
                raise InvocationError({"errorType": "Runtime.ExitError", "errorMessage": "the service stopped"})
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
        env, keep = None, False
        try:
            # Provisioned concurrency's init may take the larger of 130 s and the function's
            # timeout (lambda-runtime-environment.html), not on-demand's 10 s.
            env = Environment(self.fn, self.service.env, self.service.log_dir,
                              init_timeout_s=max(PROVISIONED_INIT_MIN_S, self.fn.timeout_s))
        except InvocationError:
            pass  # the next invocation starts its own environment and reports the init error
        finally:  # whatever happened: a `warming` left raised would keep every waiter waiting
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

    def enqueue(self, event: Any, request_id: str | None = None) -> str:
        request_id = request_id or uuid.uuid4().hex
        delivery = self.service.delivery
        if delivery.drop_rate and delivery.rng.random() < delivery.drop_rate:
            return request_id  # lost on the way: the watchdog must notice
        copies = 2 if delivery.duplicate_rate and delivery.rng.random() < delivery.duplicate_rate else 1
        for _ in range(copies):
            self.events.put(Queued(event, request_id, time.monotonic()))
        return request_id

    def _dispatch(self) -> None:
        while not self.service.stopping:
            try:
                item = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if self.slots.acquire(blocking=False):
                threading.Thread(target=self._attempt, args=(item,), daemon=True).start()
            else:
                self._throttled(item)

    def _throttled(self, item: Queued) -> None:
        """invocation-async-error-handling.html: a throttled event goes back to the queue and is
        tried again after a wait that doubles up to a maximum, until the event is too old."""
        self.throttles += 1
        first, longest = self.fn.throttle_backoff_s
        delay = min(longest, first * 2 ** item.throttles)
        if time.monotonic() + delay - item.enqueued_at > self.fn.max_event_age_s:
            self.service.dead_letter(self.fn.name, item.event, item.request_id, {
                "errorMessage": f"event older than {self.fn.max_event_age_s:.0f} s, throttled {item.throttles} times",
                "errorType": "EventAgeExceeded"})
            return
        self._later(delay, replace(item, throttles=item.throttles + 1))

    def _later(self, delay_s: float, item: Queued) -> None:
        timer = threading.Timer(delay_s, self.events.put, args=(item,))
        timer.daemon = True
        timer.start()

    def _attempt(self, item: Queued) -> None:
        try:
            self._run(item.event, item.request_id)
        except InvocationError as exc:
            if item.attempt < self.fn.retries and not self.service.stopping:
                delay = self.fn.retry_delays_s[min(item.attempt, len(self.fn.retry_delays_s) - 1)]
                self._later(delay, replace(item, attempt=item.attempt + 1))
            else:
                self.service.dead_letter(self.fn.name, item.event, item.request_id, exc.document)
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
    """The service behind the Invoke API (api.py); also called directly by the stream poller."""

    def __init__(self, functions: list[FunctionConfig], env: dict[str, str], state_dir: Path,
                 delivery: Delivery | None = None):
        self.env, self.state_dir = env, state_dir
        self.log_dir = state_dir / "logs"
        self.delivery = delivery or Delivery()
        self.stopping = False
        self.functions = {fn.name: Function(fn, self) for fn in functions}
        self.server: ThreadingHTTPServer | None = None
        self.api_calls: dict[str, int] = {}  # Invoke API requests per function, throttled ones included
        self._api_log = threading.Lock()

    def log_api_call(self, record: dict[str, Any]) -> None:
        """One line of logs/api.jsonl per Invoke request and per answer: what a client sent, and
        what it got back (CloudTrail's view of Invoke, for tests and for whoever debugs a client)."""
        with self._api_log:
            if "status" not in record:
                self.api_calls[record["function"]] = self.api_calls.get(record["function"], 0) + 1
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / "api.jsonl", "a") as f:
                f.write(json.dumps({"time": time.time(), **record}) + "\n")

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
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(self))
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
