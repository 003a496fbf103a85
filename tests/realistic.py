"""Synthetic runs that look like real ones, drawn from a known truth (used by the fit tests and benches).

Real grids of training runs are not the smooth symmetric bowls of ``examples/``:

- :func:`lopsided_grid`: LR x batch grids whose loss rises several times faster above the optimal
  LR than below it (and faster above the optimal batch than below), runs that diverge (NaN loss)
  at high LR, missing cells, heteroscedastic noise (larger far from the optimum), and grids
  placed around a practitioner's guess, so the optimum often sits near an edge.
- :func:`lopsided_isoflop`: isoFLOP profiles from ``L = E + A/N^alpha + B/D^beta`` with exponents
  away from 0.5 (``N_opt ~ C^0.38``), model sizes from one fixed family (unevenly spaced
  around each budget's optimum, more points on one side), heteroscedastic noise; optionally
  windows of sizes placed off the optimum (``shift``) and runs that spiked (``diverged``).
- :func:`realistic_curve`: learning curves with warmup, a constant, cosine or WSD learning-rate
  schedule, the multi-timescale late descent of real runs and autocorrelated (EMA-smoothed)
  noise.
"""

from __future__ import annotations

import math

import numpy as np

#: Truth of :func:`lopsided_grid`: Step Law's optima (Li et al. 2025), batch in tokens.
GRID_TRUTH = {"lr_exp_params": -0.713, "lr_exp_tokens": 0.307, "batch_exp_tokens": 0.571}
GRID_GROUPS = [(n, d) for n in (1e8, 3e8, 1e9) for d in (2e9, 8e9, 3.2e10)]


def optimum(n, d):
    """The true optimal (lr, batch in tokens) of :func:`lopsided_grid` (Step Law)."""
    return 1.79 * n**-0.713 * d**0.307, 0.58 * d**0.571


def surface(lr, batch, n, d, *, k_lo=0.02, k_hi=0.10, b_lo=0.012, b_hi=0.03):
    """Noise-free loss: lopsided in log lr (``k_hi / k_lo`` times steeper above the optimum) and in
    log batch, with a mild lr-batch interaction (the best LR grows with the batch)."""
    lr_opt, b_opt = optimum(n, d)
    y = np.log(batch / b_opt)
    x = np.log(lr / lr_opt) - 0.3 * y  # larger batches like larger learning rates
    base = 1.7 + 400.0 * n**-0.34 + 400.0 * d**-0.28
    return base + np.where(x > 0, k_hi, k_lo) * x**2 + np.where(y > 0, b_hi, b_lo) * y**2


def lopsided_grid(rng, *, groups=GRID_GROUPS, n_lr=7, n_batch=5, lr_step=2.0, batch_step=2.0, noise=0.003,
                  missing=0.1, guess_spread=0.5, **surface_kw):
    """An LR x batch grid per (N, D) group, laid around a guess of the optimum that is off by up
    to a factor ``exp(guess_spread)`` either way; returns arrays ``(params, tokens, lr, batch, loss)``
    with NaN loss for diverged runs.

    Divergence: runs above 2.5x the optimal LR diverge with probability 0.5, above 5x always.
    Noise: ``noise * (1 + |log(lr / lr_opt)|)`` (larger far from the optimum).
    """
    rows = []
    for n, d in groups:
        lr_opt, b_opt = optimum(n, d)
        lr_c = lr_opt * math.exp(rng.uniform(-guess_spread, guess_spread))
        b_c = b_opt * math.exp(rng.uniform(-guess_spread, guess_spread))
        lrs = lr_c * lr_step ** (np.arange(n_lr) - (n_lr - 1) / 2)
        bs = b_c * batch_step ** (np.arange(n_batch) - (n_batch - 1) / 2)
        for lr in lrs:
            for b in bs:
                if rng.random() < missing:
                    continue
                ratio = lr / lr_opt * (b / b_opt) ** -0.3
                if ratio > 5 or (ratio > 2.5 and rng.random() < 0.5):
                    loss = math.nan
                else:
                    loss = float(surface(lr, b, n, d, **surface_kw))
                    loss += noise * (1 + abs(math.log(ratio))) * rng.standard_normal()
                rows.append((n, d, lr, b, loss))
    return tuple(np.array(c) for c in zip(*rows))


