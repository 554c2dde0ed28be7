"""Where a compressed run's state lives between rounds: the stack's S3 bucket.

A compressed transport (``ternary_ef``, ``sign_ef``) leaves every worker with a residual, the part
of its corrected result the payload could not say (training/feedback.py). It is dense, float32 and
as large as the parameters, and Lambda does not route worker i's next invocation to the environment
that holds it, so it must be stored between rounds; on EFS it would cost more traffic than the
compression saves (EFS bills every byte read and written, S3 inside a region bills requests only:
https://aws.amazon.com/s3/pricing/, https://aws.amazon.com/efs/pricing/). docs/benchmarks.md,
"Traffic", says why S3 and what it costs per round.

The combiner's state goes the same way, for the same reason (docs/benchmarks.md, "Traffic"): its
momentum and its own residual (training/feedback.py ``step_slice``), 4P bytes each written every
round, and the compressed update it publishes, which every warm worker reads. On EFS these were
two fifths of a round's bytes at N = 64 once the results were compressed; the weights stay on EFS,
where every other reader (a cold worker, ``resume``, ``export``) finds them.

Keys are per (run, owner, round): ``state/<run>/<owner>/rNNNNNN.npy``, the owner ``wNNNN`` (worker
N's residual), ``momentum-sNNN`` or ``residual-sNNN`` (the combiner's, slice N of a sharded combine,
``s000`` whole when S = 1: each share stores and reads its own slice) or ``update``. The state a
round *starts* with is under that round: a worker reads round r's residual and writes round
r + 1's, the combine of round r reads round r's momentum and residual and writes round r + 1's and
``update/r``. A re-driven or duplicated writer reads the same immutable input and writes the same
bytes (S3 keeps whole objects, and the last of several PUTs of one key wins:
https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html). Round 0 starts from zeros and
reads nothing. Every object carries its checksum in its metadata, verified on every read.

An environment keeps the residual it last wrote, so a worker number served twice running by one
warm environment skips the GET; the bytes are the object's, so the result is the same either way.
Every byte moved is counted by storage/traffic.py under the category ``state``.

Transfers are split in parts moved concurrently (boto3's managed transfer: multipart PUT, ranged
GETs), because one S3 request moves about 85-90 MB/s and AWS's guidance for more is one
concurrent request per 85-90 MB/s ("Performance design patterns for Amazon S3",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance-design-patterns.html);
and the worker starts the GET when its invocation starts (``prefetch``), so it runs beside the
round's compute instead of after it.
"""

from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import botocore.exceptions
import numpy as np
from boto3.s3.transfer import TransferConfig

from lambdatrain.protocol.errors import LambdaTrainError
from lambdatrain.storage import traffic
from lambdatrain.storage.digest import algorithm_of, checksum_of

STATE_KIND = "state"  # storage/traffic.py's category of these bytes
PART_BYTES = 16 << 20  # parts of a transfer (S3's multipart minimum is 5 MiB); fewer parts, fewer requests billed
CONCURRENCY = 8  # parts in flight at once: about 8 x 85 MB/s by AWS's per-request guideline
_CHECKSUM_META = "checksum"  # S3 user metadata key (sent as x-amz-meta-checksum)


class MissingState(LambdaTrainError):
    """A piece of a compressed run's state is missing from the bucket or does not match its checksum."""


COMBINER_STATE = ("momentum", "residual")  # the combiner's arrays kept here, per slice
UPDATE = "update"


def state_key(prefix: str, run: str, owner: str, round_no: int) -> str:
    return f"{prefix}{run}/{owner}/r{round_no:06d}.npy"


def residual_key(prefix: str, run: str, worker: int, round_no: int) -> str:
    return state_key(prefix, run, f"w{worker:04d}", round_no)


def combiner_owner(name: str, shard: int) -> str:
    if name not in COMBINER_STATE:
        raise ValueError(f"combiner state {name!r}: one of {', '.join(COMBINER_STATE)}")
    return f"{name}-s{shard:03d}"


@dataclass
class _Held:
    round: int
    residual: np.ndarray


_held: dict[tuple[str, str, int], _Held] = {}  # (bucket, run, worker): this environment's last residual


