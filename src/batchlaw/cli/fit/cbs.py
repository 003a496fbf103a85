"""``batchlaw fit cbs``: S(B) = S_min (1 + B_crit/B) (McCandlish et al. 2018) fitted to steps to target, from
any CSV or a sweep's trials.csv, read by the sweep's own rule for runs that did not reach the target."""

from __future__ import annotations

import json
import math

from ..._format import fmt_count


def add_parser(fsub) -> None:
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
    from ..._csv import read_columns, read_header
    from ...sweep.analysis import median_over_seeds, seed_lower_bound

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
    from ...sweep.analysis import censored_notes

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
    from ...errors import InsufficientDataError
    from ...fit import fit_steps_law

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
