"""A file's digest (length and checksum), recorded beside it and in the ledger; the checksums.

A checksum is self-describing, ``"<algorithm>:<hex>"``, so a reader verifies with whatever the
writer used and a run's setting (``RunConfig.checksum``) can change without breaking old files.

Why XXH3-128 is the default and SHA-256 the option: the digest guards against accidents (a torn
or truncated write, a file from another attempt, bit rot), which a 128-bit non-cryptographic
hash detects with certainty for practical purposes, at ~10 GB/s against SHA-256's ~1.4 GB/s
(SHA-NI). Against an adversary SHA-256 adds nothing here: every principal that can write a file
on the mount (the file system policy admits only our functions' roles) can also write the ledger
item that records its checksum. The combine reads every worker file each round, so the hash is
on its critical path (bench/combine.py measures it).

Kept apart from layout.py so the ledger (and so every handler's import path) needs no numpy:
on a fresh stack the starter must load before ``setup`` has installed numpy on the mount;
xxhash is imported only when a checksum is computed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from lambdatrain.protocol.config import CHECKSUMS, DEFAULTS

ALGORITHMS = CHECKSUMS  # the names a run may choose, declared by the protocol
DEFAULT_ALGORITHM = DEFAULTS["checksum"]
_CHECKSUM = re.compile(r"^(?P<algorithm>[a-z0-9_]+):(?P<hex>[0-9a-f]+)$")


class Hasher(Protocol):
    def update(self, data: Any, /) -> None: ...
    def hexdigest(self) -> str: ...


def new_hasher(algorithm: str) -> Hasher:
    if algorithm == "xxh3_128":
        import xxhash  # not at module import: see the module docstring

        return xxhash.xxh3_128()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown checksum algorithm {algorithm!r}, expected one of {list(ALGORITHMS)}")


def finish(algorithm: str, hasher: Hasher) -> str:
    """The checksum string of a hasher made by :func:`new_hasher`."""
    return f"{algorithm}:{hasher.hexdigest()}"


def checksum_of(data: Any, algorithm: str) -> str:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return finish(algorithm, hasher)


def algorithm_of(checksum: str) -> str:
    """The algorithm a checksum names; ValueError for a malformed or unknown one."""
    match = _CHECKSUM.match(checksum)
    if match is None or match["algorithm"] not in ALGORITHMS:
        raise ValueError(f"malformed checksum {checksum[:80]!r}")
    return match["algorithm"]


@dataclass(frozen=True)
class Digest:
    bytes: int
    checksum: str  # "<algorithm>:<hex>"
    # The checksums of element slices of the array (a sharded combine's S slices, efs.write_array's
    # ``ranges``), so a share reads and verifies only its own slice. Recorded beside the file, not in
    # the ledger, and not part of a digest's identity: the whole file's length and checksum are.
    ranges: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"bytes": self.bytes, "checksum": self.checksum}
        return {**d, "ranges": list(self.ranges)} if self.ranges else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Digest":
        return cls(bytes=int(d["bytes"]), checksum=str(d["checksum"]),
                   ranges=tuple(str(c) for c in d.get("ranges", ())))
