"""``batchlaw fit ...``: laws fitted to any CSV a user brings."""

from __future__ import annotations

import json
import math
import warnings

from .._format import fmt_count, fmt_num


def add_parsers(sub) -> None:
    _add_fit_parser(sub)


def _add_fit_parser(sub) -> None:
    p = sub.add_parser("fit", help="fit laws to a CSV of your own results",
                       description="Fit a law to any CSV: your own runs, or a paper's table.")
    fsub = p.add_subparsers(dest="law", metavar="LAW")
    fsub.required = True
    c = fsub.add_parser(
        "cbs", help="S(B) = S_min (1 + B_crit/B) from steps to target",
        description="Fit S(B) = S_min (1 + B_crit/B) (McCandlish et al. 2018) to steps-to-target per batch size, "
        "with bootstrap intervals, and the 20%-over-linear critical batch size of Zhang et al. 2024.",
    )
    c.add_argument("csv", help="CSV file with a header row: your own table, or a sweep's trials.csv")
    c.add_argument("--batch-col", default=None,
                   help="column with the batch size (default: 'batch_size', the column of a sweep's trials.csv)")
    c.add_argument("--steps-col", default=None,
                   help="column with the steps to target; an empty cell means 'not reached': a censored run, counted "
                   "above its budget as the sweep's analysis does (default: 'steps_to_target', the column of a "
                   "sweep's trials.csv)")
    c.add_argument("--budget-col", default=None,
                   help="column with each run's step budget, a lower bound on the steps of a run that did not reach "
                   "the target (default: 'steps_lower_bound', the column of a sweep's trials.csv; in an older "
                   "trials.csv, the most steps any trial of the sweep took to reach the target)")
    c.add_argument("--lr-col", default=None,
                   help="column with the learning rate: the best LR per batch size and seed is kept, then the median "
                   "over seeds (default: 'lr' when the CSV has it)")
    c.add_argument("--seed-col", default=None, help="column with the seed (default: 'seed' when the CSV has it)")
    c.add_argument("--status-col", default=None,
                   help="column with the trial status; only 'reached' rows are fitted (default: 'status' when the "
                   "CSV has it)")
    c.add_argument("--group-col", default=None,
                   help="fit each value of this column separately (default: 'sweep' when the CSV has it)")
    c.add_argument("--reference-batch", type=float, default=None, help="B0 for the CBS (default: the smallest batch)")
    c.add_argument("--unit", choices=["examples", "tokens", "sequences"], default="examples",
                   help="unit of the batch column (default: %(default)s)")
    c.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=_cmd_fit_cbs)

    ch = fsub.add_parser("chinchilla", help="L(N, D) = E + A/N^alpha + B/D^beta (Approach 3), allocation",
                         description="Fit L(N, D) = E + A/N^alpha + B/D^beta as the Epoch AI replication did (Huber "
                         "1e-3 on log loss, L-BFGS from a grid of starts), with bootstrap intervals over runs.")
    ch.add_argument("csv", help="CSV file with a header row, one run per row")
    ch.add_argument("--params-col", required=True, help="column with the model size N (parameters)")
    tok = ch.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokens-col", help="column with the training tokens D")
    tok.add_argument("--compute-col", help="column with the compute C in FLOPs (D = C / (6 N))")
    ch.add_argument("--loss-col", required=True, help="column with the final loss")
    ch.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    ch.add_argument("--compute", type=float, default=None, help="FLOP budget for the compute-optimal allocation")
    ch.add_argument("--inference-tokens", type=float, default=None, help="expected inference tokens (Sardana et al.)")
    ch.add_argument("--json", action="store_true", help="print JSON")
    ch.set_defaults(func=_cmd_fit_chinchilla)

    iso = fsub.add_parser("isoflop", help="Approach 2 (an optimum per compute budget) beside Approach 3",
                          description="For each compute budget fit a parabola of loss in log N to the runs around the "
                          "profile's lowest loss, or with --method akima minimise an Akima spline through the profile "
                          "under seed noise (Porian et al. 2024); a budget without a minimum inside its profile is "
                          "skipped with a warning. Fit power laws to the optima N_opt(C) and D_opt(C) = C / (6 N_opt). "
                          "The same runs are fitted by Approach 3 (L = E + A/N^alpha + B/D^beta, variable projection) "
                          "and the two compared.")
    iso.add_argument("csv", help="CSV file with a header row, one row per run")
    iso.add_argument("--params-col", required=True, help="column with the model size N (parameters)")
    iso.add_argument("--tokens-col", required=True, help="column with the training tokens D")
    iso.add_argument("--budget-col", required=True, help="column with the compute budget of the run's isoFLOP group")
    iso.add_argument("--loss-col", required=True, help="column with the final loss")
    iso.add_argument("--method", choices=("parabola", "akima"), default="parabola",
                     help="how each budget's optimum is found: a local parabola, or Porian et al. 2024's Akima spline "
                     "with a seed-noise bootstrap and a weighted power-law fit (needs --loss-noise) "
                     "(default: %(default)s)")
    iso.add_argument("--window", type=int, default=None,
                     help="--method parabola: runs on each side of a profile's lowest loss that its parabola uses "
                     "(default: 2)")
    iso.add_argument("--loss-noise", type=float, default=None,
                     help="--method akima: standard deviation of the final loss between seeds, in loss units "
                     "(Porian et al. measured 0.002 on RefinedWeb)")
    iso.add_argument("--no-approach3", action="store_true", help="skip the Approach 3 fit and the comparison")
    iso.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    iso.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.fit.isoflop/1)")
    iso.set_defaults(func=_cmd_fit_isoflop)

    hp = fsub.add_parser("hparams", help="optimal LR and batch per (N, D), and their power laws",
                         description="From LR x batch grids over several (N, D): the optimum per group, found around "
                         "the lowest loss without extrapolating (a lopsided bowl fitted to the nearby runs; at a grid "
                         "edge the edge value, flagged), then lr_opt = c N^a D^b and B_opt = c D^b (and vs C = 6 N D). "
                         "A loss that is empty, NaN, inf or 'diverged' marks a diverged run: counted, never fitted.")
    hp.add_argument("csv", help="CSV file with a header row, one row per run")
    hp.add_argument("--lr-col", required=True, help="column with the learning rate")
    hp.add_argument("--batch-col", required=True, help="column with the batch size")
    hp.add_argument("--loss-col", required=True, help="column with the final loss (empty/NaN/inf/'diverged': diverged)")
    hp.add_argument("--params-col", required=True, help="column with the model size N (parameters)")
    hp.add_argument("--tokens-col", required=True, help="column with the training tokens D")
    hp.add_argument("--seq-len", type=int, default=None, help="tokens per sequence: batch column in sequences, laws in tokens")
    hp.add_argument("--method", choices=["local", "quadratic", "raw", "global"], default="local",
                    help="how each group's optimum is found: 'local' (lopsided bowl around the lowest loss), "
                    "'quadratic' (symmetric quadratic around it), 'raw' (the lowest run), 'global' (one quadratic over "
                    "the whole grid; biased on lopsided grids) (default: %(default)s)")
    hp.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the groups for the laws "
                    "(default: %(default)s)")
    hp.add_argument("--group-bootstrap", type=int, default=100,
                    help="bootstrap resamples of each group's runs for its optimum's interval (0: none; default: "
                    "%(default)s)")
    hp.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.fit.hparams/1)")
    hp.set_defaults(func=_cmd_fit_hparams)

    pw = fsub.add_parser("powerlaw", help="y = c * x1^a1 * x2^a2 ... (e.g. CBS vs tokens and params)",
                         description="Fit a power law in one or more columns with the shared engine (log-space Huber, "
                         "bootstrap intervals over rows). For critical-batch-size laws, give one row per sweep: its "
                         "CBS or B_crit, its training tokens D and model size N (Zhang et al. 2024: CBS grows with D, "
                         "hardly with N).")
    pw.add_argument("csv", help="CSV file with a header row")
    pw.add_argument("--y-col", required=True, help="column of the quantity (e.g. cbs)")
    pw.add_argument("--x-col", action="append", required=True, help="input column (repeat for several)")
    pw.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    pw.add_argument("--json", action="store_true", help="print JSON")
    pw.set_defaults(func=_cmd_fit_powerlaw)

    cu = fsub.add_parser("curve", help="learning-curve extrapolation: L_inf + a t^-b, or schedule-aware with --lr-col",
                         description="Fit L(t) = L_inf + a t^-b (constant-LR runs), or with --lr-col a schedule-aware "
                         "law: Tissue et al. 2024, L = L0 + A S1^-alpha - C S2 (S1: summed learning rate, S2: "
                         "annealing area), or with --law multipower the multi-power law of Luo et al. 2025 (for "
                         "cosine, WSD or any decaying schedule). Predict the loss at a later step with a predictive "
                         "interval (moving-block bootstrap over the curve, so the autocorrelated noise of a smoothed "
                         "loss and the floor's uncertainty are in it), and backtest on the first half of the curve. "
                         "With --lr-col, rows with an empty loss give the planned schedule ahead; with --run-col, "
                         "several runs (e.g. a stable phase and a short cooldown from one of its checkpoints) share "
                         "one schedule-aware law, and a run with only empty losses is a planned run to predict.")
    cu.add_argument("csv", help="CSV file with a header row, one row per logged step")
    cu.add_argument("--step-col", required=True,
                    help="column with the optimizer step, counted from the start of the run (a log may begin later, "
                    "e.g. resumed logging: fine for the power law; the schedule-aware laws sum the learning rate from "
                    "step 1, so with --lr-col the rows must start at step 1 or at the first step of a log kept every "
                    "that many steps)")
    cu.add_argument("--loss-col", required=True, help="column with the (training or validation) loss")
    cu.add_argument("--lr-col", default=None,
                    help="column with the learning rate at each step: fit a schedule-aware law (rows with an empty "
                    "loss extend the schedule to predict ahead)")
    cu.add_argument("--law", dest="curve_law", choices=("power", "tissue", "multipower"), default=None,
                    help="the law: power (default without --lr-col), tissue (default with it) or multipower (needs "
                    "--lr-col)")
    cu.add_argument("--run-col", default=None,
                    help="column naming each row's run: fit several runs with one schedule-aware law (each run's "
                    "schedule must start at step 1, or at its first logging step: give a branch's earlier steps as "
                    "rows with an empty loss; a run that starts later is refused)")
    cu.add_argument("--warmup-steps", type=float, default=None,
                    help="steps of learning-rate warmup: rows before twice this step are left out of the fit, as "
                    "the warmup's transient is not the law's; refused when too few rows remain (default: from "
                    "--lr-col, else 0)")
    cu.add_argument("--predict-at", type=float, default=None, help="step to predict the loss at (a number > 0)")
    cu.add_argument("--predict-run", default=None,
                    help="with --run-col: the run to predict (default: the last run in the file)")
    cu.add_argument("--bootstrap", type=int, default=1000,
                    help="bootstrap resamples (0: point estimates only, no intervals; default: %(default)s)")
    cu.add_argument("--json", action="store_true", help="print JSON (schema batchlaw.fit.curve/2)")
    cu.set_defaults(func=_cmd_fit_curve)


