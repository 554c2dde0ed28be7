"""The model comes out of AWS: when a run finishes, the combiner writes model.pt and model.json to
the stack's bucket under exports/<run>/, the same bytes as ``lambdatrain export`` makes from EFS,
and a finish delivered again writes them again, identical."""

from __future__ import annotations

import dataclasses
import io
import json

import boto3
import pytest
import torch

from lambdatrain.protocol.events import CombineEvent
from lambdatrain.roles.settings import COMBINER, STARTER
from lambdatrain.training import checkpoint
from lambdatrain.training.model import ModelSpec, build_model

SMALL = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 8, "augment": False,
         "max_train_samples": 64}
KEYS = ("model.pt", "model.json")


@pytest.fixture
def bucket(system):
    name = system.table.lower()  # unique per test, like the table
    boto3.client("s3").create_bucket(Bucket=name)
    runtime = system.runtimes[COMBINER]
    runtime.settings = dataclasses.replace(runtime.settings, bucket=name)
    return name


def _objects(bucket: str, run: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"exports/{run}/").get("Contents", [])
    return {o["Key"].rsplit("/", 1)[1]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def _finished(system, shards: int = 1) -> tuple[str, int]:
    run = system.invoke(STARTER, {"start": True, "workers": 2, "epochs": 1, "combine_shards": shards, **SMALL})["run"]
    system.run_to_end(run)
    record = system.ledger.get_run(run)
    assert record.state == "done"
    return run, record.round


@pytest.mark.parametrize("shards", [1, 2])
def test_a_finished_run_has_its_model_in_the_bucket_as_export_makes_it(system, bucket, shards):
    run, final_round = _finished(system, shards)
    files = _objects(bucket, run)
    assert sorted(files) == sorted(KEYS)
    record = system.ledger.get_run(run)
    expected = checkpoint.export_files(checkpoint.final_model(system.mount, run, final_round, record.weights,
                                                              system.ledger.metrics(run)))
    assert files == expected
    meta = json.loads(files["model.json"])
    assert meta["run"] == run and meta["round"] == final_round and meta["settings"]["workers"] == 2
    assert meta["classes"] and "val_accuracy" in meta["metrics"]
    state_dict = torch.load(io.BytesIO(files["model.pt"]), weights_only=True)  # a plain state_dict
    build_model(ModelSpec(**meta["spec"])).load_state_dict(state_dict)  # as docs/operate.md loads it


def test_finish_delivered_again_writes_the_same_objects(system, bucket):
    run, final_round = _finished(system)
    first = _objects(bucket, run)
    s3 = boto3.client("s3")
    for key in KEYS:  # as if the first delivery died between its commit and its upload
        s3.delete_object(Bucket=bucket, Key=f"exports/{run}/{key}")
    answer = system.invoke(COMBINER, CombineEvent(run=run, round=final_round - 1, workers=2, epochsdone=0).to_event())
    assert answer["status"] == "stale"
    assert _objects(bucket, run) == first
