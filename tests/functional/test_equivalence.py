"""Mathematical honesty: one round over N workers equals one step of plain single-process PyTorch.

The reference accumulates gradients over the very same micro-batches (so batch-norm batch
statistics match) and steps the same optimizer. Batch-norm *running* statistics are averaged by
the combiner and legitimately differ, so the comparison is over the trainable parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lambdatrain.storage import efs as efs
from lambdatrain.training import trainer
from lambdatrain.training.flat import FlatLayout
from lambdatrain.training.step import learning_rate
from lambdatrain.training.model import ModelSpec, build_model
from lambdatrain.protocol.config import parse_config
from lambdatrain.roles.settings import STARTER

SETTINGS = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 40, "micro_batch": 4, "lr": 0.1,
            "momentum": 0.9, "weight_decay": 5e-4, "seed": 3}


def _reference_step(config, data, weights: np.ndarray, per_epoch: int) -> np.ndarray:
    model = build_model(ModelSpec(config.model, config.width, len(data.classes)))
    layout = FlatLayout.of(model)
    layout.load(model, weights)
    model.train()
    # The oracle names torch's arguments itself rather than sharing the system's sgd_options.
    opt = torch.optim.SGD(model.parameters(), lr=learning_rate(config, 0, per_epoch), momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=config.nesterov)
    opt.zero_grad()
    n_train = trainer.train_size(config, data)
    total = config.per_worker_batch * config.workers
    for w in range(config.workers):
        idx = trainer.round_indices(config, n_train, w, 0, per_epoch)
        for micro, mb in enumerate(trainer.micro_batches(idx, config.micro_batch)):
            x, y = trainer.batch(config, data, mb, round_no=0, worker=w, micro=micro)
            (F.cross_entropy(model(x), y, reduction="sum") / total).backward()
    opt.step()
    return layout.flatten(model)[: layout.n_params]


@pytest.mark.parametrize("workers,schedule", [
    (1, {}), (2, {}), (5, {}),
    (2, {"epochs": 2, "lr_schedule": "cosine", "warmup_epochs": 1}),  # round 0 steps at lr / W
    (2, {"nesterov": True}),
])
def test_one_round_equals_one_reference_step(system, workers, schedule):
    settings = {**SETTINGS, "workers": workers, **schedule}
    run = system.invoke(STARTER, {"start": True, **settings})["run"]
    for _ in range(workers):
        system.step()
    system.poller.poll_once()
    record = system.ledger.get_run(run)
    assert record.round == 1
    paths = efs.RunLayout(system.mount, run)
    config = parse_config(settings)
    data = trainer.dataset(str(system.settings.data))
    expected = _reference_step(config, data, efs.read_array(paths.weights(0)), record.rounds_per_epoch)
    got = efs.read_array(paths.weights(1))[: expected.size]
    assert torch.allclose(torch.from_numpy(got), torch.from_numpy(expected), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, efs.read_array(paths.weights(0))[: expected.size])  # it did move