class StateStore:
    """A compressed run's state in ``bucket`` under ``prefix`` (roles/settings.py's STATE_PREFIX),
    each object written with the tag ``tag`` = ``expiring``, which the bucket's lifecycle rule
    expires (``retag`` gives a stopped run's another value, which it does not)."""

    def __init__(self, s3, bucket: str, prefix: str, checksum: str, tag: str, expiring: str):
        self.s3, self.bucket, self.prefix, self.checksum = s3, bucket, prefix, checksum
        self.tag, self.expiring = tag, expiring

    def key(self, run: str, worker: int, round_no: int) -> str:
        return residual_key(self.prefix, run, worker, round_no)

    # -- a worker's residual ---------------------------------------------------------------------

    def prefetch(self, run: str, worker: int, round_no: int, size: int) -> Future:
        """``get`` started in the background; its ``result()`` is get's answer (or raises its error)."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="residual")
        future = pool.submit(self.get, run, worker, round_no, size)
        pool.shutdown(wait=False)
        return future

    def get(self, run: str, worker: int, round_no: int, size: int) -> np.ndarray | None:
        """The residual worker starts ``round_no`` with (None: zeros, round 0); read-only."""
        if round_no == 0:
            return None
        held = _held.get((self.bucket, run, worker))
        if held is not None and held.round == round_no and held.residual.size == size:
            return held.residual
        return self._get(self.key(run, worker, round_no), np.float32, size,
                         f"worker {worker}'s residual for round {round_no}")

    def put(self, run: str, worker: int, round_no: int, residual: np.ndarray) -> None:
        """Store the residual worker starts ``round_no`` with, and keep it in this environment."""
        self._put(self.key(run, worker, round_no), residual)
        _held[(self.bucket, run, worker)] = _Held(round_no, residual)

    # -- the combiner's ---------------------------------------------------------------------------

    def get_combiner(self, run: str, name: str, shard: int, round_no: int, size: int) -> np.ndarray:
        """Slice ``shard``'s ``name`` (``momentum`` or ``residual``) the combine of ``round_no`` starts
        from; the caller knows it exists (round 0 has none)."""
        key = state_key(self.prefix, run, combiner_owner(name, shard), round_no)
        return self._get(key, np.float32, size, f"the combiner's {name} (slice {shard}) for round {round_no}")

    def put_combiner(self, run: str, name: str, shard: int, round_no: int, array: np.ndarray) -> None:
        self._put(state_key(self.prefix, run, combiner_owner(name, shard), round_no), array)

    def get_update(self, run: str, round_no: int, size: int) -> np.ndarray:
        """Round ``round_no``'s compressed update (uint8, ``size`` bytes), from its weights to the next's."""
        return self._get(state_key(self.prefix, run, UPDATE, round_no), np.uint8, size,
                         f"the update of round {round_no}")

    def put_update(self, run: str, round_no: int, data: np.ndarray) -> None:
        self._put(state_key(self.prefix, run, UPDATE, round_no), data)

    # -- one object -------------------------------------------------------------------------------

    def _get(self, key: str, dtype, size: int, what: str) -> np.ndarray:
        """The array under ``key``, checked against its checksum, dtype and length; read-only."""
        try:
            if parts(size * np.dtype(dtype).itemsize) == 1:  # one request: the body and its checksum together
                answer = self.s3.get_object(Bucket=self.bucket, Key=key)
                expected, body = answer.get("Metadata", {}).get(_CHECKSUM_META, ""), answer["Body"].read()
            else:
                # Its checksum first: an object replaced between the two requests fails the check below.
                expected = self.s3.head_object(Bucket=self.bucket, Key=key).get("Metadata", {}).get(_CHECKSUM_META, "")
                buf = io.BytesIO()
                self.s3.download_fileobj(self.bucket, key, buf, Config=_transfer())
                body = buf.getvalue()
        except botocore.exceptions.ClientError as exc:
            if not _missing(exc):
                raise
            raise MissingState(f"s3://{self.bucket}/{key}: {what} is not in the bucket") from None
        traffic.add(f"s3://{self.bucket}/{key}", "read", len(body), kind=STATE_KIND)
        traffic.done()
        try:
            intact = checksum_of(body, algorithm_of(expected)) == expected
        except ValueError:  # no checksum, or a malformed one
            intact = False
        if not intact:
            raise MissingState(f"s3://{self.bucket}/{key}: does not match its checksum")
        array = np.load(io.BytesIO(body), allow_pickle=False)
        if array.dtype != np.dtype(dtype) or array.shape != (size,):
            raise MissingState(f"s3://{self.bucket}/{key}: holds {array.dtype} {array.shape}, not {size} "
                               f"{np.dtype(dtype)}")
        array.setflags(write=False)
        return array

    def _put(self, key: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
        body = buf.getvalue()
        extra = {"Metadata": {_CHECKSUM_META: checksum_of(body, self.checksum)},
                 "Tagging": urlencode({self.tag: self.expiring})}
        self.s3.upload_fileobj(io.BytesIO(body), self.bucket, key, Config=_transfer(), ExtraArgs=extra)
        traffic.add(f"s3://{self.bucket}/{key}", "write", len(body), kind=STATE_KIND)
        traffic.done()
        array.setflags(write=False)

    # -- a run's rounds ---------------------------------------------------------------------------

    def _versions(self, run: str, rounds: list[int]) -> list[dict[str, Any]]:
        """Every version (and delete marker) of every owner's object of ``rounds``, from one listing
        of the run's prefix (the rounds not yet pruned and the kept epoch boundaries: a page of
        1,000 holds 14 rounds at N = 64)."""
        wanted = {f"/r{r:06d}.npy" for r in rounds}
        found = []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                            Prefix=f"{self.prefix}{run}/"):
            found += [v for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                      if v["Key"][v["Key"].rfind("/"):] in wanted]
        return found

    def retag(self, run: str, rounds: list[int], value: str) -> int:
        """Tag the current version of every object of ``rounds`` (every worker's residual, the
        combiner's slices and update) ``tag`` = ``value``; how many (round 0 has none, an
        unfinished round some)."""
        tagged = 0
        for key in sorted({v["Key"] for v in self._versions(run, rounds) if v.get("IsLatest") and "ETag" in v}):
            try:
                self.s3.put_object_tagging(Bucket=self.bucket, Key=key,
                                           Tagging={"TagSet": [{"Key": self.tag, "Value": value}]})
            except botocore.exceptions.ClientError as exc:
                if not _missing(exc):  # deleted since the listing: nothing to keep
                    raise
                continue
            tagged += 1
        return tagged

    def prune(self, run: str, rounds: list[int]) -> int:
        """Delete every version of every object of ``rounds`` (missing ones are already gone); how many.

        The stack's bucket is versioned (components/storage.py), where deleting a key only hides its
        bytes behind a delete marker and S3 bills them as a noncurrent version until the lifecycle
        rule expires it, a day or two later (at N = 64 in sync mode, 1.8 TB an epoch). Deleting
        each version by its id removes it for good
        (https://docs.aws.amazon.com/AmazonS3/latest/userguide/DeletingObjectVersions.html), a
        re-driven writer's second PUT of a key too.
        """
        versions = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in self._versions(run, rounds)]
        for start in range(0, len(versions), 1000):  # DeleteObjects takes at most 1,000 keys a request
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": versions[start: start + 1000], "Quiet": True})
        return len(versions)


def _missing(exc: botocore.exceptions.ClientError) -> bool:
    """S3 answered that the key is not there (a HEAD says 404, a GET or tagging NoSuchKey)."""
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def parts(nbytes: int) -> int:
    """Parts one transfer of ``nbytes`` moves in (1: a single request)."""
    return 1 if nbytes < PART_BYTES else -(-nbytes // PART_BYTES)


def requests(nbytes: int) -> dict[str, int]:
    """S3 requests of one object's PUT and of its GET, by price class (the planner bills them):
    a multipart PUT is create + parts + complete; a GET in parts is our HEAD (the checksum), the
    managed download's HEAD (the size), then one GET per part; one part is one request either way."""
    k = parts(nbytes)
    return {"put": 1, "get": 1} if k == 1 else {"put": k + 2, "get": k + 2}


def _transfer() -> TransferConfig:
    # use_threads: the parts run concurrently in the caller's process, Lambda's as any other.
    return TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES,
                          max_concurrency=CONCURRENCY, use_threads=True)
