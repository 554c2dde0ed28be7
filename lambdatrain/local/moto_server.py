"""moto's server on loopback, one request at a time.

DynamoDB makes every single-item write atomic (``ADD`` to a set, conditional updates); moto's
backends read, modify and write items without a lock, so two workers recording in the same
millisecond through its threaded server can lose an update (seen: a round stuck at N-1 of N).
Serializing requests gives the local stack DynamoDB's per-item atomicity; moto is fast enough
that one request at a time costs little.

It also tells listeners (the stream poller) after each DynamoDB write, so stream delivery is
event-driven instead of a tight polling loop against this one-at-a-time server.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

# moto.server is the module behind moto's own `moto_server` command: its WSGI app and request
# handler, served here by a werkzeug server of ours (moto's ThreadedMotoServer offers no way to
# wrap the app short of overriding its private _server_entry).
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from lambdatrain.local import moto_transactions


# DynamoDB operations that can add stream records (a failed condition adds none; a wakeup for it
# costs one empty read).
_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
_S3_CHANGES = frozenset({"PUT", "POST", "DELETE"})


class _Serialized:
    def __init__(self, app, write_listeners: list[Callable[[], None]], s3_listeners: list[Callable[[], None]]):
        self.app, self.lock = app, threading.Lock()
        self.write_listeners, self.s3_listeners = write_listeners, s3_listeners
        self.busy_s = 0.0  # seconds spent inside the lock: what the stack's clients queue for

    def __call__(self, environ, start_response):
        with self.lock:
            t0 = time.perf_counter()
            body = list(self.app(environ, start_response))  # the body is built inside the lock
            # An S3 request that may have changed a bucket (signed for service "s3"): the durable
            # mirror (durable.py) catches up inside the lock, before any later request sees it.
            if environ.get("REQUEST_METHOD") in _S3_CHANGES and "/s3/aws4_request" in environ.get("HTTP_AUTHORIZATION", ""):
                for listener in self.s3_listeners:
                    listener()
            self.busy_s += time.perf_counter() - t0
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        # After the lock: the write and its stream record exist by the time a listener reads.
        if target.startswith("DynamoDB_") and target.rpartition(".")[2] in _WRITES:
            for listener in self.write_listeners:
                listener()
        return body


class MotoServer:
    """moto on 127.0.0.1 (never other interfaces), serving one request at a time."""

    def __init__(self, port: int = 0):
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log, a line a call
        moto_transactions.install()  # rollbacks that keep the stream readable (moto_transactions.py)
        self.write_listeners: list[Callable[[], None]] = []  # called after each DynamoDB write
        self.s3_listeners: list[Callable[[], None]] = []  # called after each S3 request that may write
        self._app = app = _Serialized(DomainDispatcherApplication(create_backend_app), self.write_listeners,
                                      self.s3_listeners)
        # Threaded, so a slow client cannot hold the others up while it sends; the app's lock
        # still runs one request at a time.
        self._server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="moto")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    @property
    def busy_s(self) -> float:
        """Seconds this server has spent serving requests (one at a time: clients queue for them)."""
        return self._app.busy_s

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"
