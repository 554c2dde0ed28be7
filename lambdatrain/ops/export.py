"""A run's final model as plain PyTorch files, and predictions from it.

``export`` writes ``model.pt`` (``torch.save(state_dict)``, nothing else) and ``model.json``
(architecture, input size, normalization, class names, the run's settings, and how to rebuild the
module), so the model loads without lambdatrain's checkpoint format::

    meta = json.load(open("model.json"))
    model = build_model(ModelSpec(**meta["spec"]))      # or torchvision.models.vgg19(num_classes=...)
    model.load_state_dict(torch.load("model.pt", weights_only=True)); model.eval()

The files come, in this order, from ``checkpoint.pt`` of a ``local train --out`` folder; for a
finished run on a stack, from ``s3://BUCKET/exports/RUN/``, where the combiner wrote them when the
run finished (no EFS mount needed); else from the run's folder on EFS (the weights file of the
run's current round, checked against the ledger's digest), which is only reachable where the file
system is mounted. All three are made by ``training.checkpoint.export_files``: the same bytes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from botocore.exceptions import ClientError

from lambdatrain.ledger.items import DONE
from lambdatrain.training import checkpoint
from lambdatrain.training.checkpoint import META_FILE, MODEL_FILE, build_hint, export_meta  # noqa: F401 (API)
from lambdatrain.storage import efs as efs
from lambdatrain.protocol.errors import DataError
from lambdatrain.training.model import ModelSpec, build_model
from lambdatrain.ops.errors import MountUnavailable
from lambdatrain.ops.source import RunSource
from lambdatrain.roles.combiner import export_key, upload_export
from lambdatrain.roles.settings import DEFAULT_MOUNT, EXPORT_PREFIX

UPLOAD_WAIT_S = 60.0  # how long after a run's end its export may still be on its way to the bucket


def _from_mount(source: RunSource) -> dict[str, Any]:
    record = source.ledger.get_run(source.run)
    mount = source.target.mount if source.target else None
    paths = efs.RunLayout(mount or Path(DEFAULT_MOUNT), source.run)
    if mount is None or not paths.weights(record.round).is_file():
        where = (f"its model is not in the bucket's {EXPORT_PREFIX}{source.run}/ and " if record.state == DONE
                 else "the combiner writes its model to the bucket when it finishes; until then ")
        raise MountUnavailable(
            f"{where}the weights of run {source.run} are on EFS ({paths.weights(record.round)} is not here): run "
            f"export where the file system is mounted and pass --mount PATH, or export a `local train --out` folder")
    return checkpoint.final_model(mount, source.run, record.round, record.weights, source.ledger.metrics(source.run))


def _from_folder(source: RunSource) -> dict[str, Any]:
    record = checkpoint.load(source.folder / "checkpoint.pt")
    if record["run"] != source.run:
        raise DataError(f"{source.folder / 'checkpoint.pt'} belongs to run {record['run']}, not {source.run}")
    return record


def _fetch(source: RunSource) -> dict[str, bytes] | None:
    s3, bucket, files = source.target.s3(), source.target.name("bucket"), {}
    for name in (MODEL_FILE, META_FILE):
        try:
            files[name] = s3.get_object(Bucket=bucket, Key=export_key(source.run, name))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
    return files


def _from_bucket(source: RunSource, *, sleep: Callable[[float], None] = time.sleep) -> dict[str, bytes] | None:
    """The files the combiner wrote for a finished run; None where there is no bucket or no export.

    The combiner uploads right after the run's last commit, so a run that has just finished may
    not have them yet: without the run's weights on a mount here, wait for them a little.
    """
    target = source.target
    if target is None or not target.names.get("bucket"):
        return None
    record = source.ledger.get_run(source.run)
    if record.state != DONE:
        return None
    mounted = target.mount is not None and efs.RunLayout(target.mount, source.run).weights(record.round).is_file()
    while True:
        files = _fetch(source)
        if files is not None or mounted or time.time() > record.updated_at + UPLOAD_WAIT_S:
            return files  # None: finished before the combiner wrote exports, or the upload failed
        sleep(1.0)


def export(source: RunSource, out: Path, *, to_s3: bool = False) -> dict[str, Any]:
    files = None if source.folder is not None else _from_bucket(source)
    if files is None:
        files = checkpoint.export_files(_from_folder(source) if source.folder is not None else _from_mount(source))
    out.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (out / name).write_bytes(body)
    meta = json.loads(files[META_FILE])
    result: dict[str, Any] = {"run": source.run, "round": meta["round"],
                              "files": [str(out / MODEL_FILE), str(out / META_FILE)]}
    if to_s3:
        if source.target is None:
            raise MountUnavailable("--s3 needs a stack: pass --local-state, --endpoint or --stack-outputs with the run id")
        bucket = source.target.name("bucket")
        upload_export(source.target.s3(), bucket, source.run, files)
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
