"""Write the example CSVs used in the README (synthetic runs drawn from known laws, with noise).

    python examples/make_examples.py

Every file is synthetic and says which law it was drawn from, so a fit can be checked against
the truth: chinchilla_runs.csv and isoflop_runs.csv from the Epoch AI 2024 Chinchilla parameters
(1% noise on the loss), hparam_grid.csv from the Step Law optima (Li et al. 2025) with a
quadratic bowl around them, learning_curve.csv from L(t) = 2 + 5 t^-0.3 (0.3% noise), sweep_trials.csv (the ``trials.csv``
a ``batchlaw sweep --csv`` writes, for ``batchlaw fit cbs``) from S(B) = 2000 (1 + 256/B) steps
with 8% noise per run, 4 learning rates per batch (off-optimum ones slower, the largest diverging
at large batch, the smallest not reaching the target within the budget at small batch) and 3 seeds;
cosine_curve.csv (for ``batchlaw fit curve --lr-col lr``) from the multi-power law of Luo et al.
2025 under a cosine schedule, logged to step 5,000 of 8,000; cooldown_runs.csv (for ``batchlaw fit
curve --lr-col lr --run-col run``) from the same law: a WSD run's stable phase logged to step
4,000, an 800-step cooldown branched from its step-2,000 checkpoint, and the planned 8,000-step WSD
schedule (decay over the last 1,600 steps) with no losses, to predict.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from batchlaw.fit import EPOCH_2024, chinchilla_loss, compute_optimal
from batchlaw.fit.hparams import step_law

HERE = Path(__file__).parent


def write(name, header, rows):
    with open(HERE / name, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def main() -> None:
    rng = np.random.default_rng(2024)
    rows = []
    for n in np.geomspace(2e7, 5e9, 8):
        for d in np.geomspace(5e8, 5e11, 7):
            loss = float(chinchilla_loss(n, d, EPOCH_2024)) * math.exp(0.01 * rng.standard_normal())
            rows.append((f"{n:.4g}", f"{d:.4g}", f"{loss:.5f}"))
    write("chinchilla_runs.csv", ["params", "tokens", "loss"], rows)

    rows = []
    for c in (1e18, 3e18, 1e19, 3e19, 1e20):
        n_opt = compute_optimal(c, EPOCH_2024)["params"]
        for n in n_opt * np.geomspace(0.2, 5, 7):
            d = c / (6 * n)
            loss = float(chinchilla_loss(n, d, EPOCH_2024)) * math.exp(0.002 * rng.standard_normal())
            rows.append((f"{n:.4g}", f"{d:.4g}", f"{c:.3g}", f"{loss:.5f}"))
    write("isoflop_runs.csv", ["params", "tokens", "budget", "loss"], rows)

    rows = []
    seq = 2048
    for n in (1e8, 3e8, 1e9):
        for d in (2e9, 8e9, 3.2e10):
            opt = step_law(n, d)
            for lr in opt["lr"] * 1.3 * np.geomspace(0.25, 4, 5):
                for b_seq in np.geomspace(16, 4096, 9):
                    b_tok = b_seq * seq
                    loss = (2.0 + 0.05 * math.log(lr / opt["lr"]) ** 2 + 0.03 * math.log(b_tok / opt["batch_tokens"]) ** 2
                            + 0.002 * rng.standard_normal())
                    rows.append((f"{n:.3g}", f"{d:.3g}", f"{lr:.4g}", int(b_seq), f"{loss:.5f}"))
    write("hparam_grid.csv", ["params", "tokens", "lr", "batch_seqs", "loss"], rows)

    rows = [(t, f"{(2.0 + 5.0 * t ** -0.3) * math.exp(0.003 * rng.standard_normal()):.5f}") for t in range(100, 10001, 100)]
    write("learning_curve.csv", ["step", "loss"], rows)

    write("sweep_trials.csv", SWEEP_COLUMNS, sweep_trials(np.random.default_rng(7)))

    write("cosine_curve.csv", ["step", "lr", "loss"], cosine_curve(np.random.default_rng(11)))

    write("cooldown_runs.csv", ["run", "step", "lr", "loss"], cooldown_runs(np.random.default_rng(12)))


def cosine_curve(rng, total=8000, logged=5000, every=50, warmup=300, peak=3e-4):
    """A cosine-schedule run (warmup, cosine to 10% of the peak over ``total`` steps) logged up to
    ``logged``; the rows after it carry the planned LR with an empty loss. The loss follows the
    multi-power law (Luo et al. 2025) with AR(1) noise (coefficient 0.9, 0.4% relative), as an
    EMA-smoothed training loss does."""
    t = np.arange(1, total + 1, dtype=float)
    lr = np.where(t <= warmup, peak * t / warmup,
                  0.1 * peak + 0.45 * peak * (1 + np.cos(np.pi * (t - warmup) / (total - warmup))))
    s1 = np.cumsum(lr)
    drops = np.concatenate([[0.0], lr[:-1] - lr[1:]])
    rows, e = [], 0.0
    for step in range(every, total + 1, every):
        k = np.flatnonzero((drops > 0) & (np.arange(total) < step))
        ld = 1000.0 * np.sum(drops[k] * (1 - (2.0 * lr[k] ** -0.6 * (s1[step - 1] - s1[k - 1]) + 1) ** -0.55))
        loss = 2.6 + 0.55 * (s1[step - 1] + 0.02) ** -0.45 - ld
        e = 0.9 * e + math.sqrt(1 - 0.81) * rng.standard_normal()
        rows.append((step, f"{lr[step - 1]:.4g}", f"{loss * math.exp(0.004 * e):.5f}" if step <= logged else ""))
    return rows


def _mpl(lr, step):
    """The multi-power law (the truth of cosine_curve) at ``step`` for per-step LRs ``lr``."""
    s1 = np.cumsum(lr)
    drops = np.concatenate([[0.0], lr[:-1] - lr[1:]])
    k = np.flatnonzero((drops > 0) & (np.arange(lr.size) < step))
    ld = 1000.0 * np.sum(drops[k] * (1 - (2.0 * lr[k] ** -0.6 * (s1[step - 1] - s1[k - 1]) + 1) ** -0.55))
    return 2.6 + 0.55 * (s1[step - 1] + 0.02) ** -0.45 - ld


def cooldown_runs(rng, total=8000, stable_logged=4000, branch=2000, cooldown=800, every=25, warmup=300, peak=3e-4):
    """Rows ``(run, step, lr, loss)``: run ``stable`` (WSD, logged to ``stable_logged``), run
    ``cooldown`` (branched at ``branch``, linear decay to 10% of the peak over ``cooldown`` steps),
    and run ``wsd`` (the planned schedule, LR knots only). Before its first logged step each run's
    schedule is given by rows with an empty loss (the warmup from step 1)."""
    t = np.arange(1, total + 1, dtype=float)
    warm = np.where(t <= warmup, peak * t / warmup, peak)
    wsd = np.where(t > 0.8 * total, peak - 0.9 * peak * (t - 0.8 * total) / (0.2 * total), warm)
    cool = np.where(t > branch, peak - 0.9 * peak * (t - branch) / cooldown, warm)[: branch + cooldown]
    rows = []
    for name, lr, first, last in (("stable", wsd, every, stable_logged), ("cooldown", cool, branch + every,
                                                                          branch + cooldown)):
        rows += [(name, s, f"{lr[s - 1]:.6g}", "") for s in sorted({1, warmup, branch}) if s < first]
        e = rng.standard_normal()
        for step in range(first, last + 1, every):
            rows.append((name, step, f"{lr[step - 1]:.6g}", f"{_mpl(lr, step) * math.exp(0.004 * e):.5f}"))
            e = 0.9 * e + math.sqrt(1 - 0.81) * rng.standard_normal()
    rows += [("wsd", s, f"{wsd[s - 1]:.6g}", "") for s in (1, warmup, int(0.8 * total), total)]
    return rows


#: Columns of the trials.csv a sweep exports (batchlaw.sweep.store.CSV_COLUMNS).
SWEEP_COLUMNS = ["sweep", "key", "batch_size", "lr", "seed", "status", "steps_to_target", "examples_to_target",
                 "tokens_to_target", "wall_time_s", "b_simple", "final_loss", "steps_lower_bound"]
SWEEP_TRUTH = {"s_min": 2000.0, "b_crit": 256.0}


def sweep_trials(rng, s_min=SWEEP_TRUTH["s_min"], b_crit=SWEEP_TRUTH["b_crit"], noise=0.08, max_steps=40000):
    """Rows of a sweep's trials.csv drawn from S(B) = s_min (1 + b_crit/B) at the best learning rate.

    The best learning rate grows as sqrt(B); one a factor 2 off takes 1.3x the steps, 4 off 2.2x;
    runs at 4x the best LR diverge for B >= 512 (empty steps, status 'diverged'); runs longer
    than ``max_steps`` stop at the budget (empty steps, status 'budget'); both have the budget as
    ``steps_lower_bound``.
    """
    rows = []
    for b in (16, 32, 64, 128, 256, 512, 1024, 2048):
        lr_best = 1e-3 * math.sqrt(b / 64)
        for seed in range(3):
            for f in (0.25, 0.5, 1.0, 2.0):
                lr = lr_best * f * math.exp(0.1 * rng.standard_normal())  # the grid does not sit on the optimum
                slow = 1.0 + 0.3 * math.log2(lr / lr_best) ** 2
                steps = s_min * (1 + b_crit / b) * slow * math.exp(noise * rng.standard_normal())
                key = f"{b}-{lr:.3g}-{seed}"
                if f == 2.0 and b >= 512:
                    rows.append(("lm", key, b, f"{lr:.4g}", seed, "diverged", "", "", "", "12.0", "", "nan",
                                 f"{max_steps:.1f}"))
                elif steps > max_steps:
                    rows.append(("lm", key, b, f"{lr:.4g}", seed, "budget", "", "", "", "30.0", "", "3.2",
                                 f"{max_steps:.1f}"))
                else:
                    rows.append(("lm", key, b, f"{lr:.4g}", seed, "reached", f"{steps:.1f}", f"{steps * b:.0f}", "",
                                 f"{steps / 1000:.2f}", "", "2.9", ""))
    return rows


if __name__ == "__main__":
    main()
