"""lambdatrain.roles.setup: the setup event against moto's in-process S3, a fake pip and a tmp mount."""

from __future__ import annotations

import subprocess
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from lambdatrain.ledger.schema import create_table_kwargs
from lambdatrain.ledger.table import Ledger
from lambdatrain.roles import packages as deps
from lambdatrain.training.data import open_prepared
from lambdatrain.protocol.errors import ConfigError, DataError, InvalidEvent
from lambdatrain.roles.runtime import Runtime
from lambdatrain.roles.settings import load
from lambdatrain.roles.setup import DEFAULT_DATASET, lambda_architecture, setup
from tests.datagen import make_cifar_python_tarball

BUCKET = "lambdatrain-test"  # S3 names need 3 characters or more


class FakePip:
    """Stands in for subprocess.run: answers pip --version, records the requirements asked for and
    'installs' a folder per package."""

    def __init__(self):
        self.requirements: list[list[str]] = []

    def __call__(self, command, check, env=None, **kwargs):
        if command[-1] == "--version":
            return subprocess.CompletedProcess(command, 0, "pip 23.2.1 from /var/lang (python 3.12)\n", "")
        assert check is True
        lines = Path(command[command.index("-r") + 1]).read_text().splitlines()
        self.requirements.append(lines)
        staging = Path(command[command.index("--target") + 1])
        for line in lines:
            (staging / line.split("==")[0]).mkdir()
        return subprocess.CompletedProcess(command, 0)


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def mount(tmp_path):
    path = tmp_path / "mnt"
    path.mkdir()
    return path


@pytest.fixture
def runtime(mount, s3):
    settings = load({"LAMBDATRAIN_TABLE": "t", "LAMBDATRAIN_MOUNT": str(mount), "LAMBDATRAIN_BUCKET": BUCKET})
    resource = boto3.resource("dynamodb")
    resource.create_table(**create_table_kwargs("t"))
    return Runtime(settings=settings, ledger=Ledger("t", resource=resource), invoker=None, handler="starter")


@pytest.fixture
def uploaded(s3, tmp_path):
    archive = make_cifar_python_tarball(tmp_path / "upload" / "cifar-10-python.tar.gz", n_train=50, n_test=20)
    s3.upload_file(str(archive), BUCKET, DEFAULT_DATASET)
    return archive


def test_setup_installs_packages_and_prepares_the_dataset(runtime, s3, uploaded):
    pip = FakePip()
    outcome = setup(runtime, {"setup": True}, runner=pip, s3=s3).to_dict()
    settings = runtime.settings
    assert pip.requirements == [list(lock.lines) for lock in deps.lambda_locks(lambda_architecture())]
    assert (settings.packages / "numpy").is_dir() and (settings.packages / deps.MARKER).is_file()
    prepared = open_prepared(settings.data)
    assert (len(prepared.train_y), len(prepared.val_y)) == (50, 20)
    assert outcome["status"] == "ready"
    assert (outcome["packages"], outcome["data"]) == (str(settings.packages), str(settings.data))
    assert (outcome["train"], outcome["val"]) == (50, 20)
    assert sorted(p.name for p in settings.mount.iterdir()) == ["datasets", "python"]  # no download left


def test_second_setup_is_a_noop(runtime, s3, uploaded):
    pip = FakePip()
    setup(runtime, {"setup": True}, runner=pip, s3=s3)
    meta = runtime.settings.data / "meta.json"
    before = meta.stat().st_mtime_ns
    s3.delete_object(Bucket=BUCKET, Key=DEFAULT_DATASET)  # a no-op must not even need the archive
    outcome = setup(runtime, {"setup": True}, runner=pip, s3=s3).to_dict()
    assert len(pip.requirements) == len(deps.lambda_locks(lambda_architecture()))  # one install: a pip run per lock
    assert meta.stat().st_mtime_ns == before
    assert (outcome["installed"], outcome["prepared"]) == (False, False)


def test_force_prepares_the_dataset_again_with_the_given_split(runtime, s3, uploaded):
    pip = FakePip()
    setup(runtime, {"setup": True}, runner=pip, s3=s3)
    outcome = setup(runtime, {"setup": True, "force": True, "seed": 3}, runner=pip, s3=s3).to_dict()
    assert outcome["prepared"] is True
    assert len(pip.requirements) == len(deps.lambda_locks(lambda_architecture()))  # no second install
    assert open_prepared(runtime.settings.data).root == runtime.settings.data


def test_dataset_from_another_key(runtime, s3, tmp_path):
    archive = make_cifar_python_tarball(tmp_path / "mine.tar.gz", n_train=25, n_test=10)
    s3.upload_file(str(archive), BUCKET, "datasets/mine.tar.gz")
    outcome = setup(runtime, {"setup": True, "dataset": "datasets/mine.tar.gz"}, runner=FakePip(), s3=s3)
    assert (outcome.detail["train"], outcome.detail["val"]) == (25, 10)


def test_missing_archive_names_the_s3_uri_to_upload(runtime, s3):
    with pytest.raises(DataError, match=f"s3://{BUCKET}/{DEFAULT_DATASET}") as info:
        setup(runtime, {"setup": True}, runner=FakePip(), s3=s3)
    assert "\n" not in str(info.value)
    assert not (runtime.settings.mount / "tmp").exists()
    assert not runtime.settings.data.exists()


@pytest.mark.parametrize("event, field", [
    ({"setup": True, "dataset": "../x"}, "dataset"),
    ({"setup": True, "dataset": "/datasets/x.tar.gz"}, "dataset"),
    ({"setup": True, "dataset": 7}, "dataset"),
    ({"setup": True, "dataset": "start/x.json"}, "dataset"),
    ({"setup": True, "bucket": "other"}, "bucket"),
    ({"setup": True, "force": "yes"}, "force"),
    ({"setup": True, "val_fraction": 1.0}, "val_fraction"),
    ({"setup": True, "val_fraction": True}, "val_fraction"),
    ({"setup": True, "seed": -1}, "seed"),
    ({"setup": True, "seed": 1.5}, "seed"),
    ({"setup": "yes"}, "setup"),
])
def test_bad_fields_are_refused_before_any_side_effect(runtime, s3, uploaded, event, field):
    pip = FakePip()
    with pytest.raises(InvalidEvent) as info:
        setup(runtime, event, runner=pip, s3=s3)
    assert info.value.field == field
    assert pip.requirements == []
    assert list(runtime.settings.mount.iterdir()) == []


def test_missing_bucket_setting_is_a_config_error(mount):
    settings = load({"LAMBDATRAIN_TABLE": "t", "LAMBDATRAIN_MOUNT": str(mount)})
    runtime = Runtime(settings=settings, ledger=None, invoker=None, handler="starter")
    pip = FakePip()
    with pytest.raises(ConfigError, match="LAMBDATRAIN_BUCKET"):
        setup(runtime, {"setup": True}, runner=pip)
    assert pip.requirements == [] and list(mount.iterdir()) == []


@pytest.mark.parametrize("machine, arch", [("x86_64", "x86_64"), ("aarch64", "arm64"), ("arm64", "arm64")])
def test_machine_maps_to_the_lambda_architecture(machine, arch):
    assert lambda_architecture(machine) == arch
    assert deps.lambda_locks(arch)


def test_unknown_machine_is_a_config_error():
    with pytest.raises(ConfigError, match="riscv64"):
        lambda_architecture("riscv64")
