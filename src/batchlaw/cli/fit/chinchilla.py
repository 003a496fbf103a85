"""``batchlaw fit chinchilla``: L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, Approach 3),
with the compute-optimal and inference-aware allocations."""

from __future__ import annotations

import json

from ..._format import fmt_num
from ._common import _ci_text


def add_parser(fsub) -> None:
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


def _finite(x):
    """``float(x)``, or ``None`` (JSON null: unbounded) when it is not finite."""
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


def _cmd_fit_chinchilla(args) -> int:
    from ..._csv import read_columns
    from ...fit import compute_optimal, fit_chinchilla, inference_optimal

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
