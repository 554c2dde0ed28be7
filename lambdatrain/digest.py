"""A file's digest (length and SHA-256), recorded beside it and in the ledger.

Kept apart from layout.py so the ledger (and so every handler's import path) needs no numpy:
on a fresh stack the starter must load before ``setup`` has installed numpy on the mount.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Digest:
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Digest":
        return cls(bytes=int(d["bytes"]), sha256=str(d["sha256"]))
