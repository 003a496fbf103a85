"""Optimal learning rate and batch size from LR x batch grids, and their power laws in N, D, C.

Per (N, D) group of runs the optimum is found without extrapolation (:func:`find_optima`): a
lopsided bowl in ``(log lr, log B)`` fitted to the runs around the lowest loss (variable
projection), every curvature positive, its minimum kept inside those runs; at a grid edge the
edge value is kept and flagged. Real loss surfaces are lopsided (steep above the optimal LR,
flat below, diverged runs), so one quadratic over the whole grid puts its vertex far from the
runs. The optima are then fitted as power laws with the shared engine (log-space Huber,
bootstrap over groups, union with the least-squares t interval): ``lr_opt = c N^a D^b`` and ``B_opt = c D^b`` (Step Law, Li et al. 2025,
arXiv:2503.04715, fitted this way), and both against compute ``C = 6 N D`` (DeepSeek LLM,
arXiv:2401.02954). Published laws for comparison: :data:`STEP_LAW`, :data:`DEEPSEEK`.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InsufficientDataError
from .engine import validate_xy
from .laws import fit_power_law, t_intervals

#: Ways to find a group's optimum (see :func:`find_optima`).
METHODS = ("local", "quadratic", "raw", "global")

__all__ = ["METHODS", "find_optima", "fit_hparam_laws", "STEP_LAW", "DEEPSEEK", "step_law", "deepseek_hparams"]

#: Step Law (Li et al. 2025): lr = 1.79 N^-0.713 D^0.307, B = 0.58 D^0.571 (B and D in tokens,
#: N non-embedding parameters).
STEP_LAW = {"lr_coef": 1.79, "lr_exp_params": -0.713, "lr_exp_tokens": 0.307, "batch_coef": 0.58, "batch_exp_tokens": 0.571}
#: DeepSeek LLM (2024): lr = 0.3118 C^-0.125, B = 0.2920 C^0.3271 (B in tokens; C in their
#: non-embedding FLOP convention).
DEEPSEEK = {"lr_coef": 0.3118, "lr_exp": -0.125, "batch_coef": 0.2920, "batch_exp": 0.3271}


def step_law(params: float, tokens: float) -> dict:
    """Step Law's optimal learning rate and batch size (tokens)."""
    s = STEP_LAW
    return {"lr": s["lr_coef"] * params ** s["lr_exp_params"] * tokens ** s["lr_exp_tokens"],
            "batch_tokens": s["batch_coef"] * tokens ** s["batch_exp_tokens"]}


def deepseek_hparams(compute: float) -> dict:
    """DeepSeek LLM's optimal learning rate and batch size (tokens) at compute ``C``.

    Examples:
        >>> h = deepseek_hparams(1e20)
        >>> round(h["lr"], 6), round(h["batch_tokens"] / 1e6, 3)
        (0.000986, 1.017)
    """
    d = DEEPSEEK
    return {"lr": d["lr_coef"] * compute ** d["lr_exp"], "batch_tokens": d["batch_coef"] * compute ** d["batch_exp"]}


def _global_quadratic(lr, batch, loss):
    """The vertex of one quadratic in ``(log lr, log B)`` over the whole group, if it is a bowl with
    its vertex inside the grid (else ``None``). Biased on lopsided surfaces: kept for comparison."""
    x, y = np.log(lr), np.log(batch)
    if np.unique(x).size < 3 or np.unique(y).size < 3:
        return None
    A = np.column_stack([np.ones_like(x), x, y, x * x, y * y, x * y])
    c = np.linalg.lstsq(A, loss, rcond=None)[0]
    H = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    if np.any(np.linalg.eigvalsh(H) <= 0):
        return None
    vx, vy = np.linalg.solve(H, -c[1:3])
    if not (x.min() <= vx <= x.max() and y.min() <= vy <= y.max()):
        return None
    return vx, vy, float(c @ [1, vx, vy, vx * vx, vy * vy, vx * vy])


