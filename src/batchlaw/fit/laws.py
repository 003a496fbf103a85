"""The scaling laws (see the Concepts page 'Scaling laws' in the docs) on the shared engine (:mod:`batchlaw.fit.engine`).

- :func:`fit_power_law`: ``y = c * x_1^a_1 * ... * x_k^a_k`` (hyperparameter laws, CBS vs D or N).
- :func:`fit_saturating`: ``y = y_inf + a * x^(-alpha)`` (loss vs compute, Kaplan et al. 2020;
  learning curves).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import softmax

from ..errors import InsufficientDataError
from .engine import Law, LawFit, fit_law, validate_xy

__all__ = ["power_law", "fit_power_law", "saturating_law", "fit_saturating", "t_intervals", "check_identifiable",
           "MIN_LOG_SPREAD", "MAX_CONDITION"]

#: An input whose values span less than this in log space (1%: ``max / min < 1.01``) is constant
#: to the fit: its exponent trades off against the coefficient and the data cannot say how.
MIN_LOG_SPREAD = 0.01
#: An input design whose log columns, centred and scaled to unit variance, have a condition number
#: above this is collinear: one column follows the others to within 1% of its spread (two columns
#: with correlation 0.9998), so only a combination of their exponents is determined.
MAX_CONDITION = 100.0


def power_law(k: int) -> Law:
    """``log y = log c + sum_j a_j log x_j`` with ``k`` inputs."""

    def predict(theta, X):
        return theta[:, :1] + theta[:, 1:] @ X.T  # (m, n)

    def jac(theta, X):
        J = np.concatenate([np.ones((X.shape[0], 1)), X], axis=1)  # (n, 1 + k)
        return np.broadcast_to(J, (theta.shape[0], *J.shape))

    def report(theta):
        with np.errstate(over="ignore"):  # a resample whose log-coefficient is beyond 709: +inf, honestly
            out = {"coef": np.exp(theta[:, 0])}
        for j in range(k):
            out[f"exp_{j}"] = theta[:, 1 + j]
        return out

    return Law("power", ("log_coef", *[f"exp_{j}" for j in range(k)]), predict, jac, report, ((None, None),) * (1 + k))


def fit_power_law(y, *, inputs: dict, y_name: str = "y", delta: float = 0.1, n_boot: int = 1000,
                  confidence: float = 0.95, seed: int | None = 0) -> LawFit:
    """Fit ``y = coef * prod_j x_j^exp_j``; ``inputs`` maps names to arrays (exponents are reported
    as ``exp_<name>``). Huber ``delta`` 0.1 on log residuals (optima from grids are noisy).

    Raises:
        InsufficientDataError: too few points, or inputs the data cannot identify
            (:func:`check_identifiable`): a column that is constant, or columns that move
            together.

    Examples:
        >>> x = np.array([1e6, 1e7, 1e8, 1e9])
        >>> fit = fit_power_law(2.0 * x**0.5, inputs={"x": x}, n_boot=0)
        >>> round(fit.values["coef"], 6), round(fit.values["exp_x"], 6)
        (2.0, 0.5)
    """
    X, logy = validate_xy(inputs, y, y_name=y_name, min_points=len(inputs) + 2)
    check_identifiable(X, list(inputs))
    law = power_law(len(inputs))
    A = np.column_stack([np.ones(len(logy)), X])
    start = np.linalg.lstsq(A, logy, rcond=None)[0]  # ordinary least squares in log space
    fit = fit_law(law, X, logy, starts=start[None, :], delta=delta, n_boot=n_boot, confidence=confidence,
                  seed=seed, keep_starts=1)
    names = list(inputs)

    def rename(d):
        return {("coef" if k == "coef" else f"exp_{names[int(k[4:])]}"): v for k, v in d.items()}

    return LawFit(fit.law, rename(fit.values), rename(fit.ci), fit.theta, fit.n_points, fit.rmse_log, fit.r2_log,
                  fit.confidence, fit.n_boot, fit.extrapolation, rename(fit.boot))


def check_identifiable(X: np.ndarray, names: list[str]) -> None:
    """Refuse, by name, inputs of ``log y = log c + sum_j a_j log x_j`` that the data cannot identify.

    Two ways the exponents are not determined, however many points there are:

    - a column that (almost) does not vary: its spread in log space is below
      :data:`MIN_LOG_SPREAD`, so ``a_j log x_j`` is a constant the coefficient absorbs;
    - columns that move together: the log columns, centred and scaled to unit variance, have a
      condition number above :data:`MAX_CONDITION` (the singular value decomposition's smallest
      direction names the columns involved), so only a combination of their exponents is fixed
      (e.g. tokens = 20 x params for every run: ``a_D + a_N`` is known, not each).

    A fit would still return numbers for both, with narrow bootstrap intervals (the resampled rows
    keep the same degeneracy): a confident wrong answer.

    Args:
        X: ``(n, k)`` logs of the inputs.
        names: the inputs' names, in column order.

    Raises:
        InsufficientDataError: naming the constant column, or the collinear columns and the
            relation between them.

    Examples:
        >>> X = np.log(np.array([[1e9, 1e8], [1e10, 1e8], [1e11, 1e8]]))
        >>> try:
        ...     check_identifiable(X, ["tokens", "params"])
        ... except InsufficientDataError as err:
        ...     print(str(err)[:43])
        Column 'params' is constant (1e+08 in every
    """
    for j, name in enumerate(names):
        col = X[:, j]
        spread = float(col.max() - col.min())
        if spread < MIN_LOG_SPREAD:
            value = (f"{math.exp(col[0]):.4g} in every row" if spread == 0
                     else f"from {math.exp(col.min()):.4g} to {math.exp(col.max()):.4g}, a ratio of {math.exp(spread):.4g}")
            raise InsufficientDataError(
                f"Column {name!r} is constant ({value}): its exponent cannot be told from the coefficient. Leave "
                f"it out of the inputs, or add rows where it varies (by more than {MIN_LOG_SPREAD:.0%}).")
    if len(names) < 2:
        return
    Z = X - X.mean(axis=0)
    Z = Z / np.sqrt((Z**2).mean(axis=0))
    _, sv, vt = np.linalg.svd(Z, full_matrices=False)
    cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf
    if cond <= MAX_CONDITION:
        return
    v = vt[-1]
    involved = [j for j in np.argsort(-np.abs(v)) if abs(v[j]) > 0.1 * np.abs(v).max()]
    lead, rest = involved[0], sorted(involved[1:])
    # the relation among them, as a power law: x_lead = c * prod x_rest^b
    A = np.column_stack([np.ones(X.shape[0]), X[:, rest]])
    coef = np.linalg.lstsq(A, X[:, lead], rcond=None)[0]
    rel = f"{math.exp(coef[0]):.3g}" + "".join(f" * {names[j]}^{b:.3g}" for j, b in zip(rest, coef[1:]))
    scatter = float(np.sqrt(np.mean((X[:, lead] - A @ coef) ** 2)))  # rms, in log space
    how = "in every row" if scatter < 5e-4 else f"with {scatter:.1%} rms scatter"
    cols = " and ".join(", ".join(repr(names[j]) for j in sorted(involved)).rsplit(", ", 1))
    raise InsufficientDataError(
        f"Columns {cols} move together: {names[lead]} = {rel} {how} (the condition number of their "
        f"standardised logs is {cond:.3g}, above {MAX_CONDITION:g}). The data determine only a combination of their "
        "exponents, not each. Fit one of them, or add rows where they vary independently.")


def saturating_law() -> Law:
    """``log y = LSE(e, a - alpha log x)``, i.e. ``y = exp(e) + exp(a) x^(-alpha)``."""

    def terms(theta, X):
        return np.stack([np.broadcast_to(theta[:, :1], (theta.shape[0], X.shape[0])),
                         theta[:, 1:2] - theta[:, 2:3] * X[:, 0][None, :]], axis=-1)  # (m, n, 2)

    def predict(theta, X):
        return np.logaddexp.reduce(terms(theta, X), axis=-1)

    def jac(theta, X):
        s = softmax(terms(theta, X), axis=-1)
        return np.stack([s[..., 0], s[..., 1], -s[..., 1] * X[:, 0][None, :]], axis=-1)

    def report(theta):
        return {"y_inf": np.exp(theta[:, 0]), "a": np.exp(theta[:, 1]), "alpha": theta[:, 2]}

    return Law("saturating", ("e", "a", "alpha"), predict, jac, report, ((None, None), (None, None), (0.0, 5.0)))


def fit_saturating(x, y, *, x_name: str = "x", y_name: str = "y", delta: float = 1e-3, n_boot: int = 1000,
                   confidence: float = 0.95, seed: int | None = 0, extrapolation: bool = True) -> LawFit:
    """Fit ``y = y_inf + a x^(-alpha)`` with a grid of starts and bootstrap intervals."""
    X, logy = validate_xy({x_name: x}, y, y_name=y_name, min_points=5)
    ymin = float(np.exp(logy.min()))
    lx = X[:, 0]
    starts = [(np.log(ymin * f), np.log(ymin) + al * lx.mean() + da, al)
              for f in (0.2, 0.5, 0.8, 0.95) for al in (0.05, 0.2, 0.5, 1.0, 2.0) for da in (-2.0, 0.0, 2.0)]
    return fit_law(saturating_law(), X, logy, starts=np.array(starts), delta=delta, n_boot=n_boot,
                   confidence=confidence, seed=seed, extrapolation_col=0 if extrapolation else None)


def t_intervals(inputs: dict, y, confidence: float) -> dict:
    """Classical least-squares t intervals (``n - p`` degrees of freedom) of ``log y = log c +
    sum_j a_j log x_j``, keyed as :func:`fit_power_law` keys its intervals (``{}`` without degrees
    of freedom). With a handful of points a bootstrap percentile interval runs narrow; callers
    take the union of both."""
    X = np.column_stack([np.ones(len(y))] + [np.log(np.asarray(v, float)) for v in inputs.values()])
    ly = np.log(np.asarray(y, float))
    beta, *_ = np.linalg.lstsq(X, ly, rcond=None)
    dof = len(ly) - X.shape[1]
    if dof < 1:
        return {}
    s2 = float(((ly - X @ beta) ** 2).sum()) / dof
    se = np.sqrt(np.diag(s2 * np.linalg.pinv(X.T @ X)))
    t = stats.t.ppf(0.5 + confidence / 2, dof)
    out = {"coef": (math.exp(beta[0] - t * se[0]), math.exp(beta[0] + t * se[0]))}
    for j, k in enumerate(inputs, start=1):
        out[f"exp_{k}"] = (beta[j] - t * se[j], beta[j] + t * se[j])
    return out