#: Truth of :func:`lopsided_isoflop` (Chinchilla form; N_opt ~ C^(beta/(alpha+beta)) = C^0.384).
ISO_TRUTH = {"E": 1.8, "A": 1500.0, "B": 1200.0, "alpha": 0.45, "beta": 0.28}
#: One model family, unevenly spaced (as real families are).
FAMILY = np.array([2e7, 3.5e7, 5e7, 9e7, 1.2e8, 2e8, 3.5e8, 4.5e8, 8e8, 1.3e9, 2e9, 3.2e9, 6e9, 1e10, 1.6e10])


def n_opt(c, p=ISO_TRUTH):
    a, b = p["alpha"], p["beta"]
    g = (a * p["A"] / (b * p["B"])) ** (1 / (a + b))
    return g * (c / 6) ** (b / (a + b))


def lopsided_isoflop(rng, *, budgets=(1e20, 6e20, 3.6e21, 2.16e22, 1.3e23), noise=0.004, p=ISO_TRUTH,
                     shift=0.0, diverged=0):
    """IsoFLOP runs ``(params, tokens, budget, loss)``: per budget the family's sizes from about
    1/6 to 6 times ``N_opt``, with the sizes on one side (chosen at random) thinned, so profiles
    are lopsided; noise ``noise * (1 + |log(N / N_opt)| / 2)`` relative.

    ``shift``: each budget's window of sizes is moved by a factor ``exp(u)``, ``u`` uniform in
    ``[-shift, shift]`` (a practitioner's guess of ``N_opt`` that is off), so the optimum often
    sits near, or beyond, an edge of the profile. ``diverged``: that many runs, drawn at random,
    end 5% to 20% above their loss (a loss spike never recovered from)."""
    rows = []
    for c in budgets:
        no = n_opt(c, p)
        centre = no * math.exp(rng.uniform(-shift, shift)) if shift else no
        sizes = FAMILY[(FAMILY > centre / 6) & (FAMILY < centre * 6)]
        side = rng.choice([-1, 1])
        keep = [s for s in sizes if np.sign(math.log(s / centre)) != side or rng.random() < 0.5
                or abs(math.log(s / centre)) < 0.4]
        for s in keep:
            d = c / (6 * s)
            loss = p["E"] + p["A"] / s ** p["alpha"] + p["B"] / d ** p["beta"]
            loss *= math.exp(noise * (1 + abs(math.log(s / no)) / 2) * rng.standard_normal())
            rows.append((s, d, c, loss))
    for i in (rng.choice(len(rows), diverged, replace=False) if diverged else ()):
        s, d, c, loss = rows[i]
        rows[i] = (s, d, c, loss * rng.uniform(1.05, 1.2))
    return tuple(np.array(c) for c in zip(*rows))


#: Truth of :func:`realistic_curve`: the multi-power law (Luo et al. 2025, arXiv:2503.12811), LR in
#: absolute units (peak 3e-4).
CURVE_TRUTH = {"L0": 2.6, "A": 0.55, "alpha": 0.45, "S_W": 0.02, "B": 1000.0, "C": 2.0, "beta": 0.55, "gamma": 0.6,
               "peak_lr": 3e-4}


def lr_schedule(kind: str, total: int, *, warmup: int = 300, peak: float = 3e-4, final: float = 0.1,
                decay_frac: float = 0.2):
    """Learning rate at steps 1..total: linear warmup, then constant, cosine to ``final * peak``,
    or WSD (constant, then linear decay to ``final * peak`` over the last ``decay_frac``)."""
    t = np.arange(1, total + 1, dtype=float)
    lr = np.full(total, peak)
    after = t > warmup
    if kind == "cosine":
        u = (t - warmup) / (total - warmup)
        lr = np.where(after, final * peak + 0.5 * (1 - final) * peak * (1 + np.cos(np.pi * u)), lr)
    elif kind == "wsd":
        start = total * (1 - decay_frac)
        lr = np.where(t > start, peak - (1 - final) * peak * (t - start) / (total - start), lr)
    elif kind != "constant":
        raise ValueError(kind)
    return np.where(t <= warmup, peak * t / warmup, lr)


