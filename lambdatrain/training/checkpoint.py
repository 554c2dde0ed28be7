"""A run's final model: built once from the run's folder, saved as a checkpoint a user keeps.

``final_model`` is the one builder: the weights of the run's current round (checked against the
ledger's digest), the settings, classes and normalization from the run's ``config.json``, and the
last evaluation the combiner measured. ``local train`` saves it as ``checkpoint.pt``;
``export_files`` is the export of it, ``model.pt`` (a plain state_dict) + ``model.json`` (how to
use it), which the combiner writes to the stack's bucket when a run finishes and ``lambdatrain
export`` writes to a folder. Both live here, in a package that ships in the Lambda archive, so the
bytes are the same wherever they are made.

A checkpoint is one ``torch.save`` of a dict of tensors and plain values (model name, width,
classes, normalization, input size, the run's settings, round and metrics), so it loads with
``torch.load(path, weights_only=True)``: nothing in it is unpickled as code.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from lambdatrain.protocol.errors import DataError
from lambdatrain.storage import efs
from lambdatrain.storage.digest import Digest
from lambdatrain.training.flat import FlatLayout
from lambdatrain.training.model import ModelSpec, build_model, input_size

FORMAT = "lambdatrain-checkpoint-v1"
EXPORT_FORMAT = "lambdatrain-export-v1"
MODEL_FILE, META_FILE = "model.pt", "model.json"


def last_evaluation(metrics: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The metric of the last round that was evaluated (empty when none was)."""
    evaluated = [m for m in metrics if "val_accuracy" in m]
    return max(evaluated, key=lambda m: m["round"]) if evaluated else {}


def record_of(flat: np.ndarray, *, config: dict[str, Any], classes: list[str], mean, std, run: str,
              round_no: int, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint record of flat weights: the state_dict plus everything needed to use it."""
    spec = ModelSpec(name=config["model"], width=config["width"], num_classes=len(classes))
    return {"format": FORMAT, "model": spec.name, "width": spec.width, "num_classes": spec.num_classes,
            "input_size": input_size(spec.name), "classes": list(classes), "mean": list(mean),
            "std": list(std), "run": run, "round": round_no, "config": dict(config),
            "metrics": dict(metrics or {}), "state_dict": FlatLayout.of(build_model(spec)).state_dict(flat)}


def final_model(mount: Path, run: str, round_no: int, weights: Digest,
                metrics: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The run's model at the start of ``round_no`` (for a finished run: after its last round).

    ``weights`` is the ledger's digest of that round's weights file; ``metrics`` are the run's
    METRIC items, of which the last evaluated one is kept with the model.
    """
    paths = efs.RunLayout(mount, run)
    meta = efs.read_json(paths.config)
    flat = efs.read_array(paths.weights(round_no), weights)
    return record_of(flat, config=meta["config"], classes=meta["classes"], mean=meta["mean"], std=meta["std"],
                     run=run, round_no=round_no, metrics=last_evaluation(metrics))


def build_hint(record: dict[str, Any]) -> str:
    """Python that rebuilds the bare module; torchvision's own VGG19 where the shapes are its own."""
    if record["model"] == "vgg19" and float(record["width"]) == 1.0:
        return f"torchvision.models.vgg19(num_classes={record['num_classes']})"
    return "lambdatrain.training.model.build_model(lambdatrain.training.model.ModelSpec(**meta['spec']))"


def export_meta(record: dict[str, Any]) -> dict[str, Any]:
    """``model.json``: the architecture, input, normalization, classes and settings of a checkpoint record."""
    return {"format": EXPORT_FORMAT, "state_dict": MODEL_FILE,
            "spec": {"name": record["model"], "width": record["width"], "num_classes": record["num_classes"]},
            "build": build_hint(record), "input_size": record["input_size"],
            "input": "RGB, resized to input_size x input_size, scaled to [0, 1], then (x - mean) / std per channel",
            "mean": list(record["mean"]), "std": list(record["std"]), "classes": list(record["classes"]),
            "run": record["run"], "round": record["round"], "metrics": dict(record.get("metrics") or {}),
            "settings": dict(record["config"])}


def export_files(record: dict[str, Any]) -> dict[str, bytes]:
    """The export of a checkpoint record, file name -> bytes: the same record gives the same bytes.

    Serialized in memory: ``torch.save`` to a path names the archive's folder after the file, to a
    buffer always "archive", so a file and an S3 object made from one record are byte-identical.
    """
    buffer = io.BytesIO()
    torch.save(record["state_dict"], buffer)
    meta = json.dumps(export_meta(record), indent=2, sort_keys=True).encode()
    return {MODEL_FILE: buffer.getvalue(), META_FILE: meta}


def save(path: Path, record: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    tmp.replace(path)  # a reader sees the old checkpoint or the new one, never half of one
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
