"""Checkpoints a user keeps: a state_dict plus everything needed to use it, loadable safely.

A checkpoint is one ``torch.save`` of a dict of tensors and plain values (model name, width,
classes, normalization, input size, the run's settings, round and metrics), so it loads with
``torch.load(path, weights_only=True)``: nothing in it is unpickled as code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lambdatrain.training.flat import FlatLayout
from lambdatrain.protocol.errors import DataError
from lambdatrain.training.model import ModelSpec, build_model, input_size

FORMAT = "lambdatrain-checkpoint-v1"


def save(path: Path, *, flat: np.ndarray, config: dict[str, Any], classes: list[str], mean, std,
         run: str, round_no: int, metrics: dict[str, Any] | None = None) -> Path:
    spec = ModelSpec(name=config["model"], width=config["width"], num_classes=len(classes))
    layout = FlatLayout.of(build_model(spec))
    record = {"format": FORMAT, "model": spec.name, "width": spec.width, "num_classes": spec.num_classes,
              "input_size": input_size(spec.name), "classes": list(classes), "mean": list(mean),
              "std": list(std), "run": run, "round": round_no, "config": dict(config),
              "metrics": dict(metrics or {}), "state_dict": layout.state_dict(flat)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    tmp.replace(path)
    return path


def load(path: Path) -> dict[str, Any]:
    try:
        record = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise DataError(f"checkpoint not found: {path}") from exc
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"{path} is not a lambdatrain checkpoint ({type(exc).__name__})") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataError(f"{path} is not a lambdatrain checkpoint")
    return record


def model_from(record: dict[str, Any]) -> torch.nn.Module:
    model = build_model(ModelSpec(name=record["model"], width=record["width"], num_classes=record["num_classes"]))
    model.load_state_dict(record["state_dict"])
    return model.eval()