#: columns by which a CSV is a sweep's trials.csv (batchlaw.sweep.store.CSV_COLUMNS), whose trials share a budget
_SWEEP_TRIALS_COLUMNS = ("sweep", "key", "batch_size", "lr", "seed", "status", "steps_to_target")


def _cell_number(t: dict, col: str, i: int, path: str, what: str) -> float | None:
    """The positive finite number in row ``i`` of ``col`` (``None`` for an empty cell), or a one-line error."""
    cell = str(t[col][i]).strip()
    if cell == "":
        return None
    try:
        v = float(cell)
    except ValueError:
        raise ValueError(f"Column {col!r}, line {i + 2} of {path!r}: {cell!r} is not a number ({what}).") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"Column {col!r}, line {i + 2} of {path!r}: {cell!r} is not a positive, finite number "
                         f"of steps ({what}).")
    return v


def _cbs_table(args) -> tuple[dict, dict]:
    """Read the points of ``fit cbs`` from any CSV or a sweep's ``trials.csv``, by the sweep's own rule.

    A row whose steps cell is empty (or whose status is not ``reached``) did not reach the target:
    it is censored, with a lower bound on its steps from the budget column (``--budget-col``;
    default ``steps_lower_bound``, the column of a sweep's trials.csv). In a trials.csv written
    before that column, the bound is the most steps any trial of the same sweep took to reach the
    target: a sweep's trials share one budget, at least that. Otherwise the bound is unknown.

    With a learning-rate column, each (batch, seed) keeps its best learning rate, and each batch
    size the median over seeds with censored seeds as ``+inf``: a censored median is a lower
    bound, of unknown value when a censored seed of unknown bound takes part
    (:func:`batchlaw.sweep.analysis.median_over_seeds`, the rule of the sweep's analysis). Without
    a learning-rate column every row is a point.

    Returns:
        ``(groups, info)``: ``groups`` maps a group name to its points (``batch_size``,
        ``steps_to_target``, ``censored``, ``steps_lower_bound``, ``n_seeds``, ``n_censored``,
        ``best_lr``), ascending; ``info`` maps it to ``{"rows_not_reached", "bound"}`` (where the
        bounds come from), ``"batches"`` and ``"reached"`` (the batch sizes where a run reached the target).
    """
    from .._csv import read_columns, read_header
    from ..sweep.analysis import median_over_seeds, seed_lower_bound

    header = read_header(args.csv)

    def pick(given, default):
        return given if given is not None else (default if default in header else None)

    batch_col = args.batch_col or "batch_size"
    steps_col = args.steps_col or "steps_to_target"
    lr_col, seed_col = pick(args.lr_col, "lr"), pick(args.seed_col, "seed")
    status_col, group_col = pick(args.status_col, "status"), pick(args.group_col, "sweep")
    budget_col = pick(args.budget_col, "steps_lower_bound")
    sweep_budget = budget_col is None and all(c in header for c in _SWEEP_TRIALS_COLUMNS)
    cols = list(dict.fromkeys(c for c in (batch_col, steps_col, lr_col, seed_col, status_col, group_col, budget_col,
                                          "sweep" if sweep_budget else None) if c))
    t = read_columns(args.csv, cols, numeric=[batch_col] + ([lr_col] if lr_col else []))
    rows = []  # (group, batch, steps or None, bound or None, seed, lr, sweep)
    for i in range(len(t[batch_col])):
        b = t[batch_col][i]
        b = int(b) if float(b).is_integer() else b
        reached = str(t[steps_col][i]).strip() != "" and (status_col is None
                                                          or str(t[status_col][i]).strip() == "reached")
        steps = _cell_number(t, steps_col, i, args.csv, "leave the cell empty for a run that did not reach the "
                             "target") if reached else None
        bound = None if reached or budget_col is None else _cell_number(
            t, budget_col, i, args.csv, "the budget: a lower bound on the steps of a run that did not reach the target")
        rows.append((str(t[group_col][i]) if group_col else "all", b, steps, bound,
                     str(t[seed_col][i]) if seed_col else "0", t[lr_col][i] if lr_col else None,
                     str(t["sweep"][i]) if sweep_budget else None))
    bound_source = (f"column {budget_col!r}" if budget_col else
                    "the most steps any trial of the sweep took to reach the target" if sweep_budget else None)
    if sweep_budget:  # a sweep's trials share its budget, which is at least the slowest trial that reached the target
        slowest: dict[str, float] = {}
        for _, _, steps, _, _, _, sweep in rows:
            if steps is not None:
                slowest[sweep] = max(slowest.get(sweep, 0.0), steps)
        rows = [(g, b, s, slowest.get(sw) if s is None else None, seed, lr, sw) for g, b, s, _, seed, lr, sw in rows]
    groups: dict[str, list] = {}
    info: dict[str, dict] = {}
    cells: dict[str, dict] = {}
    for g, b, steps, bound, seed, lr, _ in rows:
        inf = info.setdefault(g, {"rows_not_reached": 0, "bound": bound_source, "batches": set(), "reached": set()})
        inf["rows_not_reached"] += steps is None
        inf["batches"].add(b)
        if steps is not None:
            inf["reached"].add(b)
        if lr_col is None:  # a plain table: every row is a point
            groups.setdefault(g, []).append({
                "batch_size": b, "steps_to_target": steps, "censored": steps is None,
                "steps_lower_bound": bound if steps is None else None, "n_seeds": 1, "n_censored": int(steps is None),
                "best_lr": None})
        else:
            cells.setdefault(g, {}).setdefault(b, {}).setdefault(seed, []).append((steps, bound, lr))
    for g, by_b in cells.items():
        for b, seeds in by_b.items():
            per_seed = []
            for trials in seeds.values():
                reached = [x for x in trials if x[0] is not None]
                if reached:
                    steps, _, lr = min(reached, key=lambda x: x[0])
                    per_seed.append((steps, None, lr))
                else:
                    per_seed.append((None, seed_lower_bound([x[1] for x in trials]), None))
            m = median_over_seeds(per_seed)
            groups.setdefault(g, []).append({k: m[k] for k in ("steps_to_target", "censored", "steps_lower_bound",
                                                                "n_seeds", "n_censored")}
                                            | {"batch_size": b, "best_lr": m["picked"]})
    for g in info:
        groups.setdefault(g, []).sort(key=lambda p: p["batch_size"])
    return groups, info


