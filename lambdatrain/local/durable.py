"""The local stack's bucket outlives its moto, as an S3 bucket outlives any outage.

S3 stores objects durably across Availability Zones (https://docs.aws.amazon.com/AmazonS3/latest/userguide/DataDurability.html):
no failure of Lambda, of DynamoDB or of a client loses an object written. moto keeps objects in
its process's memory, so a local stack killed and served again (``lambdatrain local serve`` on
the same state folder: the whole-stack outage of tests/faults/test_local_stack_faults.py) would
come back with an empty bucket, and a run of a compressed transport could not resume: its state
(the workers' and the combiner's error-feedback residuals, the combiner's momentum, the update)
lives in the bucket (lambdatrain/storage/state.py).

So every object of the stack's bucket is mirrored under ``<state_dir>/s3/<bucket>/``: after each
S3 request that can change the bucket (moto_server.py tells us, one request at a time), the
mirror is brought in line with moto's objects, and a new stack on the same folder puts them back
before anything runs (current versions only: the noncurrent ones a versioned bucket keeps are
not mirrored, so an outage drops them, which only the prune of old state would have done). A file
is written atomically (temporary, rename), so a stack killed while mirroring leaves the previous
object whole.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from urllib.parse import quote, unquote

from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import FakeKey

BODY, META = ".body", ".meta.json"
USER_META = "x-amz-meta-"  # how moto keeps an object's user metadata among its headers


class DurableBucket:
    def __init__(self, folder: Path, bucket: str):
        self.folder, self.bucket = folder / bucket, bucket
        self.folder.mkdir(parents=True, exist_ok=True)
        self._etags: dict[str, str] = {}  # key -> etag of what the mirror holds
        self._lock = threading.Lock()

    def _path(self, key: str, suffix: str) -> Path:
        return self.folder / (quote(key, safe="") + suffix)  # one flat folder: "a" and "a/b" can both exist

    def restore(self, s3) -> int:
        """Put the mirrored objects back into a fresh bucket (through ``s3``, a client of the stack)."""
        restored = 0
        for body in sorted(self.folder.glob("*" + BODY)):
            key = unquote(body.name[: -len(BODY)])
            meta = json.loads(self._path(key, META).read_text()) if self._path(key, META).exists() else {}
            s3.put_object(Bucket=self.bucket, Key=key, Body=body.read_bytes(), Metadata=meta.get("user", {}),
                          ContentType=meta.get("content_type", "binary/octet-stream"))
            restored += 1
        self.sync()
        return restored

    def sync(self) -> None:
        """Bring the mirror in line with moto's objects of the bucket."""
        with self._lock:
            bucket = get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"].buckets.get(self.bucket)
            # A versioned bucket's latest entry for a deleted key is a delete marker: no object.
            objects = {} if bucket is None else {k.name: k for k in bucket.keys.values() if isinstance(k, FakeKey)}
            for key, obj in objects.items():
                if self._etags.get(key) != obj.etag:
                    meta = obj.metadata or {}
                    user = {k[len(USER_META):]: v for k, v in meta.items() if k.startswith(USER_META)}
                    atomic_write(self._path(key, META), json.dumps(
                        {"user": user, "content_type": meta.get("content-type", "binary/octet-stream")}).encode())
                    atomic_write(self._path(key, BODY), obj.value)
                    self._etags[key] = obj.etag
            for key in [k for k in self._etags if k not in objects]:
                self._path(key, BODY).unlink(missing_ok=True)
                self._path(key, META).unlink(missing_ok=True)
                del self._etags[key]


def atomic_write(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
