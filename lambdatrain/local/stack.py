"""The local stack: moto (DynamoDB + streams, S3), the Lambda service, the stream poller, a
watchdog timer, and a folder as the EFS mount, wired with the same environment variables and
schema the Pulumi program deploys.

    with LocalStack(LocalStackConfig(state_dir=Path("out/stack"))) as stack:
        stack.invoke("starter", {"start": True, "workers": 4})
"""

from __future__ import annotations

import errno
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from lambdatrain.ledger import schema
from lambdatrain.protocol.errors import ConfigError
from lambdatrain.roles import settings as names
from lambdatrain.local.durable import DurableBucket, atomic_write
from lambdatrain.local.moto_server import MotoServer
from lambdatrain.local.names import ACCESS_KEY, BUCKET, REGION, TABLE
from lambdatrain.local.poller import StreamPoller
from lambdatrain.local.environment import FunctionConfig
from lambdatrain.local.errors import InvocationError
from lambdatrain.local.service import Delivery, LambdaService
from lambdatrain.protocol.limits import INIT_TIMEOUT_S, MAX_TIMEOUT_S, MB_PER_VCPU

REPO_ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY["aws_access_key_id"],
               "AWS_SECRET_ACCESS_KEY": ACCESS_KEY["aws_secret_access_key"], "AWS_DEFAULT_REGION": REGION}


@dataclass
class LocalStackConfig:
    state_dir: Path  # holds efs/ (the mount), s3/ (the bucket's mirror, durable.py), logs/ and dlq/
    worker_memory_mb: int = MB_PER_VCPU  # 1 thread each (Lambda's 1,769 MB per vCPU)
    worker_timeout_s: float = MAX_TIMEOUT_S
    combiner_memory_mb: int = 2 * MB_PER_VCPU  # 2 threads
    combiner_timeout_s: float = MAX_TIMEOUT_S
    worker_concurrency: int = 8
    # Lambda's on-demand init limit; an init past it is run again inside the invocation's timeout
    # (environment.py). Tests that need a worker's full timeout on a loaded machine lengthen it.
    init_timeout_s: float = INIT_TIMEOUT_S
    watchdog_interval_s: float = 10.0  # how often the watchdog event fires (EventBridge on AWS)
    lambda_port: int = 0  # 0: any free port
    moto_port: int = 0
    retry_delays_s: tuple[float, ...] = (1.0, 2.0)  # Lambda's 1 and 2 minutes, in seconds
    delivery: Delivery = field(default_factory=Delivery)  # fault injection: invoke service
    stream_duplicate_rate: float = 0.0  # fault injection: stream poller
    stream_drop_rate: float = 0.0
    # Stream delivery. Every table write wakes the poller, so a READY round reaches the combiner
    # at once. AWS's mapping polls each shard 4 times a second (Lambda developer guide, "Using
    # AWS Lambda with Amazon DynamoDB"), i.e. ~0.125 s on average, up to 0.25 s, before the
    # invocation: set stream_latency_s=0.25 to model its worst case.
    stream_latency_s: float = 0.0
    stream_idle_poll_s: float = 1.0  # safety net: read the stream this often with no write seen
    faults: str | None = None  # LAMBDATRAIN_FAULTS for the handlers
    table: str = TABLE  # moto keeps one set of tables per process: two stacks in one need two names
    bucket: str = BUCKET
    extra_env: dict[str, str] = field(default_factory=dict)