def _cbs_notes(points: list[dict], plain: bool, bound_source: str | None) -> list[str]:
    """What the censored points of a group are, and which batch sizes are left out of the fit."""
    from ..sweep.analysis import censored_notes

    if not plain:
        notes = censored_notes(points)
    else:
        notes = []
        for p in points:
            if p["censored"] and p["steps_lower_bound"] is None:
                notes.append(f"batch {p['batch_size']}: a run did not reach the target and no bound on its steps is "
                             "known: left out of the fit, which reads S(B) low there.")
            elif p["censored"]:
                notes.append(f"batch {p['batch_size']}: a run did not reach the target within "
                             f"{fmt_count(p['steps_lower_bound'])} steps: it enters the fit as a lower bound.")
    unknown = [p["batch_size"] for p in points if p["censored"] and p["steps_lower_bound"] is None]
    if unknown:
        notes.append(f"batch size(s) {', '.join(map(str, dict.fromkeys(unknown)))} censored, bound unknown: name a "
                     "column with each run's step budget (--budget-col) to fit them as lower bounds.")
    elif bound_source and any(p["censored"] for p in points):
        notes.append(f"lower bounds from {bound_source}.")
    return notes


def _cmd_fit_cbs(args) -> int:
    from ..errors import InsufficientDataError
    from ..fit import fit_steps_law

    groups, info = _cbs_table(args)
    plain = not any(p["best_lr"] is not None for pts in groups.values() for p in pts)
    out, failed = [], 0
    for g, points in groups.items():
        fitted = [p for p in points if not p["censored"] or p["steps_lower_bound"] is not None]
        measured = sum(not p["censored"] for p in points)
        extra = {"rows_not_reached": info[g]["rows_not_reached"],
                 "not_reached_batches": sorted(info[g]["batches"] - info[g]["reached"]),
                 "left_out": sorted({p["batch_size"] for p in points if p not in fitted}),
                 "notes": _cbs_notes(points, plain, info[g]["bound"]),
                 "points": [{"batch": p["batch_size"], "steps": p["steps_to_target"], "censored": p["censored"],
                             "steps_lower_bound": p["steps_lower_bound"], "seeds": p["n_seeds"],
                             "n_censored": p["n_censored"], **({} if plain else {"best_lr": p["best_lr"]})}
                            for p in points]}
        try:
            if not measured:
                raise InsufficientDataError(
                    f"no run reached the target ({info[g]['rows_not_reached']} rows did not): lower the target loss "
                    "or raise the step budget of the sweep")
            fit = fit_steps_law([p["batch_size"] for p in fitted],
                                [p["steps_lower_bound"] if p["censored"] else p["steps_to_target"] for p in fitted],
                                censored=[p["censored"] for p in fitted], reference_batch=args.reference_batch,
                                unit=args.unit, n_boot=args.bootstrap)
        except InsufficientDataError as err:
            failed += 1
            out.append({"group": g, "n_points": measured, "error": str(err), **extra})
            continue
        out.append({"group": g, "n_points": fit.n_points, "s_min": fit.s_min, "s_min_ci": list(fit.s_min_ci),
                    "e_min": fit.e_min, "e_min_ci": list(fit.e_min_ci), "b_crit": fit.b_crit,
                    "b_crit_ci": list(fit.b_crit_ci), "cbs": fit.cbs, "cbs_ci": list(fit.cbs_ci),
                    "reference_batch": fit.reference_batch, "unit": fit.unit,
                    "lower_bounds": [list(x) for x in fit.lower_bounds], **extra, "_fit": fit})
    if args.json:
        print(json.dumps({"schema": "batchlaw.fit.cbs/2",
                          "groups": [{k: v for k, v in o.items() if k != "_fit"} for o in out]}, indent=2))
    else:
        several = len(out) > 1 or args.group_col
        for o in out:
            head = f"[{o['group']}] " if several else ""
            print(f"{head}{o['n_points']} points: " + (str(o["_fit"]) if "_fit" in o else f"no fit: {o['error']}"))
            if o["rows_not_reached"]:
                nr = o["not_reached_batches"]
                print(f"{head}{o['rows_not_reached']} row(s) did not reach the target"
                      + (f"; no run reached it at batch size(s) {', '.join(map(fmt_count, nr))}" if nr else ""))
            for note in o["notes"]:
                print(f"{head}note: {note}")
    return 1 if failed == len(out) else 0


