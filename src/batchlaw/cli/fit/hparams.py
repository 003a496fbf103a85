"""``batchlaw fit hparams``: the optimal learning rate and batch size of each (N, D) from LR x batch
grids, and their power laws."""

from __future__ import annotations

import json

from ..._format import fmt_num
from ._common import _losses_with_divergence


def add_parser(fsub) -> None:
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


def _cmd_fit_hparams(args) -> int:
    from ..._csv import read_columns
    from ..._validation import check_positive_int
    from ...fit.hparams import find_optima, fit_hparam_laws

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