def _local(x, y, loss, window: int = 1):
    """Local optimum of one group: a quadratic over the runs within ``window`` grid steps of the
    lowest loss (in each of ``log lr``, ``log B``), checked to be a bowl, its vertex kept inside the
    window. An axis on which the lowest run sits at the grid's edge is not extrapolated: the
    optimum stays at the edge value (reported in ``edge``).

    Args:
        x: log learning rates of the finite runs.
        y: their log batch sizes.
        loss: their losses.
        window: grid steps on each side of the lowest run.

    Returns:
        ``(vx, vy, loss, method, edge)``: ``method`` is ``"local"`` or ``"raw"`` (no bowl, too few
        runs); ``edge`` maps ``"lr"``/``"batch"`` to ``"low"``, ``"high"`` or ``None``.
    """
    i = int(np.argmin(loss))
    ux, uy = np.unique(x), np.unique(y)
    ix, iy = np.searchsorted(ux, x), np.searchsorted(uy, y)
    bx, by = ix[i], iy[i]
    edge = {"lr": "low" if bx == 0 and ux.size > 1 else "high" if bx == ux.size - 1 and ux.size > 1 else None,
            "batch": "low" if by == 0 and uy.size > 1 else "high" if by == uy.size - 1 and uy.size > 1 else None}
    if ux.size == 1:
        edge["lr"] = "single"
    if uy.size == 1:
        edge["batch"] = "single"
    raw = (float(x[i]), float(y[i]), float(loss[i]), "raw", edge)
    sel = (np.abs(ix - bx) <= window) & (np.abs(iy - by) <= window)
    dx, dy, L = x[sel] - x[i], y[sel] - y[i], loss[sel]
    free_x = edge["lr"] is None and np.unique(dx).size >= 3
    free_y = edge["batch"] is None and np.unique(dy).size >= 3
    if not (free_x or free_y):
        return raw
    cols = [np.ones_like(dx)]
    names = ["1"]
    for free, d, nm in ((free_x, dx, "x"), (free_y, dy, "y")):
        if free:
            cols += [d, d * d]
            names += [nm, nm + nm]
        elif np.unique(d).size >= 2:
            cols.append(d)
            names.append(nm)
    if free_x and free_y:
        cols.append(dx * dy)
        names.append("xy")
    A = np.column_stack(cols)
    if L.size <= A.shape[1] or np.linalg.matrix_rank(A) < A.shape[1]:
        return raw
    c = dict(zip(names, np.linalg.lstsq(A, L, rcond=None)[0]))
    if free_x and free_y:
        H = np.array([[2 * c["xx"], c["xy"]], [c["xy"], 2 * c["yy"]]])
        if np.any(np.linalg.eigvalsh(H) <= 0):
            return raw
        vx, vy = np.linalg.solve(H, [-c["x"], -c["y"]])
    elif free_x:
        if c["xx"] <= 0:
            return raw
        vx, vy = -c["x"] / (2 * c["xx"]), 0.0
    else:
        if c["yy"] <= 0:
            return raw
        vx, vy = 0.0, -c["y"] / (2 * c["yy"])
    vx = float(np.clip(vx, dx.min(), dx.max()))  # never beyond the runs of the window
    vy = float(np.clip(vy, dy.min(), dy.max()))
    feats = {"1": 1.0, "x": vx, "xx": vx * vx, "y": vy, "yy": vy * vy, "xy": vx * vy}
    lv = float(sum(c[k] * feats[k] for k in names))
    return float(x[i] + vx), float(y[i] + vy), lv, "local", edge


#: Couplings ``r`` tried by :func:`_lopsided` (the best log LR moves by ``r`` per unit of log batch).
_COUPLINGS = np.linspace(-0.25, 1.0, 11)