def _finite(x):
    """``float(x)``, or ``None`` (JSON null: unbounded) when it is not finite."""
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


def _ci_text(fit, key) -> str:
    """``value (lo to hi)``, or the value alone when the fit has no interval for it (no bootstrap)."""
    if key not in fit.ci:
        return fmt_num(fit.values[key])
    lo, hi = fit.ci[key]
    return f"{fmt_num(fit.values[key])} ({fmt_num(lo)} to {fmt_num(hi)})"


def _cmd_fit_chinchilla(args) -> int:
    from .._csv import read_columns
    from ..fit import compute_optimal, fit_chinchilla, inference_optimal

    tok_col = args.tokens_col or args.compute_col
    t = read_columns(args.csv, [args.params_col, tok_col, args.loss_col], numeric=[args.params_col, tok_col, args.loss_col])
    n = t[args.params_col]
    d = t[tok_col] if args.tokens_col else [c / (6 * x) for c, x in zip(t[tok_col], n)]
    fit = fit_chinchilla(n, d, t[args.loss_col], n_boot=args.bootstrap)
    out = {k: fit.values[k] for k in ("E", "A", "B", "alpha", "beta")}
    out.update(n_points=fit.n_points, ci={k: list(v) for k, v in fit.ci.items()},
               goodness={"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}, extrapolation=fit.extrapolation)
    if args.compute:
        alloc = compute_optimal(args.compute, fit.values)
        out["allocation"] = {k: alloc[k] for k in ("compute", "params", "tokens", "tokens_per_param")}
        out["allocation"]["loss"] = alloc["loss"]
        if fit.boot:
            import numpy as np

            boot = []
            for i in range(len(fit.boot["E"])):
                try:
                    boot.append(compute_optimal(args.compute, {k: float(v[i]) for k, v in fit.boot.items()}))
                except ValueError:  # a degenerate resample has no allocation: it counts as unbounded
                    boot.append({"params": np.inf, "tokens": np.inf, "tokens_per_param": np.inf})
            a = (1 - fit.confidence) / 2
            out["allocation"]["ci"] = {k: [_finite(np.quantile([b[k] for b in boot], a)),
                                           _finite(np.quantile([b[k] for b in boot], 1 - a))]
                                       for k in ("params", "tokens", "tokens_per_param")}
        if args.inference_tokens is not None:
            out["inference_aware"] = inference_optimal(args.compute, args.inference_tokens, fit.values)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"L(N, D) = E + A/N^alpha + B/D^beta from {fit.n_points} runs (95% bootstrap intervals, {fit.n_boot} resamples):")
    for k in ("E", "A", "B", "alpha", "beta"):
        print(f"  {k:>5} = {_ci_text(fit, k)}")
    print(f"  fit: RMSE {fit.rmse_log:.4f} in log loss, R^2 {fit.r2_log:.4f}")
    if fit.extrapolation:
        e = fit.extrapolation
        print(f"  extrapolation check: refit without the {e['held_out_points']} largest-compute runs predicts them "
              f"with median error {e['median_abs_rel_error']:.2%} (max {e['max_abs_rel_error']:.2%})")
    if "allocation" in out:
        a = out["allocation"]
        ci = a.get("ci", {})
        print(f"compute-optimal at C = {a['compute']:.3g} FLOPs: N = {fmt_num(a['params'])} parameters, "
              f"D = {fmt_num(a['tokens'])} tokens, {a['tokens_per_param']:.1f} tokens per parameter"
              + (f" (95% CI {fmt_num(ci['tokens_per_param'][0])} to {fmt_num(ci['tokens_per_param'][1])})" if ci else ""))
    if "inference_aware" in out:
        i = out["inference_aware"]
        print(f"inference-aware ({i['inference_tokens']:.3g} inference tokens): N = {fmt_num(i['params'])}, "
              f"D = {fmt_num(i['tokens'])} ({i['tokens_per_param']:.0f} tokens/param); total compute "
              f"{i['total_compute']:.3g} vs {i['chinchilla_total_compute']:.3g} FLOPs for the compute-optimal model")
    return 0


def _cmd_fit_isoflop(args) -> int:
    import sys
    import warnings

    from .._csv import read_columns
    from ..fit import fit_isoflop

    if args.method == "akima" and args.loss_noise is None:
        raise ValueError("The '--loss-noise' option is required with '--method akima': the standard deviation of the "
                         "final loss between seeds, in loss units (Porian et al. 2024 measured 0.002 on RefinedWeb).")
    for option, value, method in (("--loss-noise", args.loss_noise, "akima"), ("--window", args.window, "parabola")):
        if value is not None and args.method != method:
            raise ValueError(f"The '{option}' option applies to '--method {method}' only. Got {value!r} with "
                             f"'--method {args.method}'.")
    cols = [args.params_col, args.tokens_col, args.budget_col, args.loss_col]
    t = read_columns(args.csv, cols, numeric=cols)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fit_isoflop(t[args.params_col], t[args.tokens_col], t[args.budget_col], t[args.loss_col],
                          method=args.method, window=args.window, loss_noise=args.loss_noise, n_boot=args.bootstrap,
                          approach3=not args.no_approach3)
    for w in caught:
        print(f"batchlaw: warning: {w.message}", file=sys.stderr)
    out = {"schema": "batchlaw.fit.isoflop/1", **out}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print("Approach 2 (a parabola in log N around each profile's minimum):" if args.method == "parabola" else
          f"Approach 2 (Akima spline per profile, seed noise {args.loss_noise:g} in loss, Porian et al. 2024):")
    print(f"{'budget (FLOPs)':>15} {'N_opt':>10} {'D_opt':>10} {'loss':>8} runs  N_opt 95% CI")
    for o in out["optima"]:
        lo, hi = o["params_ci"]
        print(f"{o['compute']:>15.3g} {fmt_num(o['params']):>10} {fmt_num(o['tokens']):>10} {o['loss']:>8.4f} "
              f"{o['n_runs']:>4}  {fmt_num(lo)} to {fmt_num(hi)}")
    for s in out["skipped"]:
        print(f"{s['compute']:>15.3g} skipped: {s['reason']}")
    for key in ("params", "tokens"):
        law = out[f"{key}_law"]
        ci = law["ci"].get("exp_compute")
        noise = law.get("noise_ci", {}).get("exp_compute")
        print(f"{key}_opt = {law['coef']:.3g} * C^{law['exponent']:.3f}"
              + (f" (exponent 95% CI {ci[0]:.3f} to {ci[1]:.3f}" if ci else "")
              + (f"; seed noise alone, as published: {noise[0]:.3f} to {noise[1]:.3f}" if ci and noise else "")
              + (")" if ci else ""))
    a3 = out.get("approach3")
    if a3 and "error" not in a3:
        ci = a3["ci"]

        def iv(k):
            return f"{a3[k]:.3g}" + (f" ({ci[k][0]:.3g} to {ci[k][1]:.3g})" if k in ci else "")

        print(f"Approach 3 on the same runs (variable projection): E = {iv('E')}, alpha = {iv('alpha')}, "
              f"beta = {iv('beta')}")
        print(f"  N_opt ~ C^{iv('params_exponent')} (Approach 2: {out['params_law']['exponent']:.3f}); "
              "N_opt per budget, Approach 2 / Approach 3: "
              + ", ".join(f"{b['compute']:.3g}: {b['ratio']:.2f}" for b in out["comparison"]["budgets"]))
    elif a3:
        print(f"Approach 3: no fit: {a3['error']}")
    return 0


_DIVERGED = {"", "nan", "inf", "+inf", "infinity", "diverged", "none", "null"}


def _losses_with_divergence(values, column, path) -> list[float]:
    """A loss column where empty, NaN, inf or 'diverged' cells mark diverged runs (NaN)."""
    out = []
    for line, v in enumerate(values, start=2):
        text = str(v).strip()
        if text.lower() in _DIVERGED:
            out.append(float("nan"))
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"Column {column!r}, line {line} of {path!r}: {text!r} is not a number (a diverged run's "
                             "loss may be empty, 'nan', 'inf' or 'diverged').") from None
        if math.isinf(value) and value > 0 or math.isnan(value):
            value = float("nan")
        elif not math.isfinite(value) or value <= 0:
            raise ValueError(f"Column {column!r}, line {line} of {path!r}: {text!r} is not a loss (a finite number "
                             "> 0, or empty/'nan'/'inf'/'diverged' for a diverged run).")
        out.append(value)
    return out


