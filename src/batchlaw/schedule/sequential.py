"""When a larger batch pays: the controller's two pieces of evidence, as pure maths (no torch).

**The price of a larger batch**, in examples. Growing the batch from ``B`` to ``k B`` (learning
rate by the batch rule) costs the *extra-examples fraction*

    f = examples k B needs for some progress / examples B needs for it - 1.

A branch test accepts a growth when ``f`` stays below a ``margin`` (10% by default: the allowance of
the constant-batch yardstick, McCandlish et al. 2018 eq. 2.11 frontier). The margin is a *rate*: it
prices every example spent after the growth the same way, so two growths do not compound like a
fixed loss tolerance does (Merrill et al. 2025 accept within 1% of loss at each checkpoint).

Two ways to judge a growth:

* **From the noise scale** (a model, free). With the optimal learning rate, a step at batch ``B``
  makes ``1 / (1 + B_noise / B)`` of the progress of a noiseless step (McCandlish et al. 2018,
  eq. 2.7), so the examples per unit of progress go as ``B + B_noise``: a batch at or below
  ``B_noise`` spends at most twice the minimal examples (their efficient regime), and the price
  of the growth is ``f = (k - 1) B / (B + B_noise)`` (:func:`noise_cost`). The controller grows to
  ``k B`` only while ``k B`` stays at or below the *lower end* of the windowed ``B_simple``
  interval (:func:`noise_growth_factor`). It does not hold the model to the 10% margin: the model
  is only a proxy (``B_simple`` reads the critical batch of Adam low, Merrill et al. 2025) and it
  does not price what a growth at a constant learning rate also does, lowering the noise of the
  updates (the square-root rule lowers ``lr / B``; a learning rate held at its cap does more),
  which is where measured schedules gain (docs/concepts-controller.md).
* **From branches** (a measurement). From the same state, one arm trains ``k n`` steps at ``B``
  and the other ``n`` steps at ``k B`` on *the same examples* (common random numbers); both are
  then evaluated on the same held-out data. With ``delta = L_kB - L_B`` and the large arm's
  progress ``P = L_0 - L_kB``, the large arm needs ``f ~ delta / P`` extra examples to catch up
  (the local slope of loss per example, measured on the arm itself). The test works on the pivot
  ``z = delta - margin * P``, whose mean is ``<= 0`` exactly when ``f <= margin``
  (:class:`PairedSPRT`).

**The sequential test** (Wald 1945, "Sequential tests of statistical hypotheses"). Pairs of
branches are drawn one at a time, each from fresh examples. ``H0: f = margin`` (the larger batch
costs the whole margin: ``E z = 0``) against ``H1: f = 0`` (no extra cost: ``E z = -margin E P``).
After ``n`` pairs the log-likelihood ratio of normal observations is

    Lambda_n = -(Delta / s^2) (sum z_j + n Delta / 2),   Delta = margin * mean(P),

with ``s^2`` the spread of ``z`` measured between pairs (so the test is calibrated by the noise
it sees, not by a fixed tolerance), inflated to an upper confidence bound while pairs are few.
Grow when ``Lambda_n >= log((1 - beta) / alpha)``, stay when ``Lambda_n <= log(beta / (1 - alpha))``,
and stay when ``max_pairs`` are spent without a decision. Its error rates are checked by
simulation (tests/test_controller.py): it grows in at most ``alpha`` of the cases where the
larger batch costs the margin or more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import stats

from .._validation import check_positive_float, check_positive_int, check_probability

__all__ = ["noise_cost", "noise_growth_factor", "PairedSPRT", "SPRTResult"]


def noise_cost(batch: float, k: float, b_noise: float) -> float:
    """Extra-examples fraction of growing ``batch`` to ``k * batch`` at noise scale ``b_noise``.

    ``f = (k B + B_noise) / (B + B_noise) - 1 = (k - 1) B / (B + B_noise)``: McCandlish et al.
    2018 (arXiv:1812.06162), eq. 2.7-2.11, examples per unit of progress ``~ B + B_noise``.

    Examples:
        >>> noise_cost(100, 2, 900)  # doubling at a ninth of the noise scale costs 10%
        0.1
        >>> noise_cost(100, 2, math.inf)
        0.0
    """
    b, k = check_positive_float("batch", batch), check_positive_float("k", k)
    if math.isinf(b_noise):
        return 0.0
    return (k - 1.0) * b / (b + max(float(b_noise), 0.0))


def noise_growth_factor(batch: float, b_noise_lo: float, factor: float = 2.0, max_k: float = math.inf) -> float:
    """The largest ``k = factor^j`` (``j >= 0``, ``k <= max_k``) with ``k * batch <= b_noise_lo``.

    The next batch must stay in McCandlish et al.'s efficient regime, at or below the noise scale
    (there a batch spends at most twice the minimal examples for its progress, eq. 2.11), judged
    at ``b_noise_lo``, the lower end of the noise scale's interval: the least noise the data allow.
    1 when not even one ``factor`` fits. ``max_k`` may cut the last step short (a partial growth to
    a limit): then ``k = max_k`` if ``max_k * batch <= b_noise_lo``.

    Examples:
        >>> noise_growth_factor(8, 100)
        8.0
        >>> noise_growth_factor(128, 200)
        1.0
        >>> noise_growth_factor(40, 100, max_k=1.6)  # a partial growth up to a limit of 64
        1.6
    """
    b = check_positive_float("batch", batch)
    check_positive_float("factor", factor)
    if factor <= 1:
        raise ValueError(f"The 'factor' parameter must be > 1. Got {factor!r} instead.")
    k = 1.0
    while k * factor <= max_k * (1 + 1e-12) and k * factor * b <= b_noise_lo:
        k *= factor
    if k < max_k < k * factor and max_k * b <= b_noise_lo:
        k = float(max_k)
    return k


@dataclass(frozen=True)
class SPRTResult:
    """Where the sequential test stands after some pairs.

    Attributes:
        decision: ``"grow"`` (``H1`` accepted: the larger batch costs less than the margin),
            ``"stay"`` (``H0`` accepted, or no decision within ``max_pairs``, or no progress to
            measure a cost against) or ``"continue"`` (draw another pair).
        reason: why, in words.
        pairs: pairs seen.
        cost: the measured extra-examples fraction ``mean(delta) / mean(P)`` (``None`` without
            progress).
        llr: the log-likelihood ratio ``Lambda_n`` (``None`` before ``min_pairs``).
        upper, lower: the thresholds ``log((1 - beta) / alpha)`` and ``log(beta / (1 - alpha))``.
        spread: the standard deviation of ``z`` used (after inflation; ``None`` before ``min_pairs``).
        mean_delta, mean_progress: means of ``delta = L_kB - L_B`` and ``P = L_0 - L_kB``.
    """

    decision: str
    reason: str
    pairs: int
    cost: float | None
    llr: float | None
    upper: float
    lower: float
    spread: float | None
    mean_delta: float
    mean_progress: float

    def to_dict(self) -> dict:
        return asdict(self)


class PairedSPRT:
    """Wald's sequential probability ratio test on paired branch losses (module docstring).

    Args:
        margin: the extra-examples fraction the larger batch may cost (``H0`` sits there).
        alpha: probability of growing when the larger batch costs the margin (or more).
        beta: probability of staying when it costs nothing (``1 - beta`` is the power when
            ``max_pairs`` allows; truncation lowers it).
        min_pairs: pairs before the first decision (the spread needs at least 2).
        max_pairs: the test stays when it has not decided after this many pairs.
        spread_confidence: the spread of ``z`` is the upper end of its one-sided interval at
            this level (chi-square on ``n - 1`` degrees of freedom), so a spread that looks
            small by chance in few pairs does not make the test overconfident.

    Examples:
        >>> t = PairedSPRT(margin=0.1)
        >>> for delta, progress in [(0.000, 0.10), (-0.001, 0.11), (0.001, 0.09), (0.000, 0.10)]:
        ...     r = t.update(delta, progress)
        ...     if r.decision != "continue":
        ...         break
        >>> r.decision, r.pairs
        ('grow', 3)
    """

    def __init__(self, *, margin: float = 0.1, alpha: float = 0.05, beta: float = 0.2, min_pairs: int = 3,
                 max_pairs: int = 8, spread_confidence: float = 0.8) -> None:
        self.margin = check_positive_float("margin", margin)
        self.alpha = check_probability("alpha", alpha)
        self.beta = check_probability("beta", beta)
        self.min_pairs = check_positive_int("min_pairs", min_pairs, minimum=2)
        self.max_pairs = check_positive_int("max_pairs", max_pairs)
        if self.max_pairs < self.min_pairs:
            raise ValueError(f"The 'max_pairs' parameter ({max_pairs}) must be >= 'min_pairs' ({min_pairs}).")
        self.spread_confidence = check_probability("spread_confidence", spread_confidence, open_low=False)
        # chi-square quantiles for the spread's upper bound, by degrees of freedom n - 1
        self._chi2 = [math.nan] + [float(stats.chi2.ppf(1.0 - self.spread_confidence, df))
                                   for df in range(1, self.max_pairs)]
        self.upper = math.log((1.0 - self.beta) / self.alpha)
        self.lower = math.log(self.beta / (1.0 - self.alpha))
        self.deltas: list[float] = []
        self.progress: list[float] = []

    def update(self, delta: float, progress: float) -> SPRTResult:
        """Add one pair: ``delta = L_kB - L_B`` and the large arm's progress ``P = L_0 - L_kB``.

        Raises:
            ValueError: a non-finite value (a diverged branch: decide ``stay`` before calling).
        """
        for name, v in (("delta", delta), ("progress", progress)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"The '{name}' parameter must be a finite number. Got {v!r} instead.")
        self.deltas.append(float(delta))
        self.progress.append(float(progress))
        return self.result()

    def result(self) -> SPRTResult:
        """The test's state after the pairs seen so far."""
        n = len(self.deltas)
        md = sum(self.deltas) / n if n else 0.0
        mp = sum(self.progress) / n if n else 0.0
        cost = md / mp if mp > 0 else None
        common = dict(pairs=n, cost=cost, upper=self.upper, lower=self.lower, mean_delta=md, mean_progress=mp)
        if n < self.min_pairs:
            return SPRTResult("continue", f"{n} of at least {self.min_pairs} pairs", llr=None, spread=None, **common)
        if mp <= 0:
            return SPRTResult("stay", "the branches made no progress over their window: no cost to measure",
                              llr=None, spread=None, **common)
        z = [d - self.margin * p for d, p in zip(self.deltas, self.progress)]
        zbar = sum(z) / n
        var = sum((x - zbar) ** 2 for x in z) / (n - 1)
        # upper confidence bound of the variance: (n - 1) s^2 / chi2_{1 - c}(n - 1)
        var_up = (n - 1) * var / self._chi2[n - 1]
        delta_h1 = self.margin * mp
        floor = (1e-12 * max(abs(delta_h1), 1e-300)) ** 2  # identical pairs: decide from the means alone
        llr = -(delta_h1 / max(var_up, floor)) * (sum(z) + n * delta_h1 / 2.0)
        spread = math.sqrt(var_up)
        common.update(llr=llr, spread=spread)
        if llr >= self.upper:
            return SPRTResult("grow", f"the likelihood ratio favours a cost of 0 over the margin "
                                      f"{self.margin:.0%} (log LR {llr:.2f} >= {self.upper:.2f})", **common)
        if llr <= self.lower:
            return SPRTResult("stay", f"the likelihood ratio favours a cost of the margin {self.margin:.0%} or more "
                                      f"(log LR {llr:.2f} <= {self.lower:.2f})", **common)
        if n >= self.max_pairs:
            return SPRTResult("stay", f"no decision within {self.max_pairs} pairs (log LR {llr:.2f} between "
                                      f"{self.lower:.2f} and {self.upper:.2f})", **common)
        return SPRTResult("continue", f"log LR {llr:.2f} between {self.lower:.2f} and {self.upper:.2f}", **common)
