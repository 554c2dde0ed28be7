"""`lambdatrain export RUN` against a stack fetches a finished run's model from the bucket, where the
combiner wrote it, so it needs no EFS mount: here the run's folder on the local stack's mount is gone
and the export still gets the bytes the combiner stored."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import boto3
import pytest

from lambdatrain.storage.efs import RunLayout
from tests.cli.conftest import TINY_FLAGS

pytestmark = pytest.mark.slow

BUCKET = "lambdatrain-local"
FILES = ("model.pt", "model.json")


def _uploaded(s3, run: str, timeout_s: float = 60.0) -> dict[str, bytes]:
    """The export's objects, once the combiner (which uploads right after the last commit) has put both."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"exports/{run}/").get("Contents", [])}
        if listed >= {f"exports/{run}/{name}" for name in FILES}:
            return {name: s3.get_object(Bucket=BUCKET, Key=f"exports/{run}/{name}")["Body"].read() for name in FILES}
        assert time.monotonic() < deadline, f"no export of {run} in s3://{BUCKET}/exports/ after {timeout_s:.0f} s"
        time.sleep(0.2)


def test_a_finished_run_is_exported_from_the_bucket_without_the_mount(cli, live, tmp_path):
    target = ["--local-state", live.state_dir]
    assert cli("start", *TINY_FLAGS, "--epochs", "1", "--run", "live-s3", *target).exit_code == 0
    watched = cli("watch", "live-s3", "--interval", "0.2", "--timeout", "180", *target)
    assert "run live-s3 done" in watched.stdout, watched.output

    s3 = boto3.client("s3", **live.client_kwargs)
    stored = _uploaded(s3, "live-s3")
    shutil.rmtree(RunLayout(Path(live.endpoints["mount"]), "live-s3").root)  # no weights on "EFS" any more

    result = cli("export", "live-s3", "--out", tmp_path / "export", *target)
    assert result.exit_code == 0, result.output
    assert {name: (tmp_path / "export" / name).read_bytes() for name in FILES} == stored
