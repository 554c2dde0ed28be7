"""Structured JSON logs: one line per event, with run id, round, worker number and timings.

Powertools for AWS Lambda's Logger formats the lines (and adds the Lambda context's request id
and cold-start flag); the handlers append the keys of the event they serve.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="lambdatrain")


def bind(**keys) -> None:
    """Keys that every following line of this invocation carries (run, round, worker)."""
    logger.append_keys(**{k: v for k, v in keys.items() if v is not None})
