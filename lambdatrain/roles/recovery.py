"""Re-driving lost work: the watchdog, ``stop`` and ``resume``.

Asynchronous invocations and stream records can be lost (retries exhausted) and processes can die.
The ledger says exactly what a round still needs, so recovery is one function: ``redrive`` invokes
the workers that have not recorded (open round), marks ready an open round that holds all N results
(its last worker died between recording and that write), or invokes the combine (ready round, or
a claim whose lease ran out). Every target is idempotent, so re-driving too much is harmless, only
wasteful.
"""

from __future__ import annotations

from lambdatrain.ledger import schema
from lambdatrain.ledger.items import FAILED, RUNNING, STOPPED, RunRecord
from lambdatrain.logs import logger
from lambdatrain.protocol.config import COMPRESSED
from lambdatrain.protocol.events import CombineEvent, Outcome, WorkEvent, check_run_id
from lambdatrain.roles.runtime import Runtime, invoke_all
from lambdatrain.roles.settings import COMBINER, STATE_EXPIRING, STATE_KEPT, WORKER

RESUMABLE = (STOPPED, FAILED)  # what ``resume`` continues besides a running run


def fan_out(runtime: Runtime, run: str, round_no: int, only: list[int] | None = None) -> list[int]:
    """Invoke the workers of round_no (all, or ``only`` those) if the run is still running.

    Concurrently (``roles.runtime.invoke_all``): one ledger read, then about N / INVOKE_POOL
    invocation latencies instead of N. A failed invocation raises after the others were made; the
    round then waits for the watchdog, which re-drives exactly the workers that have not recorded.
    """
    record = runtime.ledger.get_run(run)
    if record.state != RUNNING or record.round != round_no:
        return []
    targets = list(range(record.workers)) if only is None else only
    invoke_all(runtime.invoker, WORKER, [WorkEvent(run=run, round=round_no, workerno=w, workers=record.workers,
                                                   epochsdone=record.epoch).to_event() for w in targets])
    return targets


def redrive(runtime: Runtime, run: str, *, reason: str) -> Outcome:
    record = runtime.ledger.get_run(run)
    if record.state != RUNNING:
        return Outcome("idle", run=run, round=record.round, detail={"state": record.state})
    current = runtime.ledger.get_round(run, record.round)
    status = current.status if current else None
    detail: dict = {"reason": reason, "round_status": status}
    if current is not None and status == schema.OPEN:
        if current.missing:
            detail["workers"] = fan_out(runtime, run, record.round, only=list(current.missing))
        else:  # every result recorded; the worker that would have marked the round ready died first
            detail["ready"] = runtime.ledger.mark_ready(run, record.round, record.workers)
    elif status in (schema.READY, schema.COMBINING):
        runtime.invoker.invoke(COMBINER, CombineEvent(run=run, round=record.round, workers=record.workers,
                                                      epochsdone=record.epoch).to_event())
        detail["combine"] = True
    runtime.ledger.mark_redriven(run, record.round)
    logger.info("re-driven", extra={"run": run, "round": record.round, **detail})
    return Outcome("redriven", run=run, round=record.round, detail=detail)


def resumed_from(round_no: int) -> list[int]:
    """Rounds whose state in the bucket a run stopped at ``round_no`` reads when it resumes: that
    round's (the workers' residuals, the combiner's momentum and residual), and the next's, which
    the workers that finished the round before the stop wrote."""
    return [round_no, round_no + 1]


def keep_state(runtime: Runtime, run: str) -> int:
    """Keep the residuals a stopped or failed compressed run resumes from (``resumed_from``),
    re-tagged so the bucket's lifecycle rule does not expire them (roles/settings.py STATE_KEPT);
    how many. Idempotent; the ledger records the round so the next watchdog does not repeat it."""
    record = runtime.ledger.get_run(run)
    if record.state not in RESUMABLE or record.config.transport not in COMPRESSED:
        return 0
    kept = runtime.state_store.retag(run, resumed_from(record.round), STATE_KEPT)
    if runtime.ledger.mark_state_kept(run, record.round, RESUMABLE):
        logger.info("residuals kept", extra={"run": run, "round": record.round, "residuals": kept})
    return kept


