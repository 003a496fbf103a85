"""From the runs of a schedule comparison to its verdict: frontier, gains, loss at a common budget.

Pure arithmetic on the run records of :func:`batchlaw.schedule.compare.train_to_target` (no
torch). Decisions, in one place:

* **Per-seed yardstick.** Every seed trains every constant batch from the same initialisation
  and data seed as the schedules, so each schedule run is judged against the frontier of its
  own seed (paired, like common random numbers), and the per-seed gains are averaged with a
  Student-t 95% interval.
* **The drawn frontier** (plots, the table) takes per batch the median steps and the median
  examples over seeds; a run that did not reach the target counts as ``+inf`` (science notes,
  section 10: a censored run is not missing), so a batch whose median is censored is shown
  but is not on the frontier.
* **Failed constant runs are reported, never dropped silently**: their status stays in the
  frontier block and a note names them; they limit that seed's frontier, which then gives
  bounds rather than numbers beyond its range.
* **Fixed budget** (Merrill et al. 2025's framing): the examples at which the first run reached
  the target (the fewest over every run); every run's held-out loss is read there, linear
  between evaluations, and compared with the best constant batch of the same seed.
"""

from __future__ import annotations

import math

from ..errors import InsufficientDataError
from .frontier import Frontier, bounded_interval, example_overhead, loss_at, mean_interval, pareto_front, pareto_gain

__all__ = ["analyse_comparison", "median_censored", "verdict"]


def median_censored(values) -> float | None:
    """Median with ``None`` counted as ``+inf``; ``None`` when the median itself is censored."""
    xs = sorted(math.inf if v is None else float(v) for v in values)
    if not xs:
        return None
    n = len(xs)
    m = xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])
    return m if math.isfinite(m) else None


def _seed_frontiers(grid, frontier_runs, seeds) -> dict:
    out = {}
    for s in seeds:
        rows = [next(r for r in frontier_runs[b] if r["seed"] == s) for b in grid]
        try:
            out[s] = Frontier([r["examples"] for r in rows], [r["steps"] for r in rows], batches=list(grid))
        except InsufficientDataError:
            out[s] = None
    return out


def _summary(rs: list[dict], base: dict) -> dict:
    row = {k: mean_interval([r[k] for r in rs], floor=0.0) for k in ("steps", "examples", "tokens", "wall_s")}
    for k in ("steps", "examples", "wall_s"):
        ratios = [None if r[k] is None or base[r["seed"]][k] is None else r[k] / base[r["seed"]][k] for r in rs]
        row[f"{k}_ratio"] = mean_interval(ratios, floor=0.0)
    row["reached"] = sum(r["status"] == "reached" for r in rs)
    row["diverged"] = sum(r["status"] == "diverged" for r in rs)
    if any("branch" in r for r in rs):  # a schedule that branches: its branch cost apart (already in the totals)
        row["branch_examples"] = mean_interval([r["branch"]["examples"] for r in rs], floor=0.0)
        row["branch_steps"] = mean_interval([r["branch"]["steps"] for r in rs], floor=0.0)
        row["branch_share"] = mean_interval([r["branch"]["share"] for r in rs], floor=0.0)
    return row


