"""The recommendation: among a plan's rows, the fastest configuration under a budget of a recipe
whose accuracy has been measured (``recipes.EVIDENCE``), with the measurement that backs it.

Only the rows decide the price and the time (lambdatrain/planning/planner.py); only the evidence
table decides what may be recommended, so a recipe becomes recommendable by filling in its row
there, never by a flag.
"""

from __future__ import annotations

from typing import Any

from lambdatrain.planning.recipes import EVIDENCE, Evidence, NoBackedRecipe, Recipe, backing


def dollars(x: float) -> str:
    """Cents where they say it, two significant digits below a cent (a budget of $0.001 is not $0.00)."""
    return f"{x:.2f}" if x >= 0.01 else f"{x:.2g}"


def recipe_of(row: dict[str, Any]) -> Recipe:
    return Recipe(row["transport"], row["mode"], row["local_steps"], row["batch_size"])


def recommend(rows: list[dict[str, Any]],
              budget_per_epoch: float | None = None) -> list[tuple[dict[str, Any], Evidence]]:
    """Per backed recipe (recipes.backing), its fastest row within the budget (dollars per warm
    epoch; None: any price), fastest first: the first is the recommendation. Raises
    NoBackedRecipe, saying why, when there is none."""
    backed = [(r, e) for r in rows if r["runnable"] and (e := backing(recipe_of(r), r["workers"])) is not None]
    if not backed:
        measured = "; ".join(f"{t} {m}" + (f" K={k} up to N = {e.workers}" if m == "average" else "")
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
