"""moto's server on loopback, one request at a time.

DynamoDB makes every single-item write atomic (``ADD`` to a set, conditional updates); moto's
backends read, modify and write items without a lock, so two workers recording in the same
millisecond through its threaded server can lose an update (seen: a round stuck at N-1 of N).
Serializing requests gives the local stack DynamoDB's per-item atomicity; moto is fast enough
that one request at a time costs little.
"""

from __future__ import annotations

import logging
import threading

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class _Serialized:
    def __init__(self, app):
        self.app, self.lock = app, threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            return list(self.app(environ, start_response))  # the body is built inside the lock


class MotoServer(ThreadedMotoServer):
    def __init__(self, port: int = 0):
        super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log, a line a call

    def _server_entry(self) -> None:
        app = _Serialized(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"