def _cmd_fit_hparams(args) -> int:
    from .._csv import read_columns
    from .._validation import check_positive_int
    from ..fit.hparams import find_optima, fit_hparam_laws

    check_positive_int("--group-bootstrap", args.group_bootstrap, minimum=0)
    if args.seq_len is not None:
        check_positive_int("--seq-len", args.seq_len)
    num = [args.lr_col, args.batch_col, args.params_col, args.tokens_col]
    t = read_columns(args.csv, [*num, args.loss_col], numeric=num)
    loss = _losses_with_divergence(t[args.loss_col], args.loss_col, args.csv)
    batch = t[args.batch_col]
    if args.seq_len:
        batch = [b * args.seq_len for b in batch]
    optima = find_optima(t[args.params_col], t[args.tokens_col], t[args.lr_col], batch, loss, method=args.method,
                         n_boot=args.group_bootstrap)
    laws = fit_hparam_laws(optima, n_boot=args.bootstrap)
    unit = "tokens" if args.seq_len else "as in the batch column"
    keys = ("params", "tokens", "lr", "batch", "loss", "method", "raw", "n_runs", "n_diverged", "edge", "warnings",
            "lr_ci", "batch_ci")
    out = {"schema": "batchlaw.fit.hparams/1", "method": args.method, "lr_law": laws["lr_law"],
           "batch_law": laws["batch_law"], "lr_vs_compute": laws["lr_vs_compute"],
           "batch_vs_compute": laws["batch_vs_compute"], "batch_unit": unit, "excluded": laws["excluded"],
           "n_diverged": sum(o["n_diverged"] for o in optima),
           "optima": [{k: o[k] for k in keys if k in o} for o in optima]}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"{'params':>10} {'tokens':>10} {'lr_opt':>10} {'B_opt':>10} {'loss':>8} {'runs':>5} {'div':>4}  method")
    for o in optima:
        print(f"{fmt_num(o['params']):>10} {fmt_num(o['tokens']):>10} {o['lr']:>10.3g} {fmt_num(o['batch']):>10} "
              f"{o['loss']:>8.4f} {o['n_runs']:>5} {o['n_diverged']:>4}  {o['method']}"
              + (f"  (LR 95% CI {o['lr_ci'][0]:.3g} to {o['lr_ci'][1]:.3g})" if "lr_ci" in o else ""))
        for w in o["warnings"]:
            print(f"{'':>10} warning: {w}")
    lr, b = laws["lr_law"], laws["batch_law"]
    print(f"lr_opt = {lr['coef']:.3g} * N^{lr['exp_params']:.3f} * D^{lr['exp_tokens']:.3f}  "
          f"(95% CI: N exp {lr['ci']['exp_params'][0]:.3f} to {lr['ci']['exp_params'][1]:.3f}, "
          f"D exp {lr['ci']['exp_tokens'][0]:.3f} to {lr['ci']['exp_tokens'][1]:.3f}; {lr['n_groups']} groups)")
    print(f"B_opt = {b['coef']:.3g} * D^{b['exp_tokens']:.3f} ({unit}; 95% CI on the exponent "
          f"{b['ci']['exp_tokens'][0]:.3f} to {b['ci']['exp_tokens'][1]:.3f}; {b['n_groups']} groups)")
    for axis, left in laws["excluded"].items():
        if left:
            print(f"left out of the {axis} laws (optimum at the grid's edge): "
                  + ", ".join(f"N={fmt_num(g['params'])} D={fmt_num(g['tokens'])}" for g in left))
    return 0


