"""The operator commands' errors: each one a sentence that tells the user what to do next."""

from __future__ import annotations

from lambdatrain.protocol.errors import LambdaTrainError


class OpsError(LambdaTrainError):
    """Base of the operator commands' errors."""


class MissingSetting(OpsError):
    """A name the command needs (table, starter, bucket) was given nowhere."""


class MissingCredentials(OpsError):
    """boto3 found no AWS credentials in its chain."""


class Unreachable(OpsError):
    """An endpoint refused or dropped the connection."""


class StackError(OpsError):
    """AWS answered with an error (missing table or function, access denied, ...)."""


class StarterFailed(OpsError):
    """The starter function raised; the message is its one-line error."""


class StartUnanswered(OpsError):
    """Every attempt to start a run timed out or failed transiently: it may have started."""


class MountUnavailable(OpsError):
    """The run's files are on EFS and EFS is not mounted here."""
