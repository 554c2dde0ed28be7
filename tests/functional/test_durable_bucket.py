"""The local stack's bucket outlives its moto (lambdatrain/local/durable.py), as S3 outlives an outage."""

from __future__ import annotations

import uuid

import boto3
import pytest

from lambdatrain.local.durable import DurableBucket
from lambdatrain.local.moto_server import MotoServer
from lambdatrain.local.names import ACCESS_KEY, REGION


@pytest.fixture
def server():
    moto = MotoServer()
    moto.start()
    yield moto
    moto.stop()


def _forget(s3, bucket: str) -> None:
    """What a fresh moto holds of the bucket: nothing (emptied behind the mirror's back)."""
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])


def test_objects_written_deleted_and_rewritten_come_back_after_a_restart_as_last_left(server, tmp_path):
    s3 = boto3.client("s3", endpoint_url=server.url, region_name=REGION, **ACCESS_KEY)
    bucket = f"durable-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    mirror = DurableBucket(tmp_path / "s3", bucket)
    server.s3_listeners.append(mirror.sync)
    s3.put_object(Bucket=bucket, Key="state/run-a/w0000/r000001.npy", Body=b"one", Metadata={"checksum": "x:1"})
    s3.put_object(Bucket=bucket, Key="state/run-a/w0000/r000001.npy", Body=b"two", Metadata={"checksum": "x:2"})
    s3.put_object(Bucket=bucket, Key="exports/run-a/model.pt", Body=b"model")
    s3.put_object(Bucket=bucket, Key="exports", Body=b"a key that is also a prefix")
    s3.put_object(Bucket=bucket, Key="gone", Body=b"deleted below")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "gone"}]})

    server.s3_listeners.clear()  # the stack dies: its moto forgets, the mirror on disk stays
    _forget(s3, bucket)
    assert DurableBucket(tmp_path / "s3", bucket).restore(s3) == 3

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["exports", "exports/run-a/model.pt", "state/run-a/w0000/r000001.npy"]
    obj = s3.get_object(Bucket=bucket, Key="state/run-a/w0000/r000001.npy")
    assert obj["Body"].read() == b"two" and obj["Metadata"] == {"checksum": "x:2"}