def _cmd_fit_powerlaw(args) -> int:
    from .._csv import read_columns
    from ..fit import fit_power_law

    if len(set(args.x_col)) != len(args.x_col) or args.y_col in args.x_col:
        raise ValueError("Each --x-col must be a different column, and none may be the --y-col.")
    t = read_columns(args.csv, [args.y_col, *args.x_col], numeric=[args.y_col, *args.x_col])
    fit = fit_power_law(t[args.y_col], inputs={c: t[c] for c in args.x_col}, y_name=args.y_col, n_boot=args.bootstrap)
    out = {"coef": fit.values["coef"], "exponents": {c: fit.values[f"exp_{c}"] for c in args.x_col},
           "n_points": fit.n_points, "ci": {k: list(v) for k, v in fit.ci.items()},
           "goodness": {"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    terms = " * ".join(f"{c}^{fit.values[f'exp_{c}']:.3f}" for c in args.x_col)
    print(f"{args.y_col} = {fit.values['coef']:.4g} * {terms}  ({fit.n_points} points, R^2 {fit.r2_log:.3f} in logs)")
    for c in args.x_col:
        lo, hi = fit.ci.get(f"exp_{c}", (None, None))
        if lo is not None:
            print(f"  exponent of {c}: 95% CI {lo:.3f} to {hi:.3f}")
    return 0


def _cmd_fit_curve(args) -> int:
    from .._csv import read_columns
    from ..errors import InsufficientDataError
    from ..fit.curves import PROFILED_LAWS, Schedule, backtest_curve, fit_curve, predict_curve

    law = args.curve_law
    if law in ("tissue", "multipower") and not args.lr_col:
        raise ValueError(f"--law {law} takes the learning-rate schedule as input: give --lr-col.")
    if args.run_col and not args.lr_col:
        raise ValueError("--run-col fits several runs with one schedule-aware law: give --lr-col too.")
    if args.run_col and law == "power":
        raise ValueError("--law power fits one run; several runs (--run-col) share a law only through their "
                         "schedules: use --law tissue or multipower.")
    if args.warmup_steps is not None and not (math.isfinite(args.warmup_steps) and args.warmup_steps >= 0):
        raise ValueError(f"--warmup-steps must be a finite number of steps >= 0; got {args.warmup_steps:g}.")
    if args.predict_at is not None and not (math.isfinite(args.predict_at) and args.predict_at > 0):
        raise ValueError(f"--predict-at must be a step: a finite number > 0; got {args.predict_at:g}.")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be a number of resamples >= 0 (0: no intervals); got {args.bootstrap}.")
    if args.run_col and args.run_col in (args.step_col, args.lr_col, args.loss_col):
        raise ValueError(f"The '--run-col' option names the column {args.run_col!r}, which is also the step, learning-"
                         "rate or loss column: give the column that names each row's run.")
    if args.predict_run is not None and not args.run_col:
        raise ValueError("--predict-run names a run of --run-col; give --run-col.")
    num = [args.step_col] + ([args.lr_col] if args.lr_col else [])
    t = read_columns(args.csv, [*num, args.loss_col] + ([args.run_col] if args.run_col else []), numeric=num)
    loss_all = _losses_with_divergence(t[args.loss_col], args.loss_col, args.csv)
    has = [not math.isnan(v) for v in loss_all]
    if not args.lr_col and not all(has):
        line = has.index(False) + 2
        raise ValueError(f"Column {args.loss_col!r}, line {line} of {args.csv!r}: the loss is empty or not finite. "
                         "Remove the row (rows without a loss are only meaningful with --lr-col, as the planned "
                         "schedule ahead).")
    steps = [s_ for s_, h in zip(t[args.step_col], has) if h]
    loss = [v for v, h in zip(loss_all, has) if h]
    lr = [v for v, h in zip(t[args.lr_col], has) if h] if args.lr_col else None
    kw: dict = {}
    target = None
    if args.run_col:
        labels = [str(v) for v in t[args.run_col]]
        runs = list(dict.fromkeys(labels))
        kw["schedules"] = {
            name: Schedule([s_ for s_, r in zip(t[args.step_col], labels) if r == name],
                           [v for v, r in zip(t[args.lr_col], labels) if r == name]) for name in runs}
        kw["run"] = [r for r, h in zip(labels, has) if h]
        if args.predict_run is not None and args.predict_run not in runs:
            raise ValueError(f"--predict-run {args.predict_run!r} is not a run of column {args.run_col!r}; runs: "
                             f"{', '.join(runs)}.")
        target = args.predict_run if args.predict_run is not None else runs[-1]
    elif args.lr_col:
        kw["schedule"] = Schedule(t[args.step_col], t[args.lr_col])
        kw["lr"] = lr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fit's warnings are in fit.warnings; the backtest's refit repeats them
        fit = fit_curve(steps, loss, law=law, n_boot=args.bootstrap, warmup_steps=args.warmup_steps, **kw)
        names = {"y_inf": "L_inf", "alpha": "b"} if fit.kind == "power" else {}
        out = {"schema": "batchlaw.fit.curve/2", "law": fit.kind,
               **{names.get(k, k): v for k, v in fit.values.items()}, "n_points": fit.n_points,
               "ci": {names.get(k, k): list(v) for k, v in fit.ci.items()},
               "goodness": {"rmse_log": fit.rmse_log, "r2_log": fit.r2_log}, "bootstrap_block": fit.block,
               "warnings": list(fit.warnings)}
        out["runs"] = [str(r) for r in fit.run_names] if args.run_col else []
        if args.predict_at is not None:
            out["prediction"] = predict_curve(fit, args.predict_at, run=target)
        if args.run_col:
            out["backtest"] = {"error": "not run for several runs: compare --predict-at with a run whose final loss "
                                        "you know, or backtest each run alone"}
        else:
            try:
                out["backtest"] = backtest_curve(steps, loss, lr=lr, law=law, n_boot=min(args.bootstrap, 500),
                                                 warmup_steps=args.warmup_steps)
            except InsufficientDataError as err:
                out["backtest"] = {"error": str(err)}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    runs_text = f" ({len(fit.run_names)} runs: {', '.join(map(str, fit.run_names))})" if args.run_col else ""
    if fit.kind == "power":
        print(f"L(t) = L_inf + a t^-b from {fit.n_points} points: L_inf = {_ci_text(fit, 'y_inf')}, "
              f"a = {_ci_text(fit, 'a')}, b = {_ci_text(fit, 'alpha')}")
    elif fit.kind == "tissue":
        print(f"L = L0 + A S1^-alpha - C S2 (Tissue et al. 2024) from {fit.n_points} points{runs_text}: "
              f"L0 = {_ci_text(fit, 'L0')}, A = {_ci_text(fit, 'A')}, alpha = {_ci_text(fit, 'alpha')}, "
              f"C = {_ci_text(fit, 'C')}")
    else:
        print(f"multi-power law (Luo et al. 2025) from {fit.n_points} points{runs_text}: "
              + ", ".join(f"{k} = {_ci_text(fit, k)}" for k in fit.values))
        print(f"  drop shape: {len(fit.profile_thetas)} of 9 fits with beta, gamma pinned on a grid match the points "
              "as well (the spread of their predictions is in the interval)")
    profiled = "; predictions also by their profile likelihood" if fit.kind in PROFILED_LAWS else ""
    if fit.boot:
        print(f"  intervals: moving-block bootstrap over the curve, blocks of {fit.block} points{profiled}")
    else:
        print("  no intervals (--bootstrap 0)")
    for w in fit.warnings:
        print(f"  warning: {w}")
    if "prediction" in out:
        pr = out["prediction"]
        of = f" of run {pr['run']}" if "run" in pr else ""
        lo, hi = pr["interval"]
        iv = "no interval: --bootstrap 0" if lo is None else f"95% predictive interval {lo:.4f} to {hi:.4f}"
        print(f"predicted loss at step {pr['step']:g}{of}: {pr['loss']:.4f} ({iv})")
        if "warning" in pr:
            print(f"  warning: {pr['warning']}")
    bt = out["backtest"]
    if "error" not in bt:
        where = "" if bt["inside"] is None else f"; {'inside' if bt['inside'] else 'outside'} the interval"
        print(f"backtest: fitted on the first {bt['fraction']:.0%} ({bt['fit_points']} points), predicted the final "
              f"loss {bt['final_loss']:.4f} as {bt['predicted']:.4f} ({bt['rel_error']:+.2%}{where})")
    else:
        print(f"backtest: {bt['error']}")
    return 0
