"""From a sweep's trials to its answer: steps vs batch, the fitted law, and the noise scale beside it.

For each batch size the best learning rate's steps to target are taken (the median over seeds
of each seed's best), :func:`batchlaw.fit.fit_steps_law` fits ``S(B) = S_min (1 + B_crit/B)``
to them, and the run-averaged ``B_simple`` measured by the monitor in those best trials is
pooled (ratio of the mean ``tr(Sigma)`` to the mean ``|G|^2`` over the trials, with a Fieller
interval treating each trial as one batch mean), so the direct measurement and the noise-scale
prediction can be compared (McCandlish et al. 2018: ``B_crit`` is roughly ``B_noise`` averaged
over the run).

Censored seeds: a seed that reached the target at no learning rate within the budget is
censored, not missing: its steps exceed the last step read (the budget). It counts as ``+inf``
in the median over seeds (science: "Censored runs"); dropping it would bias ``S(B)`` low exactly
where the batch size struggles (reached in 100 and 120 steps plus one seed over the budget: the
median is 120, not 110). Where a censored seed takes part in the median (half the seeds or
more), the median is itself censored: the batch gets ``steps_lower_bound``, the median with each
censored seed at its bound, and enters the fit as a lower bound. The learning rate reported is
that of the seed the median rule picks (the upper middle for an even count), in the same order.

The analysis says what it cannot do: a target that no batch size reached names the best loss
seen and where; a steps-to-target reading under 3 evaluation intervals is flagged as coarse;
train-target trials stored before the lag-free reading are left out, and said so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._format import fmt_count, fmt_num
from ..errors import InsufficientDataError
from ..fit import StepsFit, fit_steps_law
from ..noise.estimators import fieller_interval
from .trial import trial_lower_bound

__all__ = ["SweepAnalysis", "batch_summary", "censored_median", "censored_notes", "median_over_seeds",
           "seed_lower_bound", "trial_lower_bound", "analyze_sweep", "pooled_b_simple", "steps_text", "COARSE_INTERVALS"]

#: a steps-to-target reading under this many evaluation intervals is flagged as coarse.
COARSE_INTERVALS = 3


def seed_lower_bound(bounds: list[float | None]) -> float | None:
    """A lower bound on the steps of a seed that reached the target at no learning rate, from its
    trials' bounds: the fewest (the seed's steps are those of its best learning rate); ``None`` when
    any trial's bound is unknown."""
    return None if any(b is None for b in bounds) else float(min(bounds))


