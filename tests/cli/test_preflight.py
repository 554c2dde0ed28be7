"""`lambdatrain preflight`: each finding against an account's Lambda limits, through the console's app.

moto does not serve GetAccountSettings, so the Lambda client is botocore's Stubber, answering as
Lambda does (docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html); a function not
deployed yet answers GetFunctionConcurrency with ResourceNotFoundException.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from lambdatrain.ops import preflight
from tests.cli.conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
DEV, PROD = ROOT / "Pulumi.dev.yaml", ROOT / "Pulumi.prod.yaml"
NEW_ACCOUNT = (10, 10)  # (ConcurrentExecutions, UnreservedConcurrentExecutions): a new account's limits


@pytest.fixture
def account(monkeypatch):
    """``account(limit, unreserved, held={name: reserved})``: the stubbed Lambda preflight talks to."""
    regions = []

    def stub(limit: int, unreserved: int, held: dict[str, int] | None = None, names: list[str] | None = None):
        client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        stubber = Stubber(client)
        stubber.add_response("get_account_settings", {
            "AccountLimit": {"ConcurrentExecutions": limit, "UnreservedConcurrentExecutions": unreserved,
                             "TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800},
            "AccountUsage": {"FunctionCount": 0, "TotalCodeSize": 0}})
        for name in names or []:
            if name in (held or {}):
                stubber.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": held[name]},
                                     {"FunctionName": name})
            else:
                stubber.add_client_error("get_function_concurrency", "ResourceNotFoundException", http_status_code=404,
                                         expected_params={"FunctionName": name})
        stubber.activate()
        monkeypatch.setattr(preflight, "lambda_client", lambda region: regions.append(region) or client)
        return stubber

    stub.regions = regions
    return stub


def names(stack: str) -> list[str]:
    return [f"lambdatrain-{stack}-{logical}" for logical in ("starter", "worker", "combiner")]


def outputs(tmp_path: Path, workers: int = 4, memory: int = 3008, reserved: dict | None = None) -> Path:
    functions = {n: {"memoryMb": memory if n != "starter" else 2048, "reservedConcurrency": (reserved or {}).get(n)}
                 for n in ("starter", "worker", "combiner")}
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({**{f"{n}FunctionName": f"stack-{n}" for n in functions},
                                "sizing": {"region": "eu-west-1", "workers": workers, "functions": functions}}))
    return path


def lines(result) -> list[str]:
    return result.stdout.strip().splitlines()


def test_new_account_takes_the_dev_stack(cli, account):
    stubber = account(*NEW_ACCOUNT, names=names("dev"))
    result = cli("preflight", "--stack-config", DEV)
    assert result.exit_code == 0, result.output
    assert lines(result) == [
        "account in us-east-1: 10 concurrent executions, 10 unreserved (0 reserved by this stack)",
        f"ok: the account takes {DEV} and its runs (4 workers, 1 combine shard)"]
    stubber.assert_no_pending_responses()
    assert account.regions == ["us-east-1"]  # the stack file's aws:region


def test_reservations_a_new_account_cannot_keep_are_refused(cli, account):
    account(*NEW_ACCOUNT, names=names("prod"))
    result = cli("preflight", "--stack-config", PROD)
    assert result.exit_code == 1
    (error,) = [line for line in lines(result) if line.startswith("error:")]
    assert error.startswith("error: the stack reserves 19 concurrent executions (worker 17, combiner 2) and Lambda "
                            "keeps 100 unreserved, but the account's limit is 10 with 10 unreserved")
    # 19 reserved + 100 kept = 119, and the account has 10 to start with.
    assert error.endswith("aws service-quotas request-service-quota-increase --service-code lambda "
                          "--quota-code L-B99A9384 --desired-value 119")
    assert lines(result)[-1].startswith("1 problem: the account would refuse")


def test_memory_above_3008_mb_is_a_warning_only(cli, account):
    account(1000, 1000, names=names("prod"))
    result = cli("preflight", "--stack-config", PROD)
    assert result.exit_code == 0, result.output
    warnings = [line for line in lines(result) if line.startswith("warning:")]
    assert [w.split()[1] for w in warnings] == ["workerMemory", "combinerMemory"]
    assert "10240 MB is above 3008 MB" in warnings[0] and "support case" in warnings[0]
    assert not [line for line in lines(result) if line.startswith("error:")]


def test_the_stacks_own_reservations_count_as_free_again(cli, account, tmp_path):
    # Deployed: the account's 120 less the stack's 19 leaves 101 unreserved; an update keeps them.
    reserved = {"worker": 17, "combiner": 2}
    account(120, 101, held={"stack-worker": 17, "stack-combiner": 2}, names=["stack-starter", "stack-worker",
                                                                           "stack-combiner"])
    result = cli("preflight", "--stack-outputs", outputs(tmp_path, workers=17, reserved=reserved))
    assert result.exit_code == 0, result.output
    assert lines(result)[0] == ("account in us-east-1: 120 concurrent executions, 101 unreserved "
                                "(19 reserved by this stack)")
    assert account.regions == ["eu-west-1"]  # the sizing output's region


@pytest.mark.parametrize("option, value, error", [
    ("--workers", "20", "error: workers 20 is above the worker's reserved concurrency (17): every round is "
                        "throttled; ask for fewer or raise workerConcurrency"),
    ("--combine-shards", "4", "error: combine_shards 4 is above the combiner's reserved concurrency (2): the "
                              "starter refuses the run; ask for fewer or raise combinerConcurrency"),
], ids=["workers_above_the_workers_reservation", "combine_shards_above_the_combiners_reservation"])
def test_a_run_above_a_reservation_is_refused(cli, account, option, value, error):
    account(1000, 1000, names=names("prod"))
    result = cli("preflight", "--stack-config", PROD, option, value)
    assert result.exit_code == 1
    assert error in lines(result)


def test_a_round_beyond_the_unreserved_pool_is_refused(cli, account):
    account(*NEW_ACCOUNT, names=names("dev"))
    result = cli("preflight", "--stack-config", DEV, "--workers", "12")
    assert result.exit_code == 1
    (error,) = [line for line in lines(result) if line.startswith("error:")]
    assert error.startswith("error: a round needs 14 concurrent executions (12 worker + 1 combiner + 1 starter) "
                            "from the unreserved pool, which holds 10: Lambda throttles the rest")
    assert error.endswith("--desired-value 14")


def test_json_output_is_one_object_with_every_finding(cli, account, tmp_path):
    account(*NEW_ACCOUNT, names=["stack-starter", "stack-worker", "stack-combiner"])
    result = cli("preflight", "--stack-outputs", outputs(tmp_path, workers=12, memory=10240), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["ok"], report["workers"], report["combine_shards"]) == (False, 12, 1)
    assert report["account"] == {"ConcurrentExecutions": 10, "UnreservedConcurrentExecutions": 10,
                                 "reservedByTheStack": 0}
    assert [(f["level"], f["check"]) for f in report["findings"]] == [
        ("error", "concurrency"), ("warning", "memory"), ("warning", "memory")]


def test_stack_config_unset_keys_take_the_declared_defaults():
    sizing = preflight.from_stack_config(DEV)
    assert sizing.functions["starter"] == preflight.Function("lambdatrain-dev-starter", 2048, None)  # unset in dev
    assert (sizing.workers, sizing.region, sizing.functions["worker"].memory_mb) == (4, "us-east-1", 3008)


@pytest.mark.parametrize("args, fragment", [
    ((), "pass one of --stack-outputs FILE"),
    (("--stack-outputs", "a.json", "--stack-config", "Pulumi.dev.yaml"), "pass one of --stack-outputs FILE"),
    (("--stack-config", "stack.json"), "is not a stack config file: pass Pulumi.<stack>.yaml"),
    (("--stack-outputs", "missing.json"), "no such file: missing.json"),
])
def test_bad_sources_are_one_line(cli, args, fragment):
    assert_one_line_error(cli("preflight", *args), fragment)


@pytest.mark.parametrize("content", [
    {"tableName": "t"},
    {"sizing": {"workers": 4, "functions": {"worker": {"memoryMb": 3008}}}},
], ids=["no sizing", "a function missing"])
def test_stack_outputs_without_sizing_say_what_to_do(cli, tmp_path, content):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(content))
    assert_one_line_error(cli("preflight", "--stack-outputs", path), "has no valid 'sizing' output: `pulumi up`")


def test_stack_config_outside_a_project_is_one_line(cli, tmp_path):
    (tmp_path / "Pulumi.dev.yaml").write_text(DEV.read_text())
    assert_one_line_error(cli("preflight", "--stack-config", tmp_path / "Pulumi.dev.yaml"),
                          "no components/config.py in")


def test_bad_stack_config_value_is_one_line_naming_the_key(cli, tmp_path, monkeypatch):
    # A project folder of its own: the repository's declaration beside a stack file with a typo.
    (tmp_path / "components").symlink_to(ROOT / "components")
    (tmp_path / "Pulumi.yaml").write_text("name: lambdatrain\n")
    (tmp_path / "Pulumi.typo.yaml").write_text("config:\n  lambdatrain:workers: four\n")
    assert_one_line_error(cli("preflight", "--stack-config", tmp_path / "Pulumi.typo.yaml"),
                          "lambdatrain:workers must be an integer, got 'four'")


def test_an_aws_error_is_one_line(cli, monkeypatch):
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_client_error("get_account_settings", "AccessDeniedException", "not allowed", http_status_code=403)
    stubber.activate()
    monkeypatch.setattr(preflight, "lambda_client", lambda region: client)
    assert_one_line_error(cli("preflight", "--stack-config", DEV),
                          "GetAccountSettings failed: AccessDeniedException: not allowed")


def test_out_of_range_combine_shards_is_a_usage_error(cli):
    result = cli("preflight", "--stack-config", DEV, "--combine-shards", "65")
    assert result.exit_code == 2 and "--combine-shards" in result.output


def test_refused_reservations_are_reported_once_with_what_to_raise():
    sizing = preflight.from_stack_config(PROD)
    account = preflight.Account("us-east-1", concurrency=10, unreserved=10, held=0)
    findings = preflight.check(sizing, account, workers=17, combine_shards=1)
    # The starter's one execution would not fit either, but raising the quota to 119 fixes both.
    assert [(f.level, f.check) for f in findings] == [("error", "reservations"), ("warning", "memory"),
                                                       ("warning", "memory")]
    raised = preflight.Account("us-east-1", concurrency=119, unreserved=119, held=0)
    assert [f.level for f in preflight.check(sizing, raised, workers=17, combine_shards=1)] == ["warning", "warning"]
