"""lambdatrain.roles.setup: the setup event against moto's in-process S3, a fake pip and a tmp mount."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from lambdatrain.ledger.schema import create_table_kwargs
from lambdatrain.ledger.setup import DONE, FAILED, RUNNING, SetupBusy, SetupLedger, SetupLost
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


@pytest.fixture
def book(runtime):
    clock = FakeClock()
    return SetupLedger(runtime.ledger.table, clock), clock


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_setup_lock_refuses_a_second_holder_while_the_lease_is_live(book):
    ledger, clock = book
    assert ledger.acquire("first", 60) == 1
    clock.now += 59
    with pytest.raises(SetupBusy, match="setup first is running"):
        ledger.acquire("second", 60)
    record = ledger.read()
    assert (record.owner, record.state, record.attempt, record.lease_until) == ("first", RUNNING, 1, 1060.0)


def test_setup_lock_with_an_expired_lease_is_taken_over_and_the_old_holder_is_shut_out(book):
    ledger, clock = book
    ledger.acquire("killed", 60)
    ledger.progress("killed", "packages", "installing", None)
    clock.now += 61  # the killed holder stopped renewing
    assert ledger.acquire("next", 60) == 2
    record = ledger.read()
    assert (record.owner, record.step, record.steps) == ("next", None, {})  # a new attempt starts afresh
    for write in (lambda: ledger.renew("killed", 60), lambda: ledger.progress("killed", "dataset", "late", {}),
                  lambda: ledger.finish("killed")):
        with pytest.raises(SetupLost):
            write()
    assert ledger.read().owner == "next"


def test_setup_lock_is_released_by_finish_and_the_outcome_recorded(book):
    ledger, clock = book
    ledger.acquire("a", 60)
    ledger.progress("a", "packages", "installed", {"installed": True, "versions": ["numpy==2.4.6"]})
    ledger.renew("a", 60)
    ledger.finish("a", error="pip install from https://pypi.org/simple failed with exit status 1")
    record = ledger.read()
    assert (record.state, record.finished, record.steps["packages"]["versions"]) == (FAILED, True, ["numpy==2.4.6"])
    assert record.error.startswith("pip install from")
    assert ledger.acquire("b", 60) == 2  # released: no need to wait for the lease
    ledger.finish("b")
    assert (ledger.read().state, ledger.read().error) == (DONE, None)


def test_setup_records_its_steps_and_outcome_in_the_ledger(runtime, s3, uploaded):
    setup(runtime, {"setup": True}, runner=FakePip(), s3=s3)
    record = SetupLedger(runtime.ledger.table, runtime.clock).read()
    assert (record.state, record.attempt, record.error) == (DONE, 1, None)
    assert set(record.steps) == {"sweep", "pip", "packages", "dataset"}
    assert record.steps["pip"]["version"].startswith("pip ")
    assert "torch==2.14.1+cpu" in record.steps["packages"]["versions"]
    assert record.steps["dataset"] == {"train": 50, "val": 20, "prepared": True}


def test_setup_sweeps_what_a_killed_setup_left(runtime, s3, uploaded, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "lambda-tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    mount = runtime.settings.mount
    stale = [mount / ".python.staging-0badc0de", mount / "tmp" / "setup-0badc0de",
             mount / "datasets" / ".cifar10.x1.tmp", tmp_path / "lambda-tmp" / "lambdatrain-setup" / "pip-unpack-1"]
    for path in stale:
        path.mkdir(parents=True)
    setup(runtime, {"setup": True}, runner=FakePip(), s3=s3)
    assert not any(path.exists() for path in stale)
    removed = SetupLedger(runtime.ledger.table, runtime.clock).read().steps["sweep"]["removed"]
    assert set(removed) == {".python.staging-0badc0de", "setup-0badc0de", ".cifar10.x1.tmp", "lambdatrain-setup"}


def test_setup_failure_is_recorded_and_releases_the_lock(runtime, s3):
    with pytest.raises(DataError):
        setup(runtime, {"setup": True}, runner=FakePip(), s3=s3)  # no archive uploaded
    record = SetupLedger(runtime.ledger.table, runtime.clock).read()
    assert record.state == FAILED and "not found" in record.error and record.lease_until == 0


def test_setup_does_not_start_a_step_without_its_time_budget(runtime, s3, uploaded):
    pip = FakePip()
    with pytest.raises(ConfigError, match="step packages may need 540 s"):
        setup(runtime, {"setup": True}, runner=pip, s3=s3, time_left=lambda: 300.0)
    assert pip.requirements == []  # pip never ran
    assert SetupLedger(runtime.ledger.table, runtime.clock).read().state == FAILED


def test_pip_that_cannot_run_fails_setup_in_one_line(runtime, s3, uploaded):
    def no_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "/var/lang/bin/python3.12: No module named pip\n")

    with pytest.raises(deps.PackageError, match="pip cannot run in this runtime") as info:
        setup(runtime, {"setup": True}, runner=no_pip, s3=s3)
    assert "\n" not in str(info.value) and not runtime.settings.packages.exists()