def _lopsided(x, y, loss, window: int = 2, grid: int = 15):
    """Local optimum from a lopsided, coupled bowl fitted to the runs within ``window`` grid steps
    (in each of ``x = log lr``, ``y = log B``) of the lowest loss::

        L = c + k_lo u_-^2 + k_hi u_+^2 + b_lo v_-^2 + b_hi v_+^2,   u = (x - x0) - r (y - y0),  v = y - y0

    (``u_-``, ``u_+``: negative and positive parts). The loss rises at different rates on the two
    sides of the optimum in LR and in batch, and the best LR moves with the batch (``r``). An
    axis with only 3 values in the window gets one curvature for both sides (4 unknowns do not
    fit 3 values). For
    fixed ``(x0, y0, r)`` the law is linear in the rest (variable projection, Golub and Pereyra
    1973): those are solved by least squares on a grid of ``(x0, y0)`` spanning the window (never
    beyond it) and of ``r``, every curvature the runs can see required positive; the best cell is
    refined on a finer grid. An axis whose lowest run sits at the grid's edge keeps that edge
    value. Falls back to :func:`_local` when the window holds fewer than 8 runs.
    """
    i = int(np.argmin(loss))
    ux, uy = np.unique(x), np.unique(y)
    ix, iy = np.searchsorted(ux, x), np.searchsorted(uy, y)
    edge = _local(x, y, loss)[4]
    sel = (np.abs(ix - ix[i]) <= window) & (np.abs(iy - iy[i]) <= window)
    xs, ys, L = x[sel], y[sel], loss[sel]
    free_x = edge["lr"] is None and np.unique(xs).size >= 3
    free_y = edge["batch"] is None and np.unique(ys).size >= 3
    if not (free_x or free_y) or L.size < 8:
        return _local(x, y, loss)
    span_x = (xs.min(), xs.max()) if free_x else (x[i], x[i])
    span_y = (ys.min(), ys.max()) if free_y else (y[i], y[i])
    couplings = _COUPLINGS if np.unique(ys).size >= 2 else np.zeros(1)
    # one side's curvature needs two values on that side: with 3 values an axis gets one curvature
    sym_x, sym_y = np.unique(xs).size < 4, np.unique(ys).size < 4

    def solve(gx, gy, gr):
        X0, Y0, R = (a.ravel() for a in np.meshgrid(gx, gy, gr, indexing="ij"))
        v = ys[None, :] - Y0[:, None]
        u = xs[None, :] - X0[:, None] - R[:, None] * v
        cols = [np.ones_like(u)]
        for d, sym in ((u, sym_x), (v, sym_y)):
            cols += [d**2] if sym else [np.minimum(d, 0) ** 2, np.maximum(d, 0) ** 2]
        A = np.stack(cols, axis=-1)  # (g, n, p)
        q = A.shape[-1]
        At = A.transpose(0, 2, 1)
        coef = np.linalg.solve(At @ A + 1e-10 * np.eye(q), (At @ L)[..., None])[..., 0]
        sse = (((A @ coef[..., None])[..., 0] - L) ** 2).sum(1)
        seen = np.abs(A[..., 1:]).sum(1) > 1e-12  # curvatures the runs can see
        sse = np.where(np.all((coef[:, 1:] > 0) | ~seen, axis=1), sse, np.inf)
        j = int(np.argmin(sse))
        return X0[j], Y0[j], R[j], float(coef[j, 0]), sse[j]

    gx = np.linspace(*span_x, grid if free_x else 1)
    gy = np.linspace(*span_y, grid if free_y else 1)
    vx, vy, r, lv, sse = solve(gx, gy, couplings)
    if not np.isfinite(sse):
        return _local(x, y, loss)
    hx = gx[1] - gx[0] if free_x else 0.0
    hy = gy[1] - gy[0] if free_y else 0.0
    hr = couplings[1] - couplings[0] if couplings.size > 1 else 0.0
    fine = solve(np.clip(np.linspace(vx - hx, vx + hx, 7), *span_x), np.clip(np.linspace(vy - hy, vy + hy, 7), *span_y),
                 np.linspace(r - hr, r + hr, 5))
    if fine[4] <= sse:
        vx, vy, r, lv, sse = fine
    return float(vx), float(vy), lv, "local", edge


def _group_optimum(x, y, loss, method):
    if method == "raw":
        i = int(np.argmin(loss))
        return float(x[i]), float(y[i]), float(loss[i]), "raw"
    if method == "global":
        g = _global_quadratic(np.exp(x), np.exp(y), loss)
        if g is None:
            i = int(np.argmin(loss))
            return float(x[i]), float(y[i]), float(loss[i]), "raw"
        return g[0], g[1], g[2], "global"
    if method == "quadratic":
        vx, vy, lv, m, _ = _local(x, y, loss)
        return vx, vy, lv, "quadratic" if m == "local" else m
    vx, vy, lv, m, _ = _lopsided(x, y, loss)
    return vx, vy, lv, m