def verdict(gain: dict) -> tuple[bool | None, str]:
    """Does a schedule pay? ``(met, why)`` from its :func:`~batchlaw.schedule.frontier.bounded_interval`
    of per-seed Pareto gains.

    ``True`` when the 95% interval lies above 0 (for a lower bound: the interval of the bounds);
    ``False`` when the evidence says it does not (the interval, or an upper bound, lies below 0;
    or it missed the target on some seed); ``None`` when it cannot tell (the interval straddles
    0, one seed, or only a bound on the wrong side).
    """
    n = len(gain["values"])
    if any(v is None for v in gain["values"]):
        return False, "did not reach the target (or had no frontier to compare with) on every seed"
    if gain["mean"] is None:
        return None, "its gain is bounded from below on some seeds and from above on others"
    if n < 2:
        return None, "one seed: no interval, so no verdict"
    lo, hi = mean_interval(gain["values"])["ci"]
    if gain["bound"] is None:
        if lo > 0:
            return True, "the 95% interval of the gain lies above 0"
        if hi < 0:
            return False, "the 95% interval of the gain lies below 0"
        return None, "the 95% interval of the gain includes 0: more seeds may tell"
    if gain["bound"] == "lower":
        if lo > 0:
            return True, "even its lower bound's 95% interval lies above 0"
        return None, "only a lower bound is known (fewer examples than every constant batch), and it is not above 0"
    if hi < 0 or gain["mean"] <= 0 and all(v <= 0 for v in gain["values"]):
        return False, "even its upper bound is not above 0"
    return None, "only an upper bound is known (beyond the frontier's range)"


def _frontier_block(grid, frontier_runs, seeds, notes) -> dict:
    med_s = [median_censored([r["steps"] for r in frontier_runs[b]]) for b in grid]
    med_e = [median_censored([r["examples"] for r in frontier_runs[b]]) for b in grid]
    on = set(pareto_front(med_e, med_s))
    points = []
    for j, b in enumerate(grid):
        rs = frontier_runs[b]
        failed = {st: [r["seed"] for r in rs if r["status"] == st] for st in ("diverged", "budget")}
        if failed["diverged"]:
            notes.append(f"The constant batch {b} diverged on seed(s) {failed['diverged']}: reported as diverged, it "
                         "is not on those seeds' frontier, which ends before it.")
        if failed["budget"]:
            notes.append(f"The constant batch {b} did not reach the target within the budget on seed(s) "
                         f"{failed['budget']} (censored: counted as +inf steps).")
        points.append({"batch": b, "lr": rs[0].get("lr"), "reached": sum(r["status"] == "reached" for r in rs),
                       "diverged": len(failed["diverged"]), "steps": mean_interval([r["steps"] for r in rs], floor=0.0),
                       "examples": mean_interval([r["examples"] for r in rs], floor=0.0),
                       "median_steps": med_s[j], "median_examples": med_e[j], "on_frontier": j in on, "runs": rs})
    return {"statistic": "per batch, the median steps and median examples over seeds (a run that did not reach the "
                         "target counts as +inf); gains use each seed's own frontier", "points": points}


def _budget(frontier_runs, schedule_runs, seeds, tpe) -> dict:
    reached = [r["examples"] for rs in [*frontier_runs.values(), *schedule_runs.values()] for r in rs
               if r["examples"] is not None]
    if not reached:
        return {"examples": None, "tokens": None, "rule": "no run reached the target",
                "frontier_loss": mean_interval([None] * len(seeds)), "best_constant_batch": [None] * len(seeds)}
    e_star = min(reached)
    best = {}
    for s in seeds:
        losses = [(loss_at(r["curve"], e_star), b) for b, rs in frontier_runs.items() for r in rs if r["seed"] == s]
        losses = [x for x in losses if x[0] is not None]
        best[s] = min(losses) if losses else (None, None)
    return {"examples": e_star, "tokens": e_star * tpe if tpe else None,
            "rule": "the fewest examples with which any run reached the target; every run's held-out loss is read "
                    "there (linear between evaluations) and compared with the best constant batch of its seed",
            "frontier_loss": mean_interval([best[s][0] for s in seeds]),
            "best_constant_batch": [best[s][1] for s in seeds], "_best": {s: best[s][0] for s in seeds}}


def _budget_losses(rs, budget) -> dict:
    e_star, best = budget["examples"], budget.get("_best", {})
    losses = [None if e_star is None else loss_at(r["curve"], e_star) for r in rs]
    pen = [None if v is None or best.get(r["seed"]) is None else v - best[r["seed"]] for v, r in zip(losses, rs)]
    return {"loss_at_budget": mean_interval(losses), "loss_penalty": mean_interval(pen)}


