"""Where the operator commands find the stack, and the one place that maps AWS client errors.

A *target* is either the local stack (``--local-state DIR``: the ``endpoints.json`` that
``lambdatrain local serve`` writes; or ``--endpoint URL`` / ``LAMBDATRAIN_ENDPOINT`` for every
service at one URL) or AWS, whose names come from ``--stack-outputs FILE`` (``pulumi stack output
--json``), flags or ``LAMBDATRAIN_*`` variables, and whose credentials come from boto3's chain.
A flag always wins over a file, a file over the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError,
                                 NoCredentialsError, NoRegionError, PartialCredentialsError, ReadTimeoutError)

from lambdatrain.local import names as local_names
from lambdatrain.roles import settings as names
from lambdatrain.protocol.endpoints import is_loopback
from lambdatrain.ops.errors import MissingCredentials, MissingSetting, StackError, StarterFailed, Unreachable

ENV_ENDPOINT = "LAMBDATRAIN_ENDPOINT"
ENV_LOCAL_STATE = "LAMBDATRAIN_LOCAL_STATE"
# The local stack's names (lambdatrain.local.names), used when only an endpoint is given.
LOCAL_NAMES = {"table": local_names.TABLE, "bucket": local_names.BUCKET, "starter": names.STARTER}
# Keys of `pulumi stack output --json` (see __main__.py's pulumi.export calls).
OUTPUT_KEYS = {"table": "tableName", "bucket": "bucketName", "starter": f"{names.STARTER}FunctionName"}
ENV_NAMES = {"table": names.ENV_TABLE, "bucket": names.ENV_BUCKET, "starter": names.ENV_STARTER}
FLAGS = {"table": "--table", "bucket": "--bucket", "starter": "--starter"}
WHAT = {"table": "table name", "bucket": "bucket name", "starter": "starter function name"}
# Reads retry a little; botocore never retries an invoke: ops.control.start retries a start itself, with its run id.
_READ_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)
_INVOKE_CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=900)


def _option(help_: str) -> Any:
    return field(default=None, metadata={"help": help_})


@dataclass(frozen=True)
class TargetOptions:
    """What the user passed; any of it may be None. Each field is an option of every operator
    command (lambdatrain/cli/ops.py), with the help written here."""

    local_state: Path | None = _option(f"the local stack's --state-dir (reads endpoints.json; env {ENV_LOCAL_STATE})")
    endpoint: str | None = _option(f"send every AWS call to this URL (env {ENV_ENDPOINT})")
    lambda_endpoint: str | None = _option("the Lambda API's URL, when it differs from --endpoint")
    stack_outputs: Path | None = _option("the JSON of 'pulumi stack output --json'")
    table: str | None = _option(f"ledger table name (env {names.ENV_TABLE})")
    starter: str | None = _option(f"starter function name (env {names.ENV_STARTER})")
    bucket: str | None = _option(f"stack bucket name (env {names.ENV_BUCKET})")
    mount: Path | None = _option(f"where the EFS file system is mounted here (env {names.ENV_MOUNT})")
    region: str | None = _option("AWS region (default: boto3's)")


@dataclass(frozen=True)
class Target:
    """A resolved stack: endpoints (None on AWS), names, and the EFS mount if it is reachable here."""

    local: bool
    names: Mapping[str, str | None]
    endpoints: Mapping[str, str | None] = field(default_factory=dict)  # service -> URL
    mount: Path | None = None
    region: str | None = None
    flags: tuple[str, ...] = ()  # how to name this target again on the command line

    def name(self, key: str) -> str:
        value = self.names.get(key)
        if not value:
            raise MissingSetting(f"no {WHAT[key]}: pass {FLAGS[key]}, --stack-outputs FILE "
                                 f"(pulumi stack output --json > FILE) or set {ENV_NAMES[key]}")
        return value

    def _kwargs(self, service: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.local:
            kwargs.update(local_names.ACCESS_KEY, region_name=self.region or local_names.REGION)
        if self.endpoints.get(service):
            kwargs["endpoint_url"] = self.endpoints[service]
        return kwargs

    @staticmethod
    def _session() -> boto3.session.Session:
        # A session of its own, not boto3's process-wide default, which keeps the credentials it
        # first resolved: the credentials are looked up when the target is used, as the
        # environment and profile say then (and a library caller's earlier boto3 use cannot leak in).
        return boto3.session.Session()

    def ledger(self):
        from lambdatrain.ledger.table import Ledger

        table = self.name("table")  # a missing name is the first thing to report
        resource = self._session().resource("dynamodb", config=_READ_CONFIG, **self._kwargs("dynamodb"))
        return Ledger(table, resource=resource)

    def s3(self):
        return self._session().client("s3", config=_READ_CONFIG, **self._kwargs("s3"))

    def invoke(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Invoke the starter (RequestResponse) as `aws lambda invoke` would; StarterFailed on a function error."""
        client = self._session().client("lambda", config=_INVOKE_CONFIG, **self._kwargs("lambda"))
        reply = client.invoke(FunctionName=self.name("starter"), InvocationType="RequestResponse",
                              Payload=json.dumps(payload).encode())
        body = json.loads(reply["Payload"].read() or b"null")
        if reply.get("FunctionError"):
            message = body.get("errorMessage", "function error") if isinstance(body, dict) else str(body)
            raise StarterFailed(f"the starter failed: {message}")
        return body

    def enqueue(self, payload: Mapping[str, Any]) -> None:
        """Invoke the starter asynchronously (InvocationType Event): Lambda queues the event and answers 202."""
        # Retried like a read: a second copy of an event that is idempotent (setup) costs nothing.
        client = self._session().client("lambda", config=_READ_CONFIG, **self._kwargs("lambda"))
        client.invoke(FunctionName=self.name("starter"), InvocationType="Event", Payload=json.dumps(payload).encode())


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise MissingSetting(f"no such file: {path} ({what})") from exc
    except ValueError as exc:
        raise MissingSetting(f"{path} is not JSON ({what})") from exc
    if not isinstance(data, dict):
        raise MissingSetting(f"{path} does not hold a JSON object ({what})")
    return data


