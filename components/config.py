"""The stack's settings as one validated dataclass; ``__main__.py`` is the only reader of pulumi.Config.

Every field has the default that an unset config key gets, and ``validate`` turns a bad value into
one line naming the config key (``lambdatrain:<key>``), so the checks are unit-testable without
Pulumi and ``pulumi up`` fails before it creates anything.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lambdatrain.protocol.errors import ConfigError

ARCHITECTURES = ("x86_64", "arm64")
MEMORY_MB = (128, 10240)  # Lambda's limits
TIMEOUT_S = (1, 900)
EPHEMERAL_MB = (512, 10240)
LOG_RETENTION_DAYS = (  # the values CloudWatch Logs accepts
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)
MAX_AZS = 6  # the VPC is carved into /20s: 8 private + 8 public at most, 6 AZs in us-east-1


@dataclass(frozen=True)
class FunctionSettings:
    """Size and limits of one Lambda function."""

    memory_mb: int  # 128..10240; CPU share grows with it (one full vCPU at 1769 MB)
    timeout_s: int  # 1..900
    reserved_concurrency: int | None = None  # None: draw from the account's unreserved pool
    ephemeral_mb: int = 512  # /tmp size; the starter needs room for pip's downloads


@dataclass(frozen=True)
class StackSettings:
    """Everything the components need from the stack configuration."""

    project: str
    stack: str
    workers: int = 4  # workers per round; the start command's default
    architecture: str = "x86_64"  # x86_64 | arm64, for all three functions
    starter: FunctionSettings = field(default_factory=lambda: FunctionSettings(2048, 900, None, 2048))
    worker: FunctionSettings = field(default_factory=lambda: FunctionSettings(10240, 900))
    combiner: FunctionSettings = field(default_factory=lambda: FunctionSettings(4096, 900))
    az_count: int = 2  # availability zones the VPC spans
    nat_per_az: bool = False  # one NAT gateway per AZ (resilient) or one shared (cheap)
    vpc_cidr: str = "10.0.0.0/16"
    log_retention_days: int = 14
    watchdog_minutes: int = 5  # how often EventBridge sends {"watchdog": true} to the combiner
    async_retries: int = 2  # Lambda's retries of a failed asynchronous invocation (0..2)
    log_level: str = "INFO"
    protect: bool = False  # protect the table, file system and bucket from `pulumi destroy`

    def __post_init__(self) -> None:
        self.validate()

    @property
    def tags(self) -> dict[str, str]:
        return {"project": self.project, "stack": self.stack}

    @property
    def prefix(self) -> str:
        """Prefix of every physical name that must be known before deployment (functions, logs)."""
        return f"{self.project}-{self.stack}"

    @property
    def worker_concurrency(self) -> int:
        return self.worker.reserved_concurrency or self.workers

    def validate(self) -> None:
        _check(self.workers >= 1, "workers", f"must be at least 1, got {self.workers}")
        _check(
            self.architecture in ARCHITECTURES,
            "architecture",
            f"must be one of {'|'.join(ARCHITECTURES)}, got {self.architecture!r}",
        )
        for name in ("starter", "worker", "combiner"):
            _check_function(name, getattr(self, name))
        reserved = self.worker.reserved_concurrency
        _check(
            reserved is None or reserved >= self.workers,
            "workerConcurrency",
            f"must be at least workers ({self.workers}) or every round is throttled, got {reserved}",
        )
        _check(1 <= self.az_count <= MAX_AZS, "azCount", f"must be 1..{MAX_AZS}, got {self.az_count}")
        _check_cidr(self.vpc_cidr)
        _check(
            self.log_retention_days in LOG_RETENTION_DAYS,
            "logRetentionDays",
            f"must be one CloudWatch accepts {LOG_RETENTION_DAYS}, got {self.log_retention_days}",
        )
        _check(
            1 <= self.watchdog_minutes <= 1440,
            "watchdogMinutes",
            f"must be 1..1440, got {self.watchdog_minutes}",
        )
        _check(0 <= self.async_retries <= 2, "asyncRetries", f"must be 0..2, got {self.async_retries}")


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"lambdatrain:{key} {problem}")


def _check_function(name: str, fn: FunctionSettings) -> None:
    low, high = MEMORY_MB
    _check(low <= fn.memory_mb <= high, f"{name}Memory", f"must be {low}..{high} MB, got {fn.memory_mb}")
    low, high = TIMEOUT_S
    _check(low <= fn.timeout_s <= high, f"{name}Timeout", f"must be {low}..{high} s, got {fn.timeout_s}")
    low, high = EPHEMERAL_MB
    _check(
        low <= fn.ephemeral_mb <= high,
        f"{name}EphemeralStorage",
        f"must be {low}..{high} MB, got {fn.ephemeral_mb}",
    )
    _check(
        fn.reserved_concurrency is None or fn.reserved_concurrency >= 1,
        f"{name}Concurrency",
        f"must be at least 1 (or unset), got {fn.reserved_concurrency}",
    )


def _check_cidr(cidr: str) -> None:
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError:
        network = None
    _check(
        network is not None and 16 <= network.prefixlen <= 19,
        "vpcCidr",
        f"must be an IPv4 network from /16 to /19, got {cidr!r}",
    )


def subnet_cidrs(vpc_cidr: str, az_count: int) -> tuple[list[str], list[str]]:
    """(private, public) CIDRs, one each per AZ: private from the bottom half, public from the top."""
    network = ipaddress.IPv4Network(vpc_cidr)
    blocks = list(network.subnets(new_prefix=network.prefixlen + 4))
    half = len(blocks) // 2
    private = [str(b) for b in blocks[:az_count]]
    public = [str(b) for b in blocks[half : half + az_count]]
    return private, public
