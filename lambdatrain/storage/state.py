"""Where each worker's error-feedback residual lives between rounds: the stack's S3 bucket.

A compressed transport (``ternary_ef``, ``sign_ef``) leaves every worker with a residual, the part
of its corrected result the payload could not say (training/feedback.py). It is dense, float32 and
as large as the parameters, and Lambda does not route worker i's next invocation to the environment
that holds it, so it must be stored between rounds; on EFS it would cost more traffic than the
compression saves (EFS bills every byte read and written, S3 inside a region bills requests only:
https://aws.amazon.com/s3/pricing/, https://aws.amazon.com/efs/pricing/). docs/benchmarks.md,
"Traffic", says why S3 and what it costs per round.

Keys are per (run, worker, round): ``state/<run>/wNNNN/rNNNNNN.npy`` holds the residual a worker
*starts* round r with. A worker reads round r's and writes round r + 1's, so a re-driven or
duplicated worker reads the same immutable input and writes the same bytes (S3 keeps whole
objects, and the last of several PUTs of one key wins:
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
    """A worker's residual is missing from the bucket or does not match its checksum."""


def residual_key(prefix: str, run: str, worker: int, round_no: int) -> str:
    return f"{prefix}{run}/w{worker:04d}/r{round_no:06d}.npy"


@dataclass
class _Held:
    round: int
    residual: np.ndarray


_held: dict[tuple[str, str, int], _Held] = {}  # (bucket, run, worker): this environment's last residual


class ResidualStore:
    """Per-worker residuals in ``bucket`` under ``prefix`` (roles/settings.py's STATE_PREFIX), each
    written with the tag ``tag`` = ``expiring``, which the bucket's lifecycle rule expires
    (``retag`` gives a stopped run's another value, which it does not)."""

    def __init__(self, s3, bucket: str, prefix: str, checksum: str, tag: str, expiring: str):
        self.s3, self.bucket, self.prefix, self.checksum = s3, bucket, prefix, checksum
        self.tag, self.expiring = tag, expiring

    def key(self, run: str, worker: int, round_no: int) -> str:
        return residual_key(self.prefix, run, worker, round_no)

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
        key = self.key(run, worker, round_no)
        try:
            # Its checksum first: an object replaced between the two requests fails the check below.
            expected = self.s3.head_object(Bucket=self.bucket, Key=key).get("Metadata", {}).get(_CHECKSUM_META, "")
            buf = io.BytesIO()
            self.s3.download_fileobj(self.bucket, key, buf, Config=_transfer())
        except botocore.exceptions.ClientError as exc:
            if not _missing(exc):
                raise
            raise MissingState(f"s3://{self.bucket}/{key}: worker {worker}'s residual for round {round_no} "
                               f"is not in the bucket") from None
        body = buf.getvalue()
        traffic.add(f"s3://{self.bucket}/{key}", "read", len(body), kind=STATE_KIND)
        traffic.done()
        try:
            intact = checksum_of(body, algorithm_of(expected)) == expected
        except ValueError:  # no checksum, or a malformed one
            intact = False
        if not intact:
            raise MissingState(f"s3://{self.bucket}/{key}: does not match its checksum")
        residual = np.load(io.BytesIO(body), allow_pickle=False)
        if residual.dtype != np.float32 or residual.shape != (size,):
            raise MissingState(f"s3://{self.bucket}/{key}: holds {residual.dtype} {residual.shape}, "
                               f"not {size} float32")
        residual.setflags(write=False)
        return residual

    def put(self, run: str, worker: int, round_no: int, residual: np.ndarray) -> None:
        """Store the residual worker starts ``round_no`` with, and keep it in this environment."""
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(residual, dtype=np.float32), allow_pickle=False)
        body = buf.getvalue()
        key = self.key(run, worker, round_no)
        extra = {"Metadata": {_CHECKSUM_META: checksum_of(body, self.checksum)},
                 "Tagging": urlencode({self.tag: self.expiring})}
        self.s3.upload_fileobj(io.BytesIO(body), self.bucket, key, Config=_transfer(), ExtraArgs=extra)
        traffic.add(f"s3://{self.bucket}/{key}", "write", len(body), kind=STATE_KIND)
        traffic.done()
        residual.setflags(write=False)
        _held[(self.bucket, run, worker)] = _Held(round_no, residual)

    def retag(self, run: str, workers: int, rounds: list[int], value: str) -> int:
        """Tag the current version of every worker's residual of ``rounds`` ``tag`` = ``value``
        (the missing ones skipped: round 0 has none, an unfinished round some); how many."""
        tagged = 0
        for key in (self.key(run, w, r) for r in rounds for w in range(workers)):
            try:
                self.s3.put_object_tagging(Bucket=self.bucket, Key=key,
                                           Tagging={"TagSet": [{"Key": self.tag, "Value": value}]})
            except botocore.exceptions.ClientError as exc:
                if not _missing(exc):
                    raise
                continue
            tagged += 1
        return tagged

    def prune(self, run: str, workers: int, rounds: list[int]) -> int:
        """Delete every version of the residuals of ``rounds`` for every worker (missing ones are
        already gone); how many versions.

        The stack's bucket is versioned (components/storage.py), where deleting a key only hides its
        bytes behind a delete marker and S3 bills them as a noncurrent version until the lifecycle
        rule expires it, a day or two later (at N = 64 in sync mode, 1.8 TB an epoch). Deleting
        each version by its id removes it for good
        (https://docs.aws.amazon.com/AmazonS3/latest/userguide/DeletingObjectVersions.html); the
        versions come from one listing of the run's prefix (the rounds not yet pruned and the kept
        epoch boundaries: a page of 1,000 holds 15 rounds at N = 64), so a re-driven worker's
        second PUT of a key goes too.
        """
        wanted = {self.key(run, w, r) for r in rounds for w in range(workers)}
        versions = []
        listing = self.s3.get_paginator("list_object_versions")
        pages = listing.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{run}/")
        for page in pages:
            versions += [{"Key": v["Key"], "VersionId": v["VersionId"]}
                         for v in page.get("Versions", []) + page.get("DeleteMarkers", []) if v["Key"] in wanted]
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
    """S3 requests of one residual's PUT and of its GET, by price class (the planner bills them):
    a multipart PUT is create + parts + complete; a GET is our HEAD (the checksum), the managed
    download's HEAD (the size), then one GET per part."""
    k = parts(nbytes)
    return {"put": 1 if k == 1 else k + 2, "get": 2 + k}


def _transfer() -> TransferConfig:
    # use_threads: the parts run concurrently in the caller's process, Lambda's as any other.
    return TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES,
                          max_concurrency=CONCURRENCY, use_threads=True)