def watchdog(runtime: Runtime) -> Outcome:
    """Re-drive every running run whose current round made no progress, and was not re-driven,
    within its deadline (so once per deadline while it stays stalled, not on every tick); keep
    the residuals of a stopped or failed compressed run (``keep_state``) once per round; and, on a
    table made before the runs index, put its runs in it first."""
    now = runtime.clock()
    redriven = []
    try:  # a table made before the runs index: the runs in it from now on (lambdatrain/ledger/listing.py)
        if mended := runtime.ledger.backfill_runs_index():
            logger.info("runs indexed", extra={"runs": mended})
    except Exception as exc:  # the next tick tries again; until then the listing scans, missing no run
        logger.warning("could not index the runs", extra={"error": str(exc)})
    for listed in runtime.ledger.list_runs():
        if listed.state in RESUMABLE and listed.config.transport in COMPRESSED and \
                listed.state_kept_round != listed.round:
            try:
                keep_state(runtime, listed.run)
            except Exception as exc:  # the next watchdog tries again; the other runs are re-driven now
                logger.warning("could not keep residuals", extra={"run": listed.run, "error": str(exc)})
        if listed.state != RUNNING:  # from the runs index, which may lag: get_run reads the state for sure
            continue
        record = runtime.ledger.get_run(listed.run)
        current = runtime.ledger.get_round(record.run, record.round)
        # Idle since the round's last progress or its last re-drive, whichever is later: what was
        # re-driven gets a whole deadline to finish (a worker runs up to 15 minutes) before it is
        # invoked again, instead of once more on every tick while it still runs.
        last = max(current.updated_at if current else record.updated_at,
                   record.redriven_at if record.redriven_round == record.round else 0.0)
        idle = now - last
        if idle > record.config.round_deadline_s:
            redrive(runtime, record.run, reason=f"no progress for {idle:.0f} s")
            redriven.append(record.run)
    return Outcome("checked", detail={"redriven": redriven})


def stop(runtime: Runtime, run: str) -> Outcome:
    """No new round starts; the weights of the last committed round stay on EFS."""
    runtime.ledger.set_state(check_run_id(run, "stop"), STOPPED, expect=[RUNNING], reason="stopped by user")
    return Outcome("stopped", run=run)


def resume(runtime: Runtime, run: str) -> Outcome:
    """Continue a run from its last committed round: stopped, failed, stalled, or ledger lost."""
    check_run_id(run, "resume")
    if runtime.ledger.find_run(run) is None:
        from lambdatrain.roles.rebuild import rebuild_from_efs  # numpy: not needed on the other paths

        rebuild_from_efs(runtime, run)
    else:
        before = runtime.ledger.get_run(run)
        runtime.ledger.set_state(run, RUNNING, expect=[*RESUMABLE, RUNNING])
        _release_state(runtime, before)
    return redrive(runtime, run, reason="resumed")


def _release_state(runtime: Runtime, record: RunRecord) -> None:
    """A resumed run's kept residuals expire again like any others (``keep_state`` kept them): the
    combiner deletes them once the run is past them, except an epoch boundary's, which retention
    keeps until the lifecycle rule expires them. Where this is missed (a starter killed before it,
    a watchdog that kept them just as the run resumed), an epoch boundary's stay kept: storage
    billed, never a result changed."""
    if record.state_kept_round is None or record.config.transport not in COMPRESSED:
        return
    try:
        runtime.state_store.retag(record.run, resumed_from(record.state_kept_round), STATE_EXPIRING)
    except Exception as exc:  # kept longer than needed costs storage, never a result
        logger.warning("could not release kept residuals", extra={"run": record.run, "error": str(exc)})
