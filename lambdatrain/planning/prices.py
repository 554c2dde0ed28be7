"""What the planner charges for: AWS's prices, with where each comes from.

Prices (us-east-1, as published on 2025-06-01; check before relying on them):

* Lambda https://aws.amazon.com/lambda/pricing/: x86 $0.0000166667 and arm64 $0.0000133334 per
  GB-second; $0.20 per 1M requests.
* EFS https://aws.amazon.com/efs/pricing/: Elastic Throughput reads $0.03/GB, writes $0.06/GB.
* DynamoDB https://aws.amazon.com/dynamodb/pricing/on-demand/: $0.625 per million write request
  units (on-demand, after the November 2024 price cut).
* EFS limits https://docs.aws.amazon.com/efs/latest/ug/performance.html: we assume 500 MiB/s per
  client and Elastic file-system limits of 10 GiB/s read and 3 GiB/s write (Region-dependent).
* S3 Standard https://aws.amazon.com/s3/pricing/: PUT (and POST, LIST) $0.005 per 1,000 requests,
  GET $0.0004 per 1,000; no per-GB charge for transfers inside the Region. DeleteObjects is a POST,
  priced here as a PUT (the page lists DELETE itself as free: this errs high by $5 per million
  rounds), and so is the listing of versions before it. Storage $0.023 per GB-month: an epoch
  boundary's state, N residuals and the combiner's (about (N + 2) x 4P bytes an epoch), stays
  billed for up to ``STATE_KEPT_DAYS`` (see the constant); every other round's goes, every
  version, within a few rounds.
* S3 per request, "Performance design patterns for Amazon S3"
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance-design-patterns.html:
  "Make one concurrent request for each 85-90 MB/s of desired network throughput" (said of EC2 in
  the Region; Lambda publishes no network bandwidth); the worker makes one request per object, so
  we assume 85 MB/s, the low end (``lambdatrain plan --s3-mbps`` changes it). For small requests
  "median latencies are often in the tens of milliseconds range" (the same page): we assume 30 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

from lambdatrain.roles.settings import STATE_EXPIRY_DAYS

ARCHITECTURES = ("x86_64", "arm64")  # Lambda's, each with its GB-second price (Prices.for_arch)
# Days an epoch boundary's state stays billed. The combiner deletes every version of a round's state
# (residuals, momentum, update) with its weights (storage/retention.py, storage/state.py: minutes
# after they were written, not priced), but keeps the epoch boundaries' as checkpoints to resume
# from; the bucket's lifecycle rule expires those STATE_EXPIRY_DAYS after they were written
# (declared with the rule's other numbers in lambdatrain/roles/settings.py), and S3 rounds a rule's
# time up to the next midnight UTC, up to one more day ("Lifecycle configuration elements",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/intro-lifecycle-rules.html). The worst case.
STATE_KEPT_DAYS = STATE_EXPIRY_DAYS + 1
DAYS_PER_MONTH = 30.4  # S3 bills storage per GB-month, prorated by the hour


@dataclass(frozen=True)
class Prices:
    gb_second: float = 0.0000166667  # Lambda x86; arm64 is 0.0000133334
    request: float = 0.20 / 1e6
    efs_read_gb: float = 0.03
    efs_write_gb: float = 0.06
    dynamodb_wru: float = 0.625 / 1e6
    s3_put: float = 0.005 / 1000  # PUT, POST (DeleteObjects), LIST
    s3_get: float = 0.0004 / 1000
    s3_gb_month: float = 0.023  # S3 Standard, first 50 TB

    @classmethod
    def for_arch(cls, arch: str) -> "Prices":
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}: one of {', '.join(ARCHITECTURES)}")
        return cls(gb_second=0.0000133334) if arch == "arm64" else cls()
