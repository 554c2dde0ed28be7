"""Rebuilding a run's lost ledger items from EFS (``resume`` of a run the table no longer has).

The local stack's moto keeps its state in memory, and on AWS a table can be deleted or restored
without a run's items; EFS holds every completed round anyway, so ``resume`` rebuilds from it.
"""

from __future__ import annotations

from lambdatrain.storage.digest import Digest
from lambdatrain.protocol.errors import CorruptFile, UnknownRun
from lambdatrain.storage.efs import RunLayout, read_array, read_digest, read_json
from lambdatrain.ledger.items import DONE, RUNNING
from lambdatrain.logs import logger
from lambdatrain.protocol.config import RunConfig
from lambdatrain.roles.runtime import Runtime


def rebuild_from_efs(runtime: Runtime, run: str) -> None:
    """Recreate a run's ledger items from EFS, which holds every completed round.

    A round is complete on EFS when the weights it produced exist with a digest that matches
    (the combiner writes them last). Those weights are exactly what the lost commit would have
    published, so the resumed run continues bit-identically. Metrics come from the rounds'
    metric.json files; timings of the lost rounds are kept, nothing is invented.
    """
    paths = RunLayout(runtime.settings.mount, run)
    if not paths.config.exists():
        raise UnknownRun(f"unknown run '{run}': no ledger items and no {paths.config} on the mount")
    meta = read_json(paths.config)
    config = RunConfig(**meta["config"])
    last, digest = _last_complete_round(paths)
    metrics = [read_json(paths.metric(r)) for r in range(last) if paths.metric(r).exists()]
    evaluated = [m for m in metrics if "val_accuracy" in m]
    finished = bool(metrics) and bool(metrics[-1].get("stop_reason"))
    summary = {"n_params": meta["n_params"], "num_classes": len(meta["classes"]),
               "samples_seen": sum(m["samples"] for m in metrics), "created_at": meta.get("created_at", 0),
               "rebuilt_at": runtime.clock()}
    if evaluated:
        summary.update(best_accuracy=max(m["val_accuracy"] for m in evaluated),
                       last_val_accuracy=evaluated[-1]["val_accuracy"], last_val_loss=evaluated[-1]["val_loss"])
    if finished:
        summary["stop_reason"] = metrics[-1]["stop_reason"]
    runtime.ledger.restore_run(run, config, round_no=last, rounds_per_epoch=meta["rounds_per_epoch"],
                               weights=digest, state=DONE if finished else RUNNING, meta=summary, metrics=metrics)
    logger.info("ledger rebuilt from EFS", extra={"run": run, "round": last, "metrics": len(metrics)})


def _last_complete_round(paths: RunLayout) -> tuple[int, Digest]:
    for r in reversed(paths.committed_rounds()):
        try:
            digest = read_digest(paths.weights(r))
            read_array(paths.weights(r), digest)  # verified: a damaged newest round falls back
            return r, digest
        except CorruptFile:
            continue
    raise UnknownRun(f"run '{paths.run}' has no intact weights on the mount")
