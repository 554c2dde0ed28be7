"""The transports the planner prices: how a worker's result travels, and how many bytes one takes.

A transport is runnable when a run accepts it (``lambdatrain.protocol.config.TRANSPORTS``): the
float transports and the compressed ``ternary_ef`` and ``sign_ef`` (the codecs of
lambdatrain/training/compress/ with error feedback). The codecs' sizes come from that package's
``payload_nbytes``, never from constants here, so a change of block or packing moves the plan
with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lambdatrain.protocol.config import COMPRESSED
from lambdatrain.protocol.config import TRANSPORTS as RUNNABLE_TRANSPORTS


@dataclass(frozen=True)
class Transport:
    name: str
    bytes_per_param: int = 0  # a float dtype's width; 0 for a codec, sized by payload_nbytes
    codec: str | None = None  # lambdatrain.training.compress codec name, None for a float dtype

    @property
    def runnable(self) -> bool:
        return self.name in RUNNABLE_TRANSPORTS

    def payload_bytes(self, params: int) -> int:
        """Bytes of one result of a ``params``-element vector in this transport."""
        if self.codec is None:
            return params * self.bytes_per_param
        # Imported here: lambdatrain.training pulls in torch, which `lambdatrain --help` should not pay.
        from lambdatrain.training.compress import payload_nbytes

        return payload_nbytes(params, self.codec)


TRANSPORTS = {t.name: t for t in (
    Transport("float32", 4), Transport("float16", 2), Transport("bfloat16", 2),
    *(Transport(name, codec=codec) for name, codec in COMPRESSED.items()),
)}


def transport(name: str) -> Transport:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise ValueError(f"unknown transport {name!r}; known: {', '.join(TRANSPORTS)}") from None
