"""The batch controller against the constant-batch frontier, one workload at a time (CPU), through
``batchlaw schedule compare``'s own loop and analysis.

The frontier (constant batches ``small * 2^j`` to the target, same LR rule and cap, same data
stream per seed) is trained once by :func:`~batchlaw.schedule.compare.compare_schedules` and cached;
the controller (the ``controller`` entry of the comparison, with ``--set`` overriding its settings)
then trains from the same initialisations with :func:`~batchlaw.schedule.compare.train_to_target`,
and :func:`~batchlaw.schedule.compare_analysis.analyse_comparison` judges it as the comparison does:
Pareto gain ``1 - S / S_frontier(1.1 E)`` per seed against that seed's frontier, with ``S`` and ``E``
the trunk's steps and examples **plus the branches'**, a Student-t 95% interval over seeds; the
branches' share; the held-out loss at the common budget minus the best constant batch's.

Usage::

    PYTHONPATH=src python bench/controller_bench.py nqm [--seeds 0,1,2] [--set margin=0.1 ...] [--json out.json]
    PYTHONPATH=src python bench/controller_bench.py bytemlp
    PYTHONPATH=src python bench/controller_bench.py bytegpt
    PYTHONPATH=src python bench/controller_bench.py nqm --budget 13600   # every run trained to a fixed budget

Frontier runs are cached in ``bench/.controller_frontier_<workload>_<seeds>.json`` (delete to rerun).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from batchlaw.schedule import ConstantBatch, LRSchedule
from batchlaw.schedule.compare import CompareConfig, compare_schedules, train_to_target
from batchlaw.schedule.compare_analysis import analyse_comparison
from batchlaw.schedule.compare_registry import CompareContext, controller_factory
from batchlaw.schedule.frontier import mean_interval
from batchlaw.workloads import get_workload

#: The settings of ``bench/schedule_compare.sh``.
WORKLOADS = {
    "nqm": dict(workload="nqm", workload_kwargs={"dim": 100, "c_exponent": 0.5}, target_loss=0.05, small_batch=8,
                large_batch=1024, lr=0.066, lr_rule="linear", eval_every=8, max_examples=100_000),
    "bytemlp": dict(workload="bytemlp", target_loss=2.1, small_batch=8, large_batch=512, lr=2e-3, eval_every=1024,
                    max_examples=400_000),
    "bytegpt": dict(workload="bytegpt", workload_kwargs={"size": "tiny"}, target_loss=2.3, small_batch=4,
                    large_batch=32, lr=2e-3, eval_every=256, max_examples=60_000),
}


def frontier(name: str, seeds: list[int]) -> dict:
    """The comparison of the constant batches alone (cached): its config, LR cap and frontier runs."""
    cache = Path(__file__).with_name(f".controller_frontier_{name}_{'-'.join(map(str, seeds))}.json")
    if cache.exists():
        return json.loads(cache.read_text())
    cfg = CompareConfig(**WORKLOADS[name], seeds=tuple(seeds), schedules=("constant_small",))
    t0 = time.perf_counter()
    doc = compare_schedules(cfg, progress=True)
    print(f"frontier trained in {time.perf_counter() - t0:.0f} s", flush=True)
    cache.write_text(json.dumps(doc))
    return doc


def context(name: str, doc: dict, seeds: list[int]) -> CompareContext:
    """The comparison's context, as ``compare_schedules`` builds it for its schedules."""
    c = doc["config"]
    cfg = CompareConfig(**WORKLOADS[name], seeds=tuple(seeds))
    ref = next(r for r in doc["frontier"]["points"][0]["runs"] if r["seed"] == seeds[0])
    return CompareContext(cfg=cfg, workload=get_workload(cfg.workload, **cfg.workload_kwargs), lr=c["lr"],
                          lr_rule=c["lr_rule"], lr_cap=doc["lr_cap"]["lr"],
                          reference_examples=ref["examples"] or cfg.max_examples)