def _local_state(state_dir: Path) -> dict[str, Any]:
    path = Path(state_dir) / "endpoints.json"
    if not path.is_file():
        raise MissingSetting(f"no {path}: start the local stack with `lambdatrain local serve --state-dir {state_dir}`")
    return _read_json(path, "written by `lambdatrain local serve`")


def resolve(options: TargetOptions, env: Mapping[str, str] | None = None) -> Target:
    """The target that ``options`` (then the environment) name; nothing is contacted yet."""
    env = os.environ if env is None else env
    flagged = {"table": options.table, "bucket": options.bucket, "starter": options.starter}
    state_dir = options.local_state or (Path(env[ENV_LOCAL_STATE]) if env.get(ENV_LOCAL_STATE) else None)
    endpoint = options.endpoint or env.get(ENV_ENDPOINT)
    mount = options.mount or (Path(env[names.ENV_MOUNT]) if env.get(names.ENV_MOUNT) else None)
    if state_dir is not None:
        ends = _local_state(state_dir)
        found = {k: flagged[k] or ends.get(k) for k in flagged}
        found["starter"] = found["starter"] or names.STARTER
        return Target(local=True, names=found, region=options.region,
                      endpoints={"lambda": options.lambda_endpoint or ends.get("lambda"),
                                 "dynamodb": ends.get("dynamodb"), "s3": ends.get("s3")},
                      mount=mount or (Path(ends["mount"]) if ends.get("mount") else None),
                      flags=("--local-state", str(state_dir)))
    if endpoint:
        found = {k: flagged[k] or env.get(ENV_NAMES[k]) or LOCAL_NAMES[k] for k in flagged}
        lambda_url = options.lambda_endpoint or endpoint
        flags = ("--endpoint", endpoint) + (("--lambda-endpoint", lambda_url) if lambda_url != endpoint else ())
        return Target(local=True, names=found, region=options.region, mount=mount, flags=flags,
                      endpoints={"lambda": lambda_url, "dynamodb": endpoint, "s3": endpoint})
    outputs = _read_json(options.stack_outputs, "pulumi stack output --json") if options.stack_outputs else {}
    found = {k: flagged[k] or outputs.get(OUTPUT_KEYS[k]) or env.get(ENV_NAMES[k]) for k in flagged}
    flags = ("--stack-outputs", str(options.stack_outputs)) if options.stack_outputs else ()
    return Target(local=False, names=found, region=options.region, mount=mount, flags=flags,
                  endpoints={"lambda": options.lambda_endpoint})


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


@contextlib.contextmanager
def aws_errors() -> Iterator[None]:
    """Turn botocore's exceptions into one-line operator errors (no traceback at the CLI)."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise MissingCredentials("no AWS credentials found: run `aws configure` (or `aws sso login`), set "
                                 "AWS_PROFILE, or use the local stack with --local-state DIR") from exc
    except NoRegionError as exc:
        raise MissingSetting("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION) or pass --region") from exc
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
        url = _base(str(exc.kwargs.get("endpoint_url", "")))
        hint = "is `lambdatrain local serve` running?" if is_loopback(url) else "check the network and the region"
        raise Unreachable(f"cannot reach {url}: {hint}") from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise StackError(f"{exc.operation_name} failed: {error.get('Code')}: {error.get('Message')}") from exc
    except BotoCoreError as exc:
        raise StackError(" ".join(str(exc).split())) from exc