def _gains(rs, fronts, allowance) -> dict:
    g, o = [], []
    for r in rs:
        f = fronts.get(r["seed"])
        ok = f is not None and r["steps"] is not None and r["examples"] is not None
        g.append(pareto_gain(r["steps"], r["examples"], f, allowance) if ok else None)
        o.append(example_overhead(r["steps"], r["examples"], f) if ok else None)
    return {"pareto_gain": bounded_interval(g), "example_overhead": bounded_interval(o)}


def analyse_comparison(*, grid, frontier_runs: dict, schedule_runs: dict, constant: dict, seeds, allowance: float,
                       tokens_per_example=None) -> dict:
    """The ``frontier``, ``schedules``, ``budget``, ``goal`` and ``notes`` blocks of the output.

    Args:
        grid: the constant batches (examples), increasing.
        frontier_runs: batch -> the runs of that constant batch, one per seed (each with ``seed``).
        schedule_runs: schedule name -> its runs, one per seed.
        constant: ``{"constant_small": batch, "constant_large": batch}`` for the constant
            schedules to list beside the others (their runs are the frontier's).
        seeds: the seeds.
        allowance: examples allowance of the Pareto gain (1.1: up to 10% more examples).
        tokens_per_example: to give the budget in tokens too.
    """
    notes: list[str] = []
    fronts = _seed_frontiers(grid, frontier_runs, seeds)
    for s, f in fronts.items():
        if f is None:
            notes.append(f"No constant batch reached the target on seed {s}: that seed has no frontier and no gains.")
    frontier = _frontier_block(grid, frontier_runs, seeds, notes)
    runs = {name: frontier_runs[b] for name, b in constant.items()}
    runs.update(schedule_runs)
    base = {r["seed"]: r for r in frontier_runs[grid[0]]}
    budget = _budget(frontier_runs, schedule_runs, seeds, tokens_per_example)
    schedules, results = {}, []
    for name, rs in runs.items():
        row = {**_summary(rs, base), **_gains(rs, fronts, allowance), **_budget_losses(rs, budget), "runs": rs}
        schedules[name] = row
        if name in constant:
            continue
        met, why = verdict(row["pareto_gain"])
        g = row["pareto_gain"]
        if g["bound"] is not None and g["mean"] is not None:
            side = "at least" if g["bound"] == "lower" else "at most"
            notes.append(f"{name}: the Pareto gain is {side} {g['mean']:.3g}: "
                         + ("it spent fewer examples than every constant batch (below the frontier's range)."
                            if g["bound"] == "lower" else "beyond the frontier's range (more examples than its largest "
                                                          "batch): add larger constant batches to pin it down."))
        results.append({"schedule": name, "pareto_gain": g["mean"], "ci": g["ci"], "bound": g["bound"], "met": met,
                        "why": why, "steps_ratio": row["steps_ratio"]["mean"],
                        "examples_ratio": row["examples_ratio"]["mean"]})
    budget.pop("_best", None)
    if not results:
        met, reason = None, "only constant batches ran: there is no schedule to judge"
    elif any(r["met"] for r in results):
        met, reason = True, "at least one schedule is shown to pay"
    else:
        open_ = [r["schedule"] for r in results if r["met"] is None]
        met, reason = False, "no schedule is shown to pay" + (
            f" ({', '.join(open_)}: the evidence cannot tell either way)" if open_ else "")
    goal = {"rule": f"a schedule pays when its Pareto gain 1 - steps / S_frontier({allowance:g} x its examples) is above "
                    "0 with 95% confidence (Student-t interval over seeds of per-seed gains)",
            "allowance": allowance, "results": results, "met": met, "reason": reason}
    return {"frontier": frontier, "schedules": schedules, "budget": budget, "goal": goal, "notes": notes}
