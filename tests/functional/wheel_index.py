"""A package index on loopback for setup's tests: one tiny wheel built here, served as PEP 503 pages.

The wheel's download can be held back (``hold``) until the test lets it go, so a test can catch
setup in the middle of ``pip install`` (its staging folder and pip's temporary files in place)
and kill it there, or start a second setup while the first holds the lock.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NAME, VERSION = "lt_probe", "1.0"
WHEEL = f"{NAME}-{VERSION}-py3-none-any.whl"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path) -> Path:
    """A valid pure-Python wheel holding ``lt_probe/__init__.py`` (PEP 427 layout, with a RECORD)."""
    info = f"{NAME}-{VERSION}.dist-info"
    files = {
        f"{NAME}/__init__.py": b'VALUE = "installed by setup"\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: lt-probe\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: lambdatrain-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join([_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,", ""])
    path = Path(folder) / WHEEL
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**files, f"{info}/RECORD": record.encode()}.items():
            archive.writestr(name, data)
    return path


class WheelIndex:
    """``http://127.0.0.1:<port>/simple`` serving the wheel; counts downloads; can hold them back."""

    def __init__(self, wheel: Path):
        self.data = wheel.read_bytes()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.downloads = 0
        self.requested = threading.Event()  # a download has started
        self.released = threading.Event()  # held downloads may go on
        self.released.set()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path.rstrip("/") == "/simple/lt-probe":
                    body = f'<html><body><a href="/files/{WHEEL}#sha256={index.sha256}">{WHEEL}</a></body></html>'
                    return self._send(body.encode(), "text/html")
                if self.path == f"/files/{WHEEL}":
                    index.downloads += 1
                    index.requested.set()
                    index.released.wait(120)
                    return self._send(index.data, "application/octet-stream")
                self.send_error(404)

            def _send(self, data: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold(self) -> None:
        self.requested.clear()
        self.released.clear()

    def lock_file(self, path: Path) -> Path:
        """The hashed lock setup installs (LAMBDATRAIN_PACKAGES_LOCK)."""
        path.write_text(f"# served by the test's index\nlt-probe=={VERSION} --hash=sha256:{self.sha256}\n")
        return path

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