def multi_power_loss(lr, eval_steps, p=CURVE_TRUTH):
    """The multi-power law's loss at ``eval_steps`` (1-based) for the per-step LRs ``lr``::

        L(t) = L0 + A (S1(t) + S_W)^-alpha - B sum_k (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)),
        G(x) = 1 - (C x + 1)^-beta,  S_k(t) = sum_{tau=k..t} eta_tau

    (S1 sums from step 1, so the warmup's area is in it; ``S_W`` is a small offset that keeps the
    first steps' loss finite)."""
    s1 = np.cumsum(lr)
    drops = np.concatenate([[0.0], lr[:-1] - lr[1:]])  # eta_{k-1} - eta_k at k = 1..T
    k = np.flatnonzero(drops > 0)
    out = []
    for t in np.asarray(eval_steps, int):
        kk = k[k < t]
        sk = s1[t - 1] - s1[kk - 1]
        ld = p["B"] * np.sum(drops[kk] * (1 - (p["C"] * lr[kk] ** -p["gamma"] * sk + 1) ** -p["beta"]))
        out.append(p["L0"] + p["A"] * (s1[t - 1] + p["S_W"]) ** -p["alpha"] - ld)
    return np.array(out)


def realistic_curve(rng, kind: str = "constant", *, total: int = 8000, every: int = 25, noise: float = 0.004,
                    rho: float = 0.9):
    """A logged learning curve ``(steps, lr at those steps, loss)`` from the multi-power law under a
    ``kind`` schedule, with autocorrelated noise: AR(1) with coefficient ``rho`` between logged
    points, as an EMA-smoothed training loss has; ``noise`` is its stationary relative sd."""
    lr = lr_schedule(kind, total)
    steps = np.arange(every, total + 1, every)
    clean = multi_power_loss(lr, steps)
    e = np.empty(steps.size)
    e[0] = rng.standard_normal()
    for i in range(1, steps.size):
        e[i] = rho * e[i - 1] + math.sqrt(1 - rho**2) * rng.standard_normal()
    return steps.astype(float), lr[steps - 1], clean * np.exp(noise * e)


def _ar1(rng, n: int, rho: float) -> np.ndarray:
    e = np.empty(n)
    e[0] = rng.standard_normal()
    for i in range(1, n):
        e[i] = rho * e[i - 1] + math.sqrt(1 - rho**2) * rng.standard_normal()
    return e


def realistic_cooldown_runs(rng, *, total: int = 8000, fit_until: int = 4000, branch_at: int = 2000,
                            cooldown: int = 800, every: int = 25, noise: float = 0.004, rho: float = 0.9):
    """What a user measures to predict a WSD run: its stable phase logged up to ``fit_until``, and a
    short cooldown branched from the step-``branch_at`` checkpoint (linear decay to 10% of the peak
    over ``cooldown`` steps). Returns ``(main, branch, target)``: ``main`` and ``branch`` are
    ``(steps, lr at those steps, loss, lr at every step 1..T)``; ``target`` is the full WSD
    schedule's ``(lr at every step, final clean loss)`` (multi-power law truth, AR(1) noise)."""
    peak, warm = 3e-4, 300
    wsd = lr_schedule("wsd", total)
    t = np.arange(1, branch_at + cooldown + 1, dtype=float)
    lr_b = np.where(t <= warm, peak * t / warm, peak)
    lr_b = np.where(t > branch_at, peak - 0.9 * peak * (t - branch_at) / cooldown, lr_b)
    runs = []
    for lr_all, last, first in ((wsd, fit_until, every), (lr_b, branch_at + cooldown, branch_at + every)):
        steps = np.arange(first, last + 1, every)
        clean = multi_power_loss(lr_all, steps)
        runs.append((steps.astype(float), lr_all[steps - 1], clean * np.exp(noise * _ar1(rng, steps.size, rho)),
                     lr_all[:last]))
    return runs[0], runs[1], (wsd, float(multi_power_loss(wsd, [total])[0]))


def cooldown_fit_inputs(rng, **kw):
    """:func:`realistic_cooldown_runs` as one fit sees them: ``(steps, loss, run labels, {run: lr at
    every step 1..T}, final clean loss of the planned run "wsd")``; the runs are ``main``
    (stable phase), ``cooldown`` and ``wsd`` (planned, no points)."""
    main, branch, (wsd, final) = realistic_cooldown_runs(rng, **kw)
    run = ["main"] * main[0].size + ["cooldown"] * branch[0].size
    return (np.concatenate([main[0], branch[0]]), np.concatenate([main[2], branch[2]]), run,
            {"main": main[3], "cooldown": branch[3], "wsd": wsd}, final)
