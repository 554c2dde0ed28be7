"""Every domain error of lambdatrain, on one base class.

Only the CLI (and the handlers' outermost edge) catch broadly; everything else raises one of these
so a caller can tell bad input from a lost race from a broken file.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path


class LambdaTrainError(Exception):
    """Base of every error lambdatrain raises on purpose."""


class InvalidEvent(LambdaTrainError):
    """An event or setting failed validation; ``field`` names the offending key."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        # repr: a field name from an event may hold quotes or newlines; the message stays one line.
        super().__init__(f"invalid field {field!r}: {problem}")


class DataError(LambdaTrainError):
    """A dataset path or format could not be used."""


class UnknownRun(LambdaTrainError):
    """No run with this id exists in the ledger."""


class StaleRound(LambdaTrainError):
    """An event refers to a round that is not the run's current one (a late or duplicate delivery)."""


class AlreadyDone(LambdaTrainError):
    """The step was already carried out by an earlier delivery; the caller treats it as a no-op."""


class ClaimLost(LambdaTrainError):
    """Another combiner holds (or committed) this round."""


class CorruptFile(LambdaTrainError):
    """A file on the shared file system does not match the length and checksum recorded for it.

    ``path`` is the file (or the round's folder, when a round lacks files); ``worker`` is the
    worker whose result it is, when the reader knows (the combine does, and re-runs that worker).
    """

    def __init__(self, path: PathLike, problem: str, *, worker: int | None = None):
        self.path = Path(path)
        self.problem = problem
        self.worker = worker
        super().__init__(f"{path}: {problem}")

    def of_worker(self, worker: int) -> "CorruptFile":
        """The same error, naming the worker whose result the file is."""
        return CorruptFile(self.path, self.problem, worker=worker)


class ConfigError(LambdaTrainError):
    """The runtime environment lacks a setting, or a setting has a bad value."""