def race(name: str, seeds: list[int], settings: dict) -> dict:
    doc = frontier(name, seeds)
    ctx = context(name, doc, seeds)
    cfg, wl = ctx.cfg, ctx.workload
    builder = controller_factory(ctx, **settings)
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        r = {"seed": seed, **train_to_target(wl, builder(), seed=seed, target_loss=cfg.target_loss,
                                             max_examples=cfg.max_examples, eval_every=cfg.eval_every,
                                             monitor_micro=True, max_lr=ctx.lr_cap)}
        runs.append(r)
        b = r["branch"]
        print(f"  seed {seed}: {r['status']}, steps {r['steps']} (trunk {r['trunk_steps']}), examples {r['examples']} "
              f"(branches {b['examples']}, {b['steps']} steps), batches {[(s, x) for s, _, x in r['batches']]} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    front = {p["batch"]: p["runs"] for p in doc["frontier"]["points"]}
    a = analyse_comparison(grid=doc["config"]["frontier_batches"], frontier_runs=front, schedule_runs={"controller": runs},
                           constant={"constant_small": cfg.small_batch}, seeds=seeds, allowance=cfg.allowance,
                           tokens_per_example=wl.tokens_per_example)
    s = a["schedules"]["controller"]
    g, pen = s["pareto_gain"], s["loss_penalty"]
    print("frontier (batch, median examples, median steps):",
          [(p["batch"], round(p["median_examples"] or -1), round(p["median_steps"] or -1, 1))
           for p in doc["frontier"]["points"]])
    print(f"Pareto gain {_iv(g)}{' (' + g['bound'] + ' bound)' if g['bound'] else ''}, per seed "
          f"{[None if v is None else round(v, 3) for v in g['values']]}; branch share {_iv(s['branch_share'])}; "
          f"loss at {a['budget']['examples']:.0f} examples minus the best constant batch's: {_iv(pen)}")
    return {"workload": name, "settings": settings, "seeds": seeds, "lr_cap": doc["lr_cap"]["lr"],
            "frontier": [[p["batch"], p["median_examples"], p["median_steps"]] for p in doc["frontier"]["points"]],
            "controller": s, "budget": a["budget"]}


def fixed_budget(name: str, seeds: list[int], budget: int, settings: dict) -> None:
    """Every constant batch and the controller trained to ``budget`` examples (branches included): final losses."""
    doc = frontier(name, seeds)
    ctx = context(name, doc, seeds)
    cfg, wl, cap = ctx.cfg, ctx.workload, ctx.lr_cap
    cache = Path(__file__).with_name(f".controller_budget_{name}_{budget}.json")
    data = json.loads(cache.read_text()) if cache.exists() else {}
    for b in doc["config"]["frontier_batches"]:
        for seed in seeds:
            if f"{b}/{seed}" not in data:
                sched = ConstantBatch(b, base_batch=cfg.small_batch, lr=LRSchedule(ctx.lr), lr_rule=ctx.lr_rule,
                                      max_micro_batch=cfg.large_batch)
                r = train_to_target(wl, sched, seed=seed, target_loss=None, max_examples=budget,
                                    eval_every=cfg.eval_every, max_lr=cap)
                data[f"{b}/{seed}"] = r["final_loss"]
                cache.write_text(json.dumps(data))
        print(f"  constant {b}: final loss {_iv(mean_interval([data[f'{b}/{s}'] for s in seeds]))}", flush=True)
    ctx.reference_examples = budget  # the run knows its data budget
    builder = controller_factory(ctx, **settings)
    finals = []
    for seed in seeds:
        r = train_to_target(wl, builder(), seed=seed, target_loss=None, max_examples=budget, eval_every=cfg.eval_every,
                            monitor_micro=True, max_lr=cap)
        finals.append(r["final_loss"])
        print(f"  controller seed {seed}: final loss {r['final_loss']:.4f} after {r['curve'][-1][1]} examples "
              f"({r['branch']['examples']} in branches); batches {[(s, x) for s, _, x in r['batches']]}", flush=True)
    best = min(doc["config"]["frontier_batches"], key=lambda b: statistics.mean(data[f"{b}/{s}"] for s in seeds))
    diff = [f - data[f"{best}/{s}"] for f, s in zip(finals, seeds)]
    print(f"controller final loss {_iv(mean_interval(finals))} at {budget} examples; minus the best constant batch's "
          f"({best}, paired by seed): {_iv(mean_interval(diff))}")


def _iv(iv: dict) -> str:
    if iv["mean"] is None:
        return "-"
    lo, hi = iv["ci"]
    return f"{iv['mean']:.4g}" + ("" if lo is None else f" ({lo:.4g} to {hi:.4g})")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("workload", choices=sorted(WORKLOADS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--set", nargs="*", default=[], help="controller settings, e.g. margin=0.1 window=30")
    p.add_argument("--json", default=None, help="write the controller's runs (every decision) and verdict here")
    p.add_argument("--budget", type=int, default=None,
                   help="instead: train every run to this many examples and compare the final held-out loss")
    a = p.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    settings = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    if a.budget:
        return fixed_budget(a.workload, seeds, a.budget, settings)
    out = race(a.workload, seeds, settings)
    if a.json:
        Path(a.json).write_text(json.dumps(out, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
