"""What the planner can price: the transports (how a worker's result travels) and the recipes
(transport, mode, local steps, global batch) that ``lambdatrain plan`` evaluates by default.

The float transports are the ones a run accepts (``lambdatrain.protocol.config.TRANSPORTS``).
``ternary_ef`` and ``sign_ef`` are the compressed codecs of lambdatrain/training/compress/ with
error feedback; the roles cannot run them yet, so the planner marks their rows ``runnable: false``
("modelled, not yet runnable"). Their sizes come from that package's ``payload_nbytes``, never
from constants here, so a change of block or packing moves the plan with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from lambdatrain.protocol.config import MODES
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
    Transport("ternary_ef", codec="ternary"), Transport("sign_ef", codec="sign"),
)}


def transport(name: str) -> Transport:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise ValueError(f"unknown transport {name!r}; known: {', '.join(TRANSPORTS)}") from None


@dataclass(frozen=True)
class Recipe:
    transport: str
    mode: str = "sync"
    local_steps: int = 1  # optimizer steps per worker per round (average mode only)
    batch_size: int = 128  # global batch of one optimizer step, over all workers

    def __post_init__(self) -> None:
        transport(self.transport)
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; known: {', '.join(MODES)}")
        if self.local_steps < 1 or (self.mode == "sync" and self.local_steps != 1):
            raise ValueError(f"local_steps {self.local_steps}: must be 1 in sync mode and at least 1 in average")
        if self.batch_size < 1:
            raise ValueError(f"batch_size {self.batch_size}: must be at least 1")

    @property
    def label(self) -> str:
        steps = f" K={self.local_steps}" if self.mode == "average" else ""
        return f"{self.transport} {self.mode}{steps}, batch {self.batch_size}"


# The recipes `lambdatrain plan` evaluates when nothing narrows it, defined here only. Batch 128 is
# the training default (its accuracy is the one docs/benchmarks.md measures); the 16-bit
# transports are the ones the 16-bit study compared; local SGD with K = 4 and 16 and the two
# compressed codecs are issue 14's candidates for many workers. Which of them keeps accuracy is
# not decided here: a recipe in this list is priced, not recommended.
RECIPES: tuple[Recipe, ...] = (
    Recipe("float32"),
    Recipe("float16"),
    Recipe("bfloat16"),
    Recipe("float32", "average", 4),
    Recipe("float16", "average", 4),
    Recipe("float16", "average", 16),
    Recipe("ternary_ef"),
    Recipe("sign_ef"),
    Recipe("ternary_ef", "average", 4),
)


def narrow(recipes: Iterable[Recipe], *, transports: Iterable[str] | None = None, modes: Iterable[str] | None = None,
           local_steps: Iterable[int] | None = None, batch_size: int | None = None) -> list[Recipe]:
    """The recipes whose transport, mode and local steps are among those given (None: any), each
    at ``batch_size`` when given; a name that is no transport or mode is an error, as is an
    empty result."""
    transports = None if transports is None else {transport(t).name for t in transports}
    if modes is not None and (unknown := set(modes) - set(MODES)):
        raise ValueError(f"unknown mode {sorted(unknown)[0]!r}; known: {', '.join(MODES)}")
    steps = None if local_steps is None else set(local_steps)
    recipes = list(recipes)
    kept = [r for r in recipes if (transports is None or r.transport in transports)
            and (modes is None or r.mode in modes) and (steps is None or r.local_steps in steps)]
    if not kept:
        raise ValueError("no recipe matches; known: " + "; ".join(r.label for r in recipes))
    return [replace(r, batch_size=batch_size) for r in kept] if batch_size is not None else kept
