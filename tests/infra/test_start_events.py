"""The starter's side of what the stack configures: URL-encoded S3 keys, the combiner's reservation.

S3 notifications carry the object key URL-encoded; where the stack reserves the combiner's
concurrency, the starter (which gets it in LAMBDATRAIN_COMBINER_CONCURRENCY, test_new_account.py)
refuses a run with more combine shards than can run at once, before it writes anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambdatrain.protocol.errors import ConfigError, InvalidEvent
from lambdatrain.roles import settings as env
from lambdatrain.roles import starter
from lambdatrain.roles.runtime import Runtime


class Untouched:
    """A ledger or invoker the check must never reach: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"used {name} before the event was validated")


def runtime(tmp_path: Path, **variables: str) -> Runtime:
    settings = env.load({env.ENV_TABLE: "ledger", env.ENV_MOUNT: str(tmp_path / "mnt"), **variables})
    return Runtime(settings=settings, ledger=Untouched(), invoker=Untouched(), handler=env.STARTER)


def s3_record(key: str) -> dict:
    return {"eventSource": "aws:s3", "s3": {"bucket": {"name": "stack-bucket"}, "object": {"key": key}}}


@pytest.mark.parametrize("sent, stored", [
    ("start/my+run.json", "start/my run.json"),  # a space arrives as '+'
    ("start/a%2Bb.json", "start/a+b.json"),  # a '+' arrives as %2B
    ("start/run-7.json", "start/run-7.json"),
])
def test_start_file_key_is_url_decoded_before_use(tmp_path, sent, stored):
    read = []

    def read_object(bucket: str, key: str) -> str:
        read.append((bucket, key))
        return "not json"

    with pytest.raises(InvalidEvent) as caught:
        starter.start_from_s3(runtime(tmp_path), s3_record(sent), read_object)
    assert read == [("stack-bucket", stored)]
    assert stored in str(caught.value)  # the error names the key as the user wrote it


def test_start_file_with_encoded_name_starts_that_run_id(tmp_path):
    # "run 1" is no valid run id: the decoded name reaches the run-id check, not "run+1".
    with pytest.raises(InvalidEvent) as caught:
        starter.start_from_s3(runtime(tmp_path), s3_record("start/run+1.json"), lambda b, k: json.dumps({}))
    assert caught.value.field == "start file name"


def test_combine_shards_above_the_combiners_reservation_is_refused(tmp_path):
    event = {"start": True, "workers": 4, "combine_shards": 3}
    with pytest.raises(InvalidEvent) as caught:
        starter.start(runtime(tmp_path, **{env.ENV_COMBINER_CONCURRENCY: "2"}), event)
    assert caught.value.field == "combine_shards"
    assert str(caught.value) == ("invalid field 'combine_shards': must be at most the combiner's reserved "
                                 "concurrency (2), got 3")
    assert not (tmp_path / "mnt").exists()  # nothing written


@pytest.mark.parametrize("variables", [{env.ENV_COMBINER_CONCURRENCY: "2"}, {}])
def test_combine_shards_within_the_reservation_or_without_one_pass_the_check(tmp_path, variables):
    shards = 2 if variables else 64
    with pytest.raises(InvalidEvent) as caught:  # the next check: the dataset is not there
        starter.start(runtime(tmp_path, **variables), {"start": True, "workers": 4, "combine_shards": shards})
    assert caught.value.field == "data"


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_bad_combiner_concurrency_variable_is_one_line_naming_it(raw):
    with pytest.raises(ConfigError) as caught:
        env.load({env.ENV_TABLE: "ledger", env.ENV_COMBINER_CONCURRENCY: raw})
    assert str(caught.value).startswith(f"environment variable {env.ENV_COMBINER_CONCURRENCY} must be a positive")


def test_combiner_concurrency_variable_is_read():
    assert env.load({env.ENV_TABLE: "ledger", env.ENV_COMBINER_CONCURRENCY: "5"}).combiner_concurrency == 5
    assert env.load({env.ENV_TABLE: "ledger"}).combiner_concurrency is None
