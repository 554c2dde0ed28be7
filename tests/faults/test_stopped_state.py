"""A stopped compressed run keeps what it resumes from, however long it stays stopped.

Its workers' error-feedback residuals live in the stack's bucket, whose lifecycle rule expires
residuals after STATE_EXPIRY_DAYS (components/storage.py: a backstop for what a crashed combiner
did not delete). The rule expires only residuals tagged STATE_TAG = STATE_EXPIRING; the watchdog
re-tags the ones a stopped or failed run resumes from (roles/recovery.py ``keep_state``). Here
the rule is applied as S3 would apply it once those days have passed: every residual it matches
is gone, all its versions (the noncurrent ones go a day later by the other rule).
"""

from __future__ import annotations

import boto3
import pytest

from lambdatrain.roles.settings import COMBINER, STARTER, STATE_EXPIRING, STATE_KEPT, STATE_PREFIX, STATE_TAG
from lambdatrain.roles import warm, worker
from lambdatrain.roles.recovery import RESUMABLE
from lambdatrain.storage import state
from lambdatrain.storage.state import MissingState
from tests.faults.conftest import SETTINGS, assert_survived

COMPRESSED_SETTINGS = {**SETTINGS, "transport": "ternary_ef"}


def _tags(s3, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def _lifecycle_rule_runs(s3, bucket: str) -> set[str]:
    """What the bucket's lifecycle rules do once STATE_EXPIRY_DAYS have passed; the keys expired."""
    expired = set()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=STATE_PREFIX):
        for version in page.get("Versions", []):
            if version["IsLatest"] and _tags(s3, bucket, version["Key"]).get(STATE_TAG) == STATE_EXPIRING:
                expired.add(version["Key"])
    for key in expired:
        versions = s3.list_object_versions(Bucket=bucket, Prefix=key)
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [
            {"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions.get("Versions", []) if v["Key"] == key]})
    return expired


def _stopped(system) -> str:
    run = system.invoke(STARTER, {"start": True, **COMPRESSED_SETTINGS})["run"]
    for _ in range(6):
        system.step()
    system.invoke(STARTER, {"stop": run})
    system.drain()
    record = system.ledger.get_run(run)
    assert record.state == "stopped" and 0 < record.round < 5
    # Days later no environment holds anything: residuals, weights and state come from storage.
    state._held.clear()
    worker._held.clear()
    warm.forget()
    return run


def test_a_stopped_run_resumes_bit_identically_after_the_lifecycle_rule_ran(make_system, reference):
    system = make_system()
    s3, bucket = boto3.client("s3"), system.settings.bucket
    run = _stopped(system)
    record = system.ledger.get_run(run)
    system.invoke(COMBINER, {"watchdog": True})
    assert system.ledger.get_run(run).state_kept_round == record.round
    resumed_from = [f"{STATE_PREFIX}{run}/w{w:04d}/r{record.round:06d}.npy" for w in range(record.workers)]
    assert all(_tags(s3, bucket, key) == {STATE_TAG: STATE_KEPT} for key in resumed_from)
    expired = _lifecycle_rule_runs(s3, bucket)
    assert not expired & set(resumed_from)
    system.invoke(COMBINER, {"watchdog": True})  # kept once per round: a second watchdog changes nothing
    assert system.ledger.get_run(run).state_kept_round == record.round

    system.invoke(STARTER, {"resume": run})
    # Resumed, the kept residuals expire like any others again (the run is about to move past them).
    assert all(_tags(s3, bucket, key) == {STATE_TAG: STATE_EXPIRING} for key in resumed_from)
    assert system.ledger.get_run(run).state_kept_round is None
    # A watchdog that read the run as stopped just before the resume records nothing now.
    assert not system.ledger.mark_state_kept(run, record.round, RESUMABLE)
    system.run_to_end(run)
    assert_survived(system, run, reference(COMPRESSED_SETTINGS))


def test_without_the_watchdogs_keeping_the_expired_residuals_are_a_clear_error_not_zeros(make_system):
    """The control: the same stop, the rule, no watchdog in between."""
    system = make_system()
    s3, bucket = boto3.client("s3"), system.settings.bucket
    run = _stopped(system)
    record = system.ledger.get_run(run)
    expired = _lifecycle_rule_runs(s3, bucket)
    assert f"{STATE_PREFIX}{run}/w0000/r{record.round:06d}.npy" in expired
    system.invoke(STARTER, {"resume": run})
    with pytest.raises(MissingState, match=rf"^s3://{bucket}/{STATE_PREFIX}{run}/w\d{{4}}/r\d{{6}}\.npy: worker \d+'s "
                                           rf"residual for round \d+ is not in the bucket$"):
        system.drain()