def censored_median(values: list[float], censored: list[bool]) -> tuple[float, bool]:
    """Median of per-seed steps where censored seeds count as ``+inf``.

    A censored value is a lower bound (the seed's steps exceed it); every censored value is taken
    to exceed every measured one (they share the budget). Returns ``(median, is_censored)``: when
    a censored value takes part in the median, the median is only a lower bound, computed with
    each censored seed at its bound.

    Examples:
        >>> censored_median([100, 120, 300], [False, False, True])  # the third seed hit the budget
        (120.0, False)
        >>> censored_median([100, 300], [False, True])
        (200.0, True)
    """
    order = sorted(zip(censored, values))  # measured first (False < True), then by value
    n = len(order)
    mid = [order[(n - 1) // 2], order[n // 2]]
    return float(sum(v for _, v in mid) / 2), any(c for c, _ in mid)


def median_over_seeds(seeds: list[tuple[float | None, float | None, object]]) -> dict:
    """One batch size's point from its seeds, by the module docstring's rule.

    Used by the sweep's analysis and by ``batchlaw fit cbs`` on a CSV, so both read the same trials
    the same way.

    Args:
        seeds: one ``(steps, bound, best)`` per seed: ``steps`` its fewest steps to target, or
            ``None`` when it reached the target at no learning rate (censored); ``bound`` then a
            lower bound on its steps (``None``: unknown); ``best`` what identifies its best trial.

    Returns:
        ``steps_to_target`` (``None`` when the median is censored), ``censored``,
        ``steps_lower_bound`` (the censored median's bound; ``None`` when unknown, as a censored
        seed whose bound is unknown takes part), ``n_seeds``, ``n_censored``, ``picked`` (the
        ``best`` of the seed the median picks, the upper middle for an even count; when that seed
        is censored, of the slowest measured seed below it; ``None`` if none) and ``measured``
        (each measured seed's ``best``, fewest steps first).
    """
    per_seed = sorted(((s is None, s if s is not None else (math.inf if b is None else b), best)
                       for s, b, best in seeds), key=lambda x: (x[0], x[1]))
    median, censored = censored_median([v for _, v, _ in per_seed], [c for c, _, _ in per_seed])
    if censored and any(s is None and b is None for s, b, _ in seeds):
        median = None  # a censored seed of unknown bound takes part: the median has no known bound
    n = len(per_seed)
    picked = [best for c, _, best in per_seed[: n // 2 + 1] if not c]
    return {"steps_to_target": None if censored else median, "censored": censored,
            "steps_lower_bound": median if censored else None, "n_seeds": n,
            "n_censored": sum(c for c, _, _ in per_seed), "picked": picked[-1] if picked else None,
            "measured": [best for c, _, best in per_seed if not c]}


def batch_summary(results: list[dict]) -> list[dict]:
    """Best learning rate per batch size, with censored seeds counted as ``+inf`` (module docstring).

    Returns one dict per batch size (ascending) with ``batch_size``, ``steps_to_target`` (median
    over seeds of each seed's fewest; ``None`` when that median is censored), ``censored``,
    ``steps_lower_bound`` (the censored median's bound, else ``None``), ``n_seeds``,
    ``n_censored`` (seeds that reached the target at no learning rate), ``best_lr`` (that of
    the seed the median picks; when it is censored, of the slowest measured seed below it),
    ``lrs_tried``, ``lr_at_edge`` (``"low"``/``"high"`` when the best was the smallest/largest
    tried) and ``best_trials`` (each measured seed's best trial, fewest steps first).
    """
    by_b: dict[int, dict[int, list[dict]]] = {}
    for r in results:
        s = r["spec"]
        by_b.setdefault(s["batch_size"], {}).setdefault(s["seed"], []).append(r)
    out = []
    for b, seeds in sorted(by_b.items()):
        tried = sorted({t["spec"]["lr"] for ts in seeds.values() for t in ts})
        per_seed = []  # (steps or None, bound, best trial or None)
        for trials in seeds.values():
            reached = [t for t in trials if t["status"] == "reached"]
            if reached:
                best = min(reached, key=lambda t: t["steps_to_target"])
                per_seed.append((float(best["steps_to_target"]), None, best))
            else:
                per_seed.append((None, seed_lower_bound([trial_lower_bound(t) for t in trials]), None))
        m = median_over_seeds(per_seed)
        best_lr = m["picked"]["spec"]["lr"] if m["picked"] is not None else None
        out.append({
            "batch_size": b, "steps_to_target": m["steps_to_target"], "censored": m["censored"],
            "steps_lower_bound": m["steps_lower_bound"], "n_seeds": m["n_seeds"], "n_censored": m["n_censored"],
            "best_lr": best_lr, "lrs_tried": tried,
            "lr_at_edge": None if best_lr is None else "low" if best_lr == tried[0] else "high" if best_lr == tried[-1]
            else None,
            "best_trials": m["measured"]})
    return out


def steps_text(p: dict) -> tuple[str, str, str]:
    """Steps and examples to target of a sweep point, and a note on its censored seeds.

    Examples:
        >>> steps_text({"batch_size": 8, "steps_to_target": None, "steps_lower_bound": 3000.0,
        ...             "n_censored": 2, "n_seeds": 3})
        ('> 3,000', '> 24,000', 'censored: 2 of 3 seeds did not reach the target within the budget')
    """
    s, bound, b = p["steps_to_target"], p.get("steps_lower_bound"), p["batch_size"]
    k, n = p.get("n_censored", 0), p.get("n_seeds", 1)
    seeds = f"{k} of {n} seeds" if n > 1 else "the seed"
    if s is not None:
        return fmt_count(s), fmt_count(s * b), f"{seeds} did not reach the target within the budget" if k else ""
    if bound is not None:
        return (f"> {fmt_count(bound)}", f"> {fmt_count(bound * b)}",
                f"censored: {seeds} did not reach the target within the budget")
    return "not reached", "-", ""


def _lagged_train_trials(results: list[dict]) -> list[dict]:
    """Train-target trials read by the lagged EMA of batchlaw before the centred window."""
    return [r for r in results if r["spec"].get("target_on") == "train" and r["spec"].get("train_window") is None]


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


def censored_notes(points: list[dict]) -> list[str]:
    """One line per batch size with censored seeds (points as :func:`batch_summary` returns them):
    counted above the budget in the median, or a median that is only a lower bound (or of no
    known bound, so left out of the fit)."""
    out = []
    for p in points:
        k, n = p["n_censored"], p["n_seeds"]
        if not k:
            continue
        seeds = f"{k} of {n} seeds" if n > 1 else "the seed"
        if p["censored"] and p["steps_lower_bound"] is None:
            out.append(f"batch {p['batch_size']}: {seeds} reached the target at no learning rate within "
                       "the budget, so the median over seeds is censored, and no bound on it is known (the budget "
                       "is not recorded): left out of the fit.")
        elif p["censored"]:
            out.append(f"batch {p['batch_size']}: {seeds} reached the target at no learning rate within the budget "
                       f"(out of steps or diverged), so the median over seeds is only a lower bound "
                       f"(> {fmt_num(p['steps_lower_bound'])} steps); it enters the fit as a lower bound.")
        else:
            out.append(f"batch {p['batch_size']}: {seeds} reached the target at no learning rate within the "
                       "budget (out of steps or diverged); counted as above the budget in the median over seeds.")
    return out


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
    lagged = _lagged_train_trials(results)
    if lagged:
        results = [r for r in results if r not in lagged]
    points = batch_summary(results)
    ok = [p for p in points if p["steps_to_target"] is not None]
    fitted = [p for p in points if p["steps_to_target"] is not None or p["steps_lower_bound"] is not None]
    missing = [p["batch_size"] for p in points if p["n_censored"] == p["n_seeds"]]
    fit, error = None, ""
    if not results:
        error = "the sweep has no finished trial yet: run (or resume) it with 'batchlaw sweep'."
    elif not ok:
        error = (f"target {config.get('target_loss', math.nan):g} not reached by any batch size within the budget; "
                 + _not_reached(config, results, missing))
    else:
        try:
            fit = fit_steps_law([p["batch_size"] for p in fitted],
                                [p["steps_to_target"] if not p["censored"] else p["steps_lower_bound"] for p in fitted],
                                censored=[p["censored"] for p in fitted],
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
    warnings = censored_notes(points) + _coarse_readings(ok)
    if lagged:
        warnings.append(f"{len(lagged)} train-target trials were read with the lagged training-loss average of "
                        "earlier batchlaw versions (about 10 steps late) and are left out; run the sweep again to "
                        "measure them with the centred window.")
    return SweepAnalysis(name, config, points, fit, error, pooled, tpe, results, warnings)