def _edge_advice(edge: dict, lr_vals, b_vals, diverged_lrs) -> list[str]:
    msgs = []
    if edge["lr"] == "high":
        above = sorted(v for v in diverged_lrs if v > lr_vals.max())
        if above:
            msgs.append(f"the best LR is the largest that did not diverge ({lr_vals.max():.3g}; runs at {above[0]:.3g} "
                        "diverged): add learning rates between them")
        else:
            msgs.append(f"the best LR is the largest tried ({lr_vals.max():.3g}): extend the grid towards larger LR")
    elif edge["lr"] == "low":
        msgs.append(f"the best LR is the smallest tried ({lr_vals.min():.3g}): extend the grid towards smaller LR")
    if edge["batch"] == "high":
        msgs.append(f"the best batch is the largest tried ({b_vals.max():.4g}): extend the grid towards larger batches")
    elif edge["batch"] == "low":
        msgs.append(f"the best batch is the smallest tried ({b_vals.min():.4g}): extend the grid towards smaller "
                    "batches")
    return msgs


def find_optima(params, tokens, lr, batch, loss, *, method: str = "local", n_boot: int = 0,
                confidence: float = 0.95, seed: int | None = 0) -> list[dict]:
    """Optimal (lr, batch) per (params, tokens) group of an LR x batch grid, never extrapolated.

    ``method="local"`` (default): a quadratic in ``(log lr, log B)`` over the runs within one grid
    step of the lowest loss, used only if it is a bowl, its vertex kept within those runs; an
    axis whose lowest run sits at the grid's edge stays at that edge (flagged, with advice), and
    without a bowl the raw minimum is kept. ``"raw"``: the lowest run. ``"global"``: the vertex of
    one quadratic over the whole group (biased on lopsided surfaces; for comparison). Loss
    surfaces are lopsided (steep above the optimal LR, flat below; Li et al. 2025 take optima from
    the runs around the minimum for this reason).

    Diverged runs (a NaN or infinite loss) are counted per group (``n_diverged``), never fitted.

    Args:
        params: model size ``N`` of each run (finite, positive).
        tokens: training tokens ``D`` of each run.
        lr: learning rate of each run.
        batch: batch size of each run.
        loss: per run; NaN or +inf marks a diverged run.
        method: ``"local"``, ``"raw"`` or ``"global"``.
        n_boot: bootstrap resamples of each group's runs for ``lr_ci`` and ``batch_ci`` (0: none).
        confidence: interval level.
        seed: bootstrap seed.

    Returns:
        One dict per group: ``params``, ``tokens``, ``lr``, ``batch``, ``loss``, ``method``,
        ``raw`` (``{lr, batch, loss}``), ``n_runs``, ``n_diverged``, ``edge`` (``{"lr", "batch"}``:
        ``"low"``/``"high"``/``None``), ``warnings`` and, with ``n_boot``, ``lr_ci``/``batch_ci``.

    Raises:
        ValueError: non-positive or non-finite params, tokens, lr or batch; unequal lengths; an
            unknown method; a group in which every run diverged.
    """
    if method not in METHODS:
        raise ValueError(f"The 'method' parameter must be one of {', '.join(map(repr, METHODS))}. Got {method!r} "
                         "instead.")
    L = np.asarray(loss, dtype=np.float64).ravel()
    X, _ = validate_xy({"params": params, "tokens": tokens, "lr": lr, "batch": batch}, np.ones_like(L),
                       y_name="loss", min_points=3)
    N, D, LR, B = (np.asarray(v, dtype=np.float64).ravel() for v in (params, tokens, lr, batch))
    div = ~np.isfinite(L)
    if np.any(L[~div] <= 0):
        bad = np.flatnonzero(~div & (L <= 0))
        raise ValueError(f"The 'loss' values must be positive (NaN or inf mark a diverged run). Got "
                         f"{L[bad][:5].tolist()} at positions {bad[:5].tolist()}.")
    rng = np.random.default_rng(seed)
    a = (1 - confidence) / 2
    out = []
    for n, d in sorted({(p, q) for p, q in zip(N, D)}):
        grp = (N == n) & (D == d)
        ok = grp & ~div
        if not ok.any():
            raise ValueError(f"Every run of the group params={n:.3g}, tokens={d:.3g} diverged: lower the learning "
                             "rates tried.")
        x, y, lo = np.log(LR[ok]), np.log(B[ok]), L[ok]
        i = int(np.argmin(lo))
        raw = {"lr": float(LR[ok][i]), "batch": float(B[ok][i]), "loss": float(lo[i])}
        vx, vy, lv, m = _group_optimum(x, y, lo, method)
        edge = _local(x, y, lo)[4]
        row = {"params": float(n), "tokens": float(d), "n_runs": int(grp.sum()), "n_diverged": int((grp & div).sum()),
               "raw": raw, "lr": math.exp(vx), "batch": math.exp(vy), "loss": lv, "method": m, "edge": edge,
               "warnings": _edge_advice(edge, LR[ok], B[ok], LR[grp & div])}
        if n_boot:
            k = x.size
            bl, bb = np.empty(n_boot), np.empty(n_boot)
            for r in range(n_boot):
                j = rng.integers(0, k, k)
                bl[r], bb[r], _, _ = _group_optimum(x[j], y[j], lo[j], method)
            row["lr_ci"] = [float(np.exp(np.quantile(bl, a))), float(np.exp(np.quantile(bl, 1 - a)))]
            row["batch_ci"] = [float(np.exp(np.quantile(bb, a))), float(np.exp(np.quantile(bb, 1 - a)))]
        out.append(row)
    return out


