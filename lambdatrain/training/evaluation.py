"""Evaluating a checkpoint on any dataset the data module reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lambdatrain.training import checkpoint as ckpt
from lambdatrain.training.data import open_prepared, resolve_dataset
from lambdatrain.protocol.errors import DataError, InvalidEvent
from lambdatrain.training.trainer import evaluate


def evaluate_checkpoint(*, checkpoint: Path, data: Path, split: str = "val", cache_dir: Path) -> dict[str, Any]:
    if split not in ("val", "train"):
        raise InvalidEvent("split", "must be 'val' or 'train'")
    record = ckpt.load(checkpoint)
    prepared = open_prepared(resolve_dataset(data, cache_dir))
    if len(prepared.classes) != record["num_classes"]:
        raise DataError(f"the dataset has {len(prepared.classes)} classes, the checkpoint {record['num_classes']}")
    x, y = (prepared.val_x, prepared.val_y) if split == "val" else (prepared.train_x, prepared.train_y)
    # Normalize as the model was trained: with the training run's statistics, not this dataset's.
    loss, accuracy = evaluate(ckpt.model_from(record), None, None, x, y, record["mean"], record["std"],
                              record["input_size"])
    return {"accuracy": accuracy, "loss": loss, "n": int(len(y)), "split": split,
            "checkpoint": str(checkpoint), "run": record["run"], "round": record["round"]}
