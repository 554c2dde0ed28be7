"""The recommendation: among a plan's rows, the fastest configuration under a budget of a recipe
whose accuracy has been measured (``recipes.EVIDENCE``), with the measurement that backs it.

Only the rows decide the price and the time (lambdatrain/planning/planner.py); only the evidence
table decides what may be recommended, so a recipe becomes recommendable by filling in its row
there, never by a flag.
"""

from __future__ import annotations

from typing import Any

from lambdatrain.planning.recipes import EVIDENCE, Evidence, NoBackedRecipe, Recipe, backing, carries_own_state


def dollars(x: float) -> str:
    """Cents where they say it, two significant digits below a cent (a budget of $0.001 is not $0.00)."""
    return f"{x:.2f}" if x >= 0.01 else f"{x:.2g}"


# What accuracy_status says of a row, in the words the table and the recommendation print.
SHOWN, SHORT, NOT_MEASURED = "shown", "measured short of float32's", "not measured"


def accuracy_status(row: dict[str, Any]) -> str:
    """What is known of a row's accuracy: shown (its study's gap is within the tolerance), short
    (measured, not within it) or not measured (no study at its batch, or at its N where each worker
    carries state of its own)."""
    if row.get("accuracy_shown", True):
        return SHOWN
    return SHORT if row.get("accuracy_measured") else NOT_MEASURED


def workers_by_status(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """One recipe's rows grouped by ``accuracy_status``: each status with the worker counts it
    holds at, ascending (a plan has a row per memory and S at each N; each N is said once)."""
    by_status: dict[str, list[int]] = {}
    for r in sorted(rows, key=lambda r: r["workers"]):
        workers = by_status.setdefault(accuracy_status(r), [])
        workers += [r["workers"]] if r["workers"] not in workers else []
    return by_status


def accuracy_note(rows: list[dict[str, Any]]) -> str:
    """One recipe's rows said in a few words: nothing where every row is shown, the status where
    all share one, else each status with the N it holds at."""
    by_status = workers_by_status(rows)
    if set(by_status) == {SHOWN}:
        return ""
    if len(by_status) == 1:
        return f" (accuracy {next(iter(by_status))})"
    return " (accuracy " + "; ".join(f"{status} at N = {', '.join(map(str, ns))}"
                                      for status, ns in by_status.items()) + ")"


def recipe_of(row: dict[str, Any]) -> Recipe:
    return Recipe(row["transport"], row["mode"], row["local_steps"], row["batch_size"])


def recommend(rows: list[dict[str, Any]],
              budget_per_epoch: float | None = None) -> list[tuple[dict[str, Any], Evidence]]:
    """Per backed recipe (recipes.backing), its fastest row within the budget (dollars per warm
    epoch; None: any price), fastest first: the first is the recommendation. Raises
    NoBackedRecipe, saying why, when there is none."""
    backed = [(r, e) for r in rows if r["runnable"] and (e := backing(recipe_of(r), r["workers"])) is not None]
    if not backed:
        measured = "; ".join(f"{t} {m}" + (f" K={k}" if m == "average" else "")
                             + (f" up to N = {e.workers}" if carries_own_state(t, m) else "")
                             + f" up to batch {e.batch_size}"
                             for (t, m, k), studies in EVIDENCE.items() for e in studies if e.shown)
        raise NoBackedRecipe(f"no recipe in this plan has a measured accuracy at its batch; measured "
                             f"(lambdatrain/planning/recipes.py EVIDENCE): {measured}")
    fits = [(r, e) for r, e in backed if budget_per_epoch is None or r["cost_per_epoch"] <= budget_per_epoch]
    if not fits:
        cheapest = min(backed, key=lambda re: re[0]["cost_per_epoch"])[0]
        raise NoBackedRecipe(f"no configuration of a measured recipe costs at most ${dollars(budget_per_epoch)} per "
                             f"epoch; the cheapest is {cheapest['recipe']} at N = {cheapest['workers']}, "
                             f"S = {cheapest['shards']}, {cheapest['memory_mb']} MB: "
                             f"${dollars(cheapest['cost_per_epoch'])}")
    fastest: dict[str, tuple[dict[str, Any], Evidence]] = {}
    for r, e in sorted(fits, key=lambda re: re[0]["epoch_s"]):
        fastest.setdefault(r["recipe"], (r, e))
    return list(fastest.values())
