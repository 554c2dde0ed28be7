"""A run's final model as plain PyTorch files, and predictions from it.

``export`` writes ``model.pt`` (``torch.save(state_dict)``, nothing else) and ``model.json``
(architecture, input size, normalization, class names, the run's settings, and how to rebuild the
module), so the model loads without lambdatrain's checkpoint format::

    meta = json.load(open("model.json"))
    model = build_model(ModelSpec(**meta["spec"]))      # or torchvision.models.vgg19(num_classes=...)
    model.load_state_dict(torch.load("model.pt", weights_only=True)); model.eval()

The weights come from ``checkpoint.pt`` of a ``local train --out`` folder, or from the run's folder
on EFS (the weights file of the run's current round, checked against the ledger's digest), which
is only reachable where the file system is mounted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lambdatrain.training import checkpoint
from lambdatrain.storage import efs as efs
from lambdatrain.protocol.errors import DataError
from lambdatrain.training.model import ModelSpec, build_model
from lambdatrain.ops.errors import MountUnavailable
from lambdatrain.ops.source import RunSource
from lambdatrain.roles.settings import DEFAULT_MOUNT, EXPORT_PREFIX

FORMAT = "lambdatrain-export-v1"
MODEL_FILE, META_FILE = "model.pt", "model.json"


def _from_mount(source: RunSource) -> dict[str, Any]:
    record = source.ledger.get_run(source.run)
    mount = source.target.mount if source.target else None
    paths = efs.RunLayout(mount or Path(DEFAULT_MOUNT), source.run)
    if mount is None or not paths.weights(record.round).is_file():
        raise MountUnavailable(
            f"the weights of run {source.run} are on EFS ({paths.weights(record.round)} is not here): run export "
            f"where the file system is mounted and pass --mount PATH, or export a `local train --out` folder")
    return checkpoint.final_model(mount, source.run, record.round, record.weights, source.ledger.metrics(source.run))


def _from_folder(source: RunSource) -> dict[str, Any]:
    record = checkpoint.load(source.folder / "checkpoint.pt")
    if record["run"] != source.run:
        raise DataError(f"{source.folder / 'checkpoint.pt'} belongs to run {record['run']}, not {source.run}")
    return record


def build_hint(record: dict[str, Any]) -> str:
    """Python that rebuilds the bare module; torchvision's own VGG19 where the shapes are its own."""
    if record["model"] == "vgg19" and float(record["width"]) == 1.0:
        return f"torchvision.models.vgg19(num_classes={record['num_classes']})"
    return "lambdatrain.training.model.build_model(lambdatrain.training.model.ModelSpec(**meta['spec']))"


def export_meta(record: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "state_dict": MODEL_FILE,
            "spec": {"name": record["model"], "width": record["width"], "num_classes": record["num_classes"]},
            "build": build_hint(record), "input_size": record["input_size"],
            "input": "RGB, resized to input_size x input_size, scaled to [0, 1], then (x - mean) / std per channel",
            "mean": list(record["mean"]), "std": list(record["std"]), "classes": list(record["classes"]),
            "run": record["run"], "round": record["round"], "metrics": dict(record.get("metrics") or {}),
            "settings": dict(record["config"])}


def export(source: RunSource, out: Path, *, to_s3: bool = False) -> dict[str, Any]:
    record = _from_folder(source) if source.folder is not None else _from_mount(source)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(record["state_dict"], out / MODEL_FILE)
    (out / META_FILE).write_text(json.dumps(export_meta(record), indent=2, sort_keys=True))
    result: dict[str, Any] = {"run": source.run, "round": record["round"],
                              "files": [str(out / MODEL_FILE), str(out / META_FILE)]}
    if to_s3:
        if source.target is None:
            raise MountUnavailable("--s3 needs a stack: pass --local-state, --endpoint or --stack-outputs with the run id")
        bucket = source.target.name("bucket")
        s3 = source.target.s3()
        for name in (MODEL_FILE, META_FILE):
            s3.upload_file(str(out / name), bucket, f"{EXPORT_PREFIX}{source.run}/{name}")
        result["s3"] = f"s3://{bucket}/{EXPORT_PREFIX}{source.run}/"
    return result


def load_any(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model and its metadata from a checkpoint.pt, a model.json, or a folder holding either."""
    path = Path(path)
    if path.is_dir():
        path = path / META_FILE if (path / META_FILE).is_file() else path / "checkpoint.pt"
    if path.name == META_FILE:
        if not path.is_file():
            raise DataError(f"no such export: {path}")
        meta = json.loads(path.read_text())
        model = build_model(ModelSpec(**meta["spec"]))
        model.load_state_dict(torch.load(path.parent / meta["state_dict"], map_location="cpu", weights_only=True))
        return model.eval(), meta
    record = checkpoint.load(path)
    return checkpoint.model_from(record), record


def _image(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def predict(model_path: Path, images: Sequence[Path], *, top: int = 3) -> list[dict[str, Any]]:
    """The ``top`` classes and probabilities for each image."""
    from lambdatrain.training.batches import to_tensor_batch

    model, meta = load_any(model_path)
    x = np.stack([_image(Path(p), int(meta["input_size"])) for p in images])
    with torch.no_grad():
        probs = torch.softmax(model(to_tensor_batch(x, meta["mean"], meta["std"])), dim=1)
    values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
    return [{"image": str(p), "top": [{"class": meta["classes"][i], "probability": float(v)}
                                      for v, i in zip(vs.tolist(), idx.tolist())]}
            for p, vs, idx in zip(images, values, indices)]