class LocalStack:
    def __init__(self, config: LocalStackConfig):
        self.config = config
        self.state_dir = Path(config.state_dir).resolve()
        self.mount = self.state_dir / "efs"
        self.moto = None
        self.service: LambdaService | None = None
        self.poller: StreamPoller | None = None
        self._watchdog_stop = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "LocalStack":
        """Start every part; a part that fails stops the ones already up (no server left behind)."""
        try:
            return self._start()
        except OSError as exc:
            self.stop()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"a port the local stack needs is in use ({exc.strerror}): pass another "
                                  f"--port, or 0 for any free one") from exc
            raise
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "LocalStack":
        self.mount.mkdir(parents=True, exist_ok=True)
        self.moto = MotoServer(self.config.moto_port)
        self.moto.start()
        self.moto_url = self.moto.url
        self._create_resources()
        self.service = LambdaService(self._functions(), self.env, self.state_dir,
                                     delivery=self.config.delivery)
        self.lambda_url = self.service.serve(self.config.lambda_port)
        self.env["AWS_ENDPOINT_URL_LAMBDA"] = self.lambda_url
        self._start_poller()
        threading.Thread(target=self._watchdog_loop, daemon=True, name="watchdog").start()
        return self

    def stop(self) -> None:
        self._watchdog_stop.set()
        # The poller first told to stop, then the functions killed, then the poller joined: a
        # delivery in flight (a combine the poller waits on) ends with its function at once,
        # instead of holding the shutdown for up to the poller's 30 s join.
        if self.poller:
            self.poller.request_stop()
        if self.service:
            self.service.stop()
        if self.poller:
            self.poller.stop()
        if self.moto:
            self.moto.stop()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- wiring --------------------------------------------------------------------------------
    @property
    def client_kwargs(self) -> dict[str, Any]:
        return {"endpoint_url": self.moto_url, "region_name": REGION, **ACCESS_KEY}

    def _create_resources(self) -> None:
        dynamodb = boto3.client("dynamodb", **self.client_kwargs)
        dynamodb.create_table(**schema.create_table_kwargs(self.config.table))
        self.stream_arn = dynamodb.describe_table(TableName=self.config.table)["Table"]["LatestStreamArn"]
        s3 = boto3.client("s3", **self.client_kwargs)
        s3.create_bucket(Bucket=self.config.bucket)
        # Versioned, as the stack's bucket is (components/storage.py): deletes behave as on AWS.
        s3.put_bucket_versioning(Bucket=self.config.bucket, VersioningConfiguration={"Status": "Enabled"})
        # The bucket outlives this moto, as S3 outlives an outage: restored from, then mirrored to, disk.
        bucket = DurableBucket(self.state_dir / "s3", self.config.bucket)
        bucket.restore(s3)
        self.moto.s3_listeners.append(bucket.sync)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMBDATRAIN_"))},
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto_url,
            names.ENV_TABLE: self.config.table, names.ENV_MOUNT: str(self.mount), names.ENV_BUCKET: self.config.bucket,
            names.ENV_STARTER: names.STARTER, names.ENV_WORKER: names.WORKER, names.ENV_COMBINER: names.COMBINER,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            **self.config.extra_env,
        }
        if self.config.faults:
            self.env[names.ENV_FAULTS] = self.config.faults

    def _functions(self) -> list[FunctionConfig]:
        c = self.config
        handler = lambda name: REPO_ROOT / "functions" / name / "handler.py"  # noqa: E731
        return [
            FunctionConfig(names.STARTER, handler(names.STARTER), memory_mb=3538, timeout_s=300,
                           concurrency=2, retry_delays_s=c.retry_delays_s, init_timeout_s=c.init_timeout_s),
            FunctionConfig(names.WORKER, handler(names.WORKER), memory_mb=c.worker_memory_mb,
                           timeout_s=c.worker_timeout_s, concurrency=c.worker_concurrency,
                           retry_delays_s=c.retry_delays_s, init_timeout_s=c.init_timeout_s),
            FunctionConfig(names.COMBINER, handler(names.COMBINER), memory_mb=c.combiner_memory_mb,
                           timeout_s=c.combiner_timeout_s, concurrency=2, retry_delays_s=c.retry_delays_s,
                           init_timeout_s=c.init_timeout_s),
        ]

    def _start_poller(self) -> None:
        streams = boto3.client("dynamodbstreams", **self.client_kwargs)
        combiner = self.service.function(names.COMBINER)

        def deliver(batch: dict[str, Any]) -> Any:
            return combiner.invoke_sync(batch)

        self.poller = StreamPoller(streams, self.stream_arn, deliver,
                                   lambda batch, error: self.service.dead_letter("stream", batch, "", error),
                                   idle_poll_s=self.config.stream_idle_poll_s, latency_s=self.config.stream_latency_s,
                                   duplicate_rate=self.config.stream_duplicate_rate,
                                   drop_rate=self.config.stream_drop_rate)
        self.moto.write_listeners.append(self.poller.wake)
        self.poller.start()

    def _watchdog_loop(self) -> None:
        while not self._watchdog_stop.wait(self.config.watchdog_interval_s):
            if self.service and not self.service.stopping:
                self.service.function(names.COMBINER).enqueue({"watchdog": True})

    # --- use -----------------------------------------------------------------------------------
    def prewarm(self, counts: dict[str, int]) -> None:
        """Initialise ``counts[function]`` execution environments now, in the background.

        Lambda's provisioned concurrency: the functions' imports (torch) run before the first
        invocation, e.g. while the starter prepares a run, instead of inside round 0, where
        cold workers and a cold combiner all importing torch at once on a small machine added
        15-20 s to the first round. Invocations that arrive meanwhile wait for these
        environments rather than start more.
        """
        for name, n in counts.items():
            self.service.function(name).prewarm(n)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """A RequestResponse invocation; a function error raises InvocationError."""
        return self.service.function(function).invoke_sync(event)

    def ledger(self):
        from lambdatrain.ledger.table import Ledger

        return Ledger(self.config.table, resource=boto3.resource("dynamodb", **self.client_kwargs))

    def endpoints(self) -> dict[str, str]:
        return {"lambda": self.lambda_url, "dynamodb": self.moto_url, "s3": self.moto_url,
                "mount": str(self.mount), "table": self.config.table, "bucket": self.config.bucket,
                "stream": self.stream_arn}

    def write_endpoints(self) -> Path:
        path = self.state_dir / "endpoints.json"
        # Atomically: clients wait for the file to appear and read it at once (an empty read was seen).
        atomic_write(path, json.dumps(self.endpoints(), indent=2).encode())
        return path


__all__ = ["LocalStack", "LocalStackConfig", "InvocationError"]
