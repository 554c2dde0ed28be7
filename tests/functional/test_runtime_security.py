"""Security properties of the runtime: loopback only, no invoking workers, no unpickling, no faults on AWS."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lambdatrain.training import checkpoint
from lambdatrain.protocol.errors import ConfigError, DataError
from lambdatrain.local.environment import FunctionConfig
from lambdatrain.local.service import LambdaService
from lambdatrain.roles.settings import STARTER, WORKER, load

SMALL = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 16, "max_train_samples": 64}


def test_local_lambda_service_listens_on_loopback_only(tmp_path):
    service = LambdaService([FunctionConfig("f", Path("/nonexistent/handler.py"))], {}, tmp_path)
    url = service.serve(0)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert service.server.server_address[0] == "127.0.0.1"
    finally:
        service.stop()


class _Forbidden:
    def invoke(self, logical, payload):
        raise AssertionError(f"the worker tried to invoke {logical}")


def test_worker_never_invokes_anything(system):
    system.runtimes[WORKER].invoker = _Forbidden()
    run = system.invoke(STARTER, {"start": True, "workers": 2, "epochs": 1, **SMALL})["run"]
    system.drain()
    assert system.ledger.get_run(run).state == "done"


def test_fault_injection_is_refused_unless_every_endpoint_is_loopback():
    with pytest.raises(ConfigError, match="LAMBDATRAIN_FAULTS"):
        load({"LAMBDATRAIN_TABLE": "t", "LAMBDATRAIN_FAULTS": "worker:before_write:1"})
    with pytest.raises(ConfigError):
        load({"LAMBDATRAIN_TABLE": "t", "LAMBDATRAIN_FAULTS": "worker:before_write:1",
              "AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_ENDPOINT_URL_LAMBDA": "https://lambda.amazonaws.com"})
    assert load({"LAMBDATRAIN_TABLE": "t", "LAMBDATRAIN_FAULTS": "worker:before_write:1",
                 "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}).faults


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/lambdatrain-pwned"),))


def test_a_pickled_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    Path("/tmp/lambdatrain-pwned").unlink(missing_ok=True)
    torch.save({"format": checkpoint.FORMAT, "payload": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="not a lambdatrain checkpoint"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not Path("/tmp/lambdatrain-pwned").exists()
