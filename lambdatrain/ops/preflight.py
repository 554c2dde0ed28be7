"""``lambdatrain preflight``: what the account's Lambda limits will refuse, said before ``pulumi up`` or ``start``.

The stack's sizing comes from ``pulumi stack output --json`` (its ``sizing`` output, __main__.py)
or from a ``Pulumi.<stack>.yaml`` read through the declaration beside it (components/config.py, so
unset keys take their defaults); the account's limits from Lambda's GetAccountSettings
(docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html): ``ConcurrentExecutions``, the
Region's limit, and ``UnreservedConcurrentExecutions``, what no function has reserved. The stack's
own functions' current reservations (GetFunctionConcurrency) count as free again, since a
deployment replaces them. The checks:

- reservations: Lambda keeps 100 executions unreserved and refuses a reservation that would leave
  fewer (docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html);
- a run's workers and combine shards against the worker's and combiner's reservations;
- a round's demand on the unreserved pool (workers, combine shards, the starter, for each function
  that reserves nothing): beyond it, Lambda throttles;
- memory above 3008 MB, a warning: new accounts have reduced memory quotas
  (docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html) and no API reports them.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lambdatrain.ops.errors import MissingSetting
from lambdatrain.ops.target import _read_json as read_json  # the same file, read as every command reads it
from lambdatrain.ops.views import plural
from lambdatrain.protocol.limits import NEW_ACCOUNT_MEMORY_MB, UNRESERVED_CONCURRENCY
from lambdatrain.roles.settings import COMBINER, FUNCTIONS, STARTER, WORKER

CONCURRENCY_QUOTA = "L-B99A9384"  # Service Quotas' code of Lambda's "Concurrent executions"
RAISE = (f"raise Lambda's 'Concurrent executions' quota ({CONCURRENCY_QUOTA}) to at least {{need}}: "
         f"aws service-quotas request-service-quota-increase --service-code lambda "
         f"--quota-code {CONCURRENCY_QUOTA} --desired-value {{need}}")


@dataclass(frozen=True)
class Function:
    name: str | None  # the deployed name, whose current reservation counts as free again
    memory_mb: int
    reserved: int | None  # reserved concurrency; None: the unreserved pool


@dataclass(frozen=True)
class Sizing:
    """What the stack asks of Lambda, from either source."""

    source: str  # the file it came from, for messages
    workers: int  # the stack's default workers per run
    functions: dict[str, Function]  # logical name -> its sizing
    region: str | None


@dataclass(frozen=True)
class Account:
    region: str | None
    concurrency: int  # ConcurrentExecutions
    unreserved: int  # UnreservedConcurrentExecutions
    held: int  # what the stack's own functions reserve now (already out of ``unreserved``)


@dataclass(frozen=True)
class Finding:
    level: str  # "error": the account will refuse it; "warning": it may
    check: str  # reservations, workers, combine_shards, concurrency or memory
    message: str


def from_outputs(path: Path) -> Sizing:
    """A deployed stack's sizing, from its ``pulumi stack output --json``."""
    outputs = read_json(path, "pulumi stack output --json > FILE")
    sizing = outputs.get("sizing")
    try:
        specs = {logical: sizing["functions"][logical] for logical in FUNCTIONS}  # all three, or KeyError
        functions = {logical: Function(outputs.get(f"{logical}FunctionName"), int(spec["memoryMb"]),
                                        spec.get("reservedConcurrency"))  # null may be left out
                     for logical, spec in specs.items()}
        return Sizing(str(path), int(sizing["workers"]), functions, sizing.get("region"))
    except (TypeError, KeyError, ValueError):
        raise MissingSetting(f"{path} has no valid 'sizing' output: `pulumi up` this version of the stack, "
                             "or pass --stack-config Pulumi.<stack>.yaml") from None


def from_stack_config(path: Path) -> Sizing:
    """A stack's sizing from its ``Pulumi.<stack>.yaml``, with the declaration's defaults for unset keys."""
    path = Path(path)
    parts = path.name.split(".")
    if len(parts) != 3 or parts[0] != "Pulumi" or parts[2] not in ("yaml", "yml") or not path.is_file():
        raise MissingSetting(f"{path} is not a stack config file: pass Pulumi.<stack>.yaml from the project folder")
    declaration = _declaration(path.parent.resolve())
    project = (_yaml(path.parent / "Pulumi.yaml") or {}).get("name", "lambdatrain")
    config = {k.removeprefix("lambdatrain:"): v for k, v in declaration.stack_config(parts[1], path.parent).items()}
    settings = declaration.StackSettings.from_config(config.get, project=project, stack=parts[1])
    functions = {logical: Function(f"{settings.prefix}-{logical}", getattr(settings, logical).memory_mb,
                                   getattr(settings, logical).reserved_concurrency) for logical in FUNCTIONS}
    return Sizing(str(path), settings.workers, functions, config.get("aws:region"))


def _declaration(root: Path):
    """The stack settings' declaration of the project that holds the stack file (components/config.py)."""
    if not (root / "components" / "config.py").is_file():
        raise MissingSetting(f"no components/config.py in {root}: pass the Pulumi.<stack>.yaml of a lambdatrain "
                             "project folder")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the Pulumi program's folder, as the Pulumi CLI runs it
    return importlib.import_module("components.config")


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else None