def fit_hparam_laws(optima: list[dict], *, n_boot: int = 1000, confidence: float = 0.95, seed: int | None = 0) -> dict:
    """Power laws of the optima: ``lr = c N^a D^b``, ``B = c D^b``, and both vs ``C = 6 N D``.

    A group whose optimal LR sits at the edge of its grid (``edge["lr"]`` set by
    :func:`find_optima`) bounds the optimum rather than measuring it: it is left out of the LR
    laws; likewise for the batch laws. Those left out are listed in ``excluded``.

    Raises:
        InsufficientDataError: fewer than 4 usable (N, D) groups, or only one N or one D.
    """
    if len(optima) < 4:
        raise InsufficientDataError(f"Hyperparameter laws need at least 4 (N, D) groups; got {len(optima)}.")

    def usable(axis):
        keep = [o for o in optima if (o.get("edge") or {}).get(axis) is None]
        if len(keep) < 4:
            at_edge = [f"(N={o['params']:.3g}, D={o['tokens']:.3g})" for o in optima if o not in keep]
            raise InsufficientDataError(
                f"Only {len(keep)} (N, D) groups have their optimal {axis} inside the grid (4 are needed); at the "
                f"edge: {', '.join(at_edge)}. Extend those grids (see each group's warnings).")
        n, d = [o["params"] for o in keep], [o["tokens"] for o in keep]
        if len(set(n)) < 2 or len(set(d)) < 2:
            raise InsufficientDataError("The groups must span at least 2 model sizes and 2 data sizes.")
        return keep, n, d

    def pack(fit, names, inputs, y):
        ci = {k: list(v) for k, v in fit.ci.items()}
        if n_boot:  # the union with the classical t interval: a bootstrap over a few groups runs narrow
            for k, (lo, hi) in t_intervals(inputs, y, confidence).items():
                ci[k] = [min(ci[k][0], lo), max(ci[k][1], hi)]
        return {"coef": fit.values["coef"], **{f"exp_{k}": fit.values[f"exp_{k}"] for k in names},
                "ci": ci, "n_groups": fit.n_points,
                "goodness": {"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}}

    kw = dict(n_boot=n_boot, confidence=confidence, seed=seed)
    laws = {}
    for axis, key, inputs_of in (("lr", "lr_law", lambda n, d: {"params": n, "tokens": d}),
                                 ("lr", "lr_vs_compute", lambda n, d: {"compute": [6 * a * b for a, b in zip(n, d)]}),
                                 ("batch", "batch_law", lambda n, d: {"tokens": d}),
                                 ("batch", "batch_vs_compute",
                                  lambda n, d: {"compute": [6 * a * b for a, b in zip(n, d)]})):
        keep, n, d = usable(axis)
        y = [o[axis] for o in keep]
        inputs = inputs_of(n, d)
        fit = fit_power_law(y, inputs=inputs, y_name=axis, **kw)
        laws[key] = pack(fit, list(inputs), inputs, y)
        laws.setdefault("_keep", {})[axis] = keep

    def left_out(keep):
        return [{"params": o["params"], "tokens": o["tokens"]} for o in optima if o not in keep]

    keep = laws.pop("_keep")
    laws["excluded"] = {"lr": left_out(keep["lr"]), "batch": left_out(keep["batch"])}
    return laws
