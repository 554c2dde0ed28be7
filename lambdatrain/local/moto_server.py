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
from typing import Callable

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


# DynamoDB operations that can add stream records (a failed condition adds none; a wakeup for it
# costs one empty read).
_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


class _Serialized:
    def __init__(self, app, write_listeners: list[Callable[[], None]]):
        self.app, self.lock = app, threading.Lock()
        self.write_listeners = write_listeners

    def __call__(self, environ, start_response):
        with self.lock:
            body = list(self.app(environ, start_response))  # the body is built inside the lock
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        # After the lock: the write and its stream record exist by the time a listener reads.
        if target.startswith("DynamoDB_") and target.rpartition(".")[2] in _WRITES:
            for listener in self.write_listeners:
                listener()
        return body


class MotoServer(ThreadedMotoServer):
    def __init__(self, port: int = 0):
        super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log, a line a call
        self.write_listeners: list[Callable[[], None]] = []  # called after each DynamoDB write

    def _server_entry(self) -> None:
        app = _Serialized(DomainDispatcherApplication(create_backend_app), self.write_listeners)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"