def preflight(*, stack_outputs: Path | None, stack_config: Path | None, workers: int | None, combine_shards: int,
              region: str | None = None, client=None) -> dict:
    """Read the stack's sizing and the account's limits, check them, and return ``report``'s result."""
    if (stack_outputs is None) == (stack_config is None):
        raise MissingSetting("pass one of --stack-outputs FILE (pulumi stack output --json > FILE, a deployed "
                             "stack) or --stack-config Pulumi.<stack>.yaml (before `pulumi up`)")
    sizing = from_outputs(stack_outputs) if stack_outputs is not None else from_stack_config(stack_config)
    acct = account(client or lambda_client(region or sizing.region), sizing)
    workers = sizing.workers if workers is None else workers
    findings = check(sizing, acct, workers=workers, combine_shards=combine_shards)
    return report(sizing, acct, findings, workers=workers, combine_shards=combine_shards)


def lambda_client(region: str | None):
    import boto3

    # A session of its own (see ops.target.Target._session); None: boto3's region chain.
    return boto3.session.Session().client("lambda", region_name=region)


def account(client, sizing: Sizing) -> Account:
    """The account's limits in the client's Region, and what the stack's functions reserve now."""
    limit = client.get_account_settings()["AccountLimit"]
    held = sum(_reserved_now(client, f.name) for f in sizing.functions.values() if f.name)
    return Account(client.meta.region_name, limit["ConcurrentExecutions"], limit["UnreservedConcurrentExecutions"],
                   held)


def _reserved_now(client, name: str) -> int:
    try:
        return client.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") or 0
    except client.exceptions.ResourceNotFoundException:
        return 0  # not deployed yet


def check(sizing: Sizing, acct: Account, *, workers: int, combine_shards: int) -> list[Finding]:
    """Every finding, errors first; no errors means the account takes the stack and the run."""
    fns = sizing.functions
    reserved = {n: f.reserved for n, f in fns.items() if f.reserved}
    pool = acct.unreserved + acct.held - sum(reserved.values())  # unreserved once the stack is deployed
    refused = bool(reserved) and pool < UNRESERVED_CONCURRENCY
    findings = [_reservations(reserved, acct, pool)] if refused else []
    limits = ((WORKER, workers, "workers", "every round is throttled"),
              (COMBINER, combine_shards, "combine_shards", "the starter refuses the run"))
    for logical, asked, what, then in limits:
        if fns[logical].reserved and asked > fns[logical].reserved:
            findings.append(Finding("error", what, f"{what} {asked} is above the {logical}'s reserved concurrency "
                                                   f"({fns[logical].reserved}): {then}; ask for fewer or raise "
                                                   f"{logical}Concurrency"))
    demand = {WORKER: workers, COMBINER: combine_shards, STARTER: 1}
    unreserved = {n: d for n, d in demand.items() if n in fns and not fns[n].reserved}
    # Once the reservations fit, at least 100 are unreserved: only a demand beyond that is news then.
    if sum(unreserved.values()) > max(pool, UNRESERVED_CONCURRENCY if refused else pool):
        findings.append(_throttled(unreserved, acct, pool))
    return findings + [_memory(logical, f.memory_mb) for logical, f in fns.items()
                       if f.memory_mb > NEW_ACCOUNT_MEMORY_MB]


def _reservations(reserved: dict[str, int], acct: Account, pool: int) -> Finding:
    held = ", ".join(f"{n} {r}" for n, r in reserved.items())
    return Finding("error", "reservations", (
        f"the stack reserves {sum(reserved.values())} concurrent executions ({held}) and Lambda keeps "
        f"{UNRESERVED_CONCURRENCY} unreserved, but the account's limit is {acct.concurrency} with "
        f"{acct.unreserved + acct.held} unreserved: `pulumi up` would be refused; unset the reservations or "
        + RAISE.format(need=acct.concurrency + UNRESERVED_CONCURRENCY - pool)))


def _throttled(unreserved: dict[str, int], acct: Account, pool: int) -> Finding:
    parts = " + ".join(f"{d} {n}" for n, d in unreserved.items())
    return Finding("error", "concurrency", (
        f"a round needs {sum(unreserved.values())} concurrent executions ({parts}) from the unreserved "
        f"pool, which holds {max(pool, 0)}: Lambda throttles the rest; "
        + RAISE.format(need=acct.concurrency + sum(unreserved.values()) - pool)))


def _memory(logical: str, memory_mb: int) -> Finding:
    return Finding("warning", "memory", (
        f"{logical}Memory {memory_mb} MB is above {NEW_ACCOUNT_MEMORY_MB} MB, which new accounts may be capped at "
        "and no API reports: if `pulumi up` is refused on MemorySize, ask AWS Support (a support case) to raise "
        f"it, or set {logical}Memory {NEW_ACCOUNT_MEMORY_MB}"))


def report(sizing: Sizing, acct: Account, findings: list[Finding], *, workers: int, combine_shards: int) -> dict:
    """The machine-readable result (``--json``)."""
    return {"source": sizing.source, "region": acct.region, "workers": workers, "combine_shards": combine_shards,
            "account": {"ConcurrentExecutions": acct.concurrency, "UnreservedConcurrentExecutions": acct.unreserved,
                        "reservedByTheStack": acct.held},
            "findings": [asdict(f) for f in findings], "ok": not any(f.level == "error" for f in findings)}


def lines(result: dict) -> list[str]:
    """The human-readable result: the account, one line per finding, a verdict."""
    a = result["account"]
    out = [f"account in {result['region'] or 'the default region'}: {a['ConcurrentExecutions']} concurrent executions, "
           f"{a['UnreservedConcurrentExecutions']} unreserved ({a['reservedByTheStack']} reserved by this stack)"]
    out += [f"{f['level']}: {f['message']}" for f in result["findings"]]
    errors = sum(f["level"] == "error" for f in result["findings"])
    run = f"{plural(result['workers'], 'worker')}, {plural(result['combine_shards'], 'combine shard')}"
    out.append(f"{plural(errors, 'problem')}: the account would refuse {result['source']} or its runs ({run})"
               if errors else f"ok: the account takes {result['source']} and its runs ({run})")
    return out
