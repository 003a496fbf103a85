"""From a sweep's trials to its answer: steps vs batch, the fitted law, and the noise scale beside it.

For each batch size the best learning rate's steps to target are taken (the median over seeds
of each seed's best), :func:`batchlaw.fit.fit_steps_law` fits ``S(B) = S_min (1 + B_crit/B)``
to them, and the run-averaged ``B_simple`` measured by the monitor in those best trials is
pooled (ratio of the mean ``tr(Sigma)`` to the mean ``|G|^2`` over the trials, with a Fieller
interval treating each trial as one batch mean), so the direct measurement and the noise-scale
prediction can be compared (McCandlish et al. 2018: ``B_crit`` is roughly ``B_noise`` averaged
over the run).

The analysis says what it cannot do: a target that no batch size reached names the best loss
seen and where; a steps-to-target reading under 3 evaluation intervals is flagged as coarse.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from .._format import fmt_num
from ..errors import InsufficientDataError
from ..fit import StepsFit, fit_steps_law
from ..noise.estimators import fieller_interval

__all__ = ["SweepAnalysis", "batch_summary", "analyze_sweep", "pooled_b_simple", "COARSE_INTERVALS"]

#: a steps-to-target reading under this many evaluation intervals is flagged as coarse.
COARSE_INTERVALS = 3


def batch_summary(results: list[dict]) -> list[dict]:
    """Best learning rate per batch size; ``steps_to_target`` is ``None`` where nothing reached it.

    Returns one dict per batch size (ascending) with ``batch_size``, ``steps_to_target``
    (median over seeds of each seed's fewest), ``best_lr``, ``lrs_tried``, ``lr_at_edge``
    (``"low"``/``"high"`` when the best was the smallest/largest tried) and ``best_trials``.
    """
    by_b: dict[int, dict[int, list[dict]]] = {}
    for r in results:
        s = r["spec"]
        by_b.setdefault(s["batch_size"], {}).setdefault(s["seed"], []).append(r)
    out = []
    for b, seeds in sorted(by_b.items()):
        tried = sorted({t["spec"]["lr"] for ts in seeds.values() for t in ts})
        bests = []
        for trials in seeds.values():
            reached = [t for t in trials if t["status"] == "reached"]
            if reached:
                bests.append(min(reached, key=lambda t: t["steps_to_target"]))
        row = {"batch_size": b, "steps_to_target": None, "best_lr": None, "lrs_tried": tried,
               "lr_at_edge": None, "best_trials": bests}
        if bests:
            bests.sort(key=lambda t: t["steps_to_target"])
            best_lr = bests[len(bests) // 2]["spec"]["lr"]
            row.update(steps_to_target=float(statistics.median(t["steps_to_target"] for t in bests)),
                       best_lr=best_lr,
                       lr_at_edge="low" if best_lr == tried[0] else "high" if best_lr == tried[-1] else None)
        out.append(row)
    return out


def pooled_b_simple(trials: list[dict], confidence: float = 0.95) -> dict | None:
    """Run-averaged ``B_simple`` over trials (in the trials' noise unit), or ``None`` if fewer
    than 3 trials measured the noise."""
    pairs = [(t["noise"]["trace_sigma_mean"], t["noise"]["g_sq_mean"]) for t in trials
             if t.get("noise") and t["noise"].get("g_sq_mean") is not None]
    if len(pairs) < 3:
        return None
    tr, g = np.array(pairs).T
    if g.mean() <= 0:
        return None
    lo, hi = fieller_interval(tr, g, confidence)
    return {"b_simple": float(tr.mean() / g.mean()), "ci": [lo, None if math.isinf(hi) else hi],
            "n_trials": len(pairs), "unit": trials[0]["unit"]}


@dataclass
class SweepAnalysis:
    """The answer of a sweep. Batch sizes, ``B_crit`` and ``CBS`` are in examples (sequences)."""

    name: str
    config: dict
    points: list[dict]
    fit: StepsFit | None
    fit_error: str
    b_simple: dict | None  # pooled, converted to examples
    tokens_per_example: int | None
    trials: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "config": self.config,
            "points": [{k: v for k, v in p.items() if k != "best_trials"} for p in self.points],
            "fit": None if self.fit is None else self.fit.to_dict(), "fit_error": self.fit_error,
            "b_simple": self.b_simple, "tokens_per_example": self.tokens_per_example,
            "n_trials": len(self.trials), "warnings": list(self.warnings),
        }


def _best_loss(results: list[dict]) -> tuple[float, int] | None:
    """Lowest finite loss evaluated in any trial that did not diverge, and its batch size."""
    best = None
    for r in results:
        if r["status"] == "diverged":
            continue
        for c in r["curve"]:
            loss = c[1]
            if isinstance(loss, (int, float)) and math.isfinite(loss) and (best is None or loss < best[0]):
                best = (float(loss), r["spec"]["batch_size"])
    return best


def _not_reached(config: dict, results: list[dict], missing: list[int]) -> str:
    target, budget = config.get("target_loss"), config.get("max_steps")
    best = _best_loss([r for r in results if r["spec"]["batch_size"] in missing])
    where = (f"best loss {best[0]:.4g} at batch {best[1]}" if best is not None
             else "every trial diverged or none was evaluated")
    return f"{where}: raise the target loss (above {target:g}) or the budget (--max-steps, now {budget})."


def _coarse_readings(points: list[dict]) -> list[str]:
    out = []
    for p in points:
        for t in p["best_trials"][:1]:
            interval = t.get("eval_interval") or t["spec"].get("eval_every") or 1
            steps = t["steps_to_target"]
            if steps >= COARSE_INTERVALS * interval:
                continue
            if interval == 1:
                out.append(f"batch {p['batch_size']}: the target was reached in {fmt_num(steps)} steps, too few to "
                           "tell batch sizes apart: lower the target loss or measure smaller batch sizes.")
            else:
                out.append(
                    f"batch {p['batch_size']}: {fmt_num(steps)} steps to target is under {COARSE_INTERVALS} "
                    f"evaluation intervals ({interval} steps): the reading is coarse; evaluate more often (a smaller "
                    "--eval-every, or leave it unset for an interval relative to the steps).")
    return out


def analyze_sweep(name: str, config: dict, results: list[dict], *, reference_batch: float | None = None,
                  n_boot: int = 1000) -> SweepAnalysis:
    """Summarise a sweep's trials; a fit the data cannot support leaves ``fit`` ``None`` and says why.

    Args:
        name: the sweep's name.
        config: its configuration (:meth:`SweepConfig.to_dict`).
        results: its trials' results.
        reference_batch: ``B0`` of Zhang et al.'s CBS (default: the smallest batch size).
        n_boot: bootstrap resamples of the fit.

    Returns:
        A :class:`SweepAnalysis`; ``fit_error`` says why there is no fit (a target no batch size
        reached names the best loss seen and its batch), ``warnings`` lists coarse readings.
    """
    points = batch_summary(results)
    ok = [p for p in points if p["steps_to_target"] is not None]
    missing = [p["batch_size"] for p in points if p["steps_to_target"] is None]
    fit, error = None, ""
    if not results:
        error = "the sweep has no finished trial yet: run (or resume) it with 'batchlaw sweep'."
    elif not ok:
        error = (f"target {config.get('target_loss', math.nan):g} not reached by any batch size within the budget; "
                 + _not_reached(config, results, missing))
    else:
        try:
            fit = fit_steps_law([p["batch_size"] for p in ok], [p["steps_to_target"] for p in ok],
                                reference_batch=reference_batch, unit="examples", n_boot=n_boot)
        except InsufficientDataError as err:
            error = str(err)
            if missing:
                error += (f" Batch sizes {missing} did not reach target {config.get('target_loss', math.nan):g} "
                          f"within the budget; " + _not_reached(config, results, missing))
    best = [t for p in ok for t in p["best_trials"]]
    tpe = results[0].get("tokens_per_example") if results else None
    pooled = pooled_b_simple(best)
    if pooled is not None and pooled["unit"] == "tokens" and tpe:
        pooled = {**pooled, "b_simple_tokens": pooled["b_simple"], "b_simple": pooled["b_simple"] / tpe,
                  "ci": [None if c is None else c / tpe for c in pooled["ci"]], "unit": "examples"}
    return SweepAnalysis(name, config, points, fit, error, pooled, tpe, results, _coarse_readings(ok))
