"""The batch controller against the constant-batch frontier, on the built-in workloads (CPU).

For each workload: constant batches ``small * 2^j`` (same LR rule, same data stream per seed)
train to the target and give the frontier ``S(E)`` (mean steps and examples over seeds, the
Pareto-efficient points, log-log interpolation); then the controller trains from the same
initialisations. Its Pareto gain is ``1 - S / S_frontier(1.1 E)`` with ``E`` the trunk's examples
*plus the branches'*, per seed against the mean frontier, with a Student-t 95% interval over
seeds. Also printed: branch examples as a share of the run, and the held-out loss of each run at
the smallest examples budget all runs reached (the fixed-budget comparison).

Usage::

    PYTHONPATH=src python bench/controller_bench.py nqm [--seeds 0,1,2] [--set margin=0.1 ...] [--no-branch]
    PYTHONPATH=src python bench/controller_bench.py bytemlp
    PYTHONPATH=src python bench/controller_bench.py bytegpt

Frontier runs are cached in ``bench/.controller_frontier_<workload>.json`` (delete to rerun).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from batchlaw.schedule import BatchController, ConstantBatch
from batchlaw.schedule.controller_run import train_with_controller
from batchlaw.workloads import get_workload

#: The settings of ``bench/schedule_compare.sh`` (the frontier yardstick of ``batchlaw schedule compare``).
WORKLOADS = {
    "nqm": dict(kwargs={"dim": 100, "c_exponent": 0.5}, target=0.05, small=8, large=1024, lr=0.066, rule="linear",
                max_lr=1.5, eval_every=8, max_examples=100_000),
    "bytemlp": dict(kwargs={}, target=2.1, small=8, large=512, lr=2e-3, rule="sqrt", max_lr=None, eval_every=1024,
                    max_examples=400_000),
    "bytegpt": dict(kwargs={"size": "tiny"}, target=2.3, small=4, large=32, lr=2e-3, rule="sqrt", max_lr=None,
                    eval_every=256, max_examples=60_000),
}
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def frontier_points(runs_by_batch: dict) -> list[tuple[float, float, int]]:
    """Mean (examples, steps) per constant batch over seeds that reached; the Pareto-efficient ones."""
    pts = []
    for b, runs in runs_by_batch.items():
        ok = [r for r in runs if r["steps"] is not None]
        if len(ok) == len(runs):
            pts.append((statistics.mean(r["examples"] for r in ok), statistics.mean(r["steps"] for r in ok), int(b)))
    pts.sort()
    front, best = [], math.inf
    for e, s, b in pts:
        if s < best:
            front.append((e, s, b))
            best = s
    return front


def steps_at(front, examples: float) -> tuple[float, str | None]:
    """``S_frontier(E)``, log-log between points; a bound beyond the ends."""
    if examples <= front[0][0]:
        return front[0][1], "lower"
    if examples >= front[-1][0]:
        return front[-1][1], "upper"
    for (e0, s0, _), (e1, s1, _) in zip(front, front[1:]):
        if e0 <= examples <= e1:
            f = math.log(examples / e0) / math.log(e1 / e0)
            return math.exp(math.log(s0) + f * math.log(s1 / s0)), None
    raise AssertionError


def interval(values):
    n = len(values)
    m = statistics.mean(values)
    if n < 2:
        return m, (math.nan, math.nan)
    h = T95.get(n - 1, 1.96) * statistics.stdev(values) / math.sqrt(n)
    return m, (m - h, m + h)


def loss_at(curve, examples: float) -> float:
    """Held-out loss at ``examples`` on a run's curve ``[[steps, examples, s, loss], ...]`` (linear)."""
    for (s0, e0, _, l0), (s1, e1, _, l1) in zip(curve, curve[1:]):
        if e0 <= examples <= e1:
            return l0 + (examples - e0) / (e1 - e0) * (l1 - l0) if e1 > e0 else l1
    return math.nan


def run_frontier(name: str, cfg: dict, seeds, wl) -> dict:
    cache = Path(__file__).with_name(f".controller_frontier_{name}.json")
    data = json.loads(cache.read_text()) if cache.exists() else {}
    b = cfg["small"]
    while b <= cfg["large"]:
        for seed in seeds:
            key = f"{b}/{seed}"
            if key in data:
                continue
            t0 = time.perf_counter()
            sched = ConstantBatch(b, base_batch=cfg["small"], lr=cfg["lr"], lr_rule=cfg["rule"], max_micro_batch=b,
                                  min_accumulation=1)
            ctl = _CappedConstant(sched, cfg["max_lr"])
            r = train_with_controller(wl, ctl, seed=seed, target_loss=cfg["target"], max_examples=cfg["max_examples"],
                                      eval_every=cfg["eval_every"], branch=False)
            data[key] = {k: r[k] for k in ("steps", "examples", "status", "curve")}
            print(f"  constant {b} seed {seed}: {r['status']} steps {r['steps']} examples {r['examples']} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            cache.write_text(json.dumps(data))
        b *= 2
    out: dict = {}
    for key, r in data.items():
        bb, seed = key.split("/")
        if int(seed) in seeds:
            out.setdefault(int(bb), []).append({**r, "seed": int(seed)})
    return out


class _CappedConstant:
    """A constant batch through the controller's training loop (LR capped like the controller's)."""

    def __init__(self, sched, max_lr):
        self.s, self.max_lr = sched, max_lr
        self.branch_examples = self.branch_eval_examples = 0
        self.branch_seconds = 0.0

    def step(self, seen, monitor=None):
        from dataclasses import replace

        c = self.s.step(seen, monitor)
        return replace(c, lr=min(c.lr, self.max_lr)) if self.max_lr is not None else c

    def bind_workload(self, *a, **k):
        return self

    def unbind(self):
        return None

    def report(self):
        return {}


def fixed_budget(name, cfg, seeds, wl, budget, settings, branch) -> None:
    """Every constant batch and the controller trained to ``budget`` trunk examples: final held-out losses."""
    cache = Path(__file__).with_name(f".controller_budget_{name}_{budget}.json")
    data = json.loads(cache.read_text()) if cache.exists() else {}
    b = cfg["small"]
    while b <= cfg["large"]:
        for seed in seeds:
            if f"{b}/{seed}" not in data:
                sched = ConstantBatch(b, base_batch=cfg["small"], lr=cfg["lr"], lr_rule=cfg["rule"], max_micro_batch=b,
                                      min_accumulation=1)
                r = train_with_controller(wl, _CappedConstant(sched, cfg["max_lr"]), seed=seed, target_loss=None,
                                          max_examples=budget, eval_every=cfg["eval_every"], branch=False)
                data[f"{b}/{seed}"] = r["final_loss"]
                cache.write_text(json.dumps(data))
        print(f"  constant {b}: final loss {statistics.mean(data[f'{b}/{s}'] for s in seeds):.4f} "
              f"{[round(data[f'{b}/{s}'], 4) for s in seeds]}", flush=True)
        b *= 2
    finals = []
    for seed in seeds:
        ctl = BatchController(cfg["small"], cfg["lr"], max_batch=cfg["large"], lr_rule=cfg["rule"], max_lr=cfg["max_lr"],
                              max_micro_batch=cfg["large"], seed=seed, **settings)
        r = train_with_controller(wl, ctl, seed=seed, target_loss=None, max_examples=budget,
                                  eval_every=cfg["eval_every"], branch=branch)
        finals.append(r["final_loss"])
        print(f"  controller seed {seed}: final loss {r['final_loss']:.4f} after {r['curve'][-1][1]} trunk examples "
              f"and {r['branch_examples']} branch examples; batches {[(s, bb) for s, _, bb in r['batches']]}", flush=True)
    m, ci = interval(finals)
    print(f"controller final loss {m:.4f} (95% CI {ci[0]:.4f} to {ci[1]:.4f}) at {budget} examples")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("workload", choices=sorted(WORKLOADS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--set", nargs="*", default=[], help="controller settings, e.g. margin=0.1 confidence=0.8")
    p.add_argument("--no-branch", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--budget", type=int, default=None,
                   help="instead: train every run to this many examples and compare the final held-out loss")
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg = WORKLOADS[a.workload]
    seeds = [int(s) for s in a.seeds.split(",")]
    settings = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    wl = get_workload(a.workload, **cfg["kwargs"])
    if a.budget:
        return fixed_budget(a.workload, cfg, seeds, wl, a.budget, settings, not a.no_branch)
    runs = run_frontier(a.workload, cfg, seeds, wl)
    front = frontier_points(runs)
    print("frontier (examples, steps, batch):", [(round(e), round(s, 1), b) for e, s, b in front])
    results = []
    for seed in seeds:
        t0 = time.perf_counter()
        ctl = BatchController(cfg["small"], cfg["lr"], max_batch=cfg["large"], lr_rule=cfg["rule"], max_lr=cfg["max_lr"],
                              max_micro_batch=cfg["large"], seed=seed, **settings)
        r = train_with_controller(wl, ctl, seed=seed, target_loss=cfg["target"], max_examples=cfg["max_examples"],
                                  eval_every=cfg["eval_every"], branch=not a.no_branch)
        r["seed"] = seed
        if r["steps"] is not None:
            e = r["examples_with_branches"]
            s_f, bound = steps_at(front, 1.1 * e)
            r["gain"], r["gain_bound"] = 1 - r["steps"] / s_f, bound
            own = frontier_points({b: [x for x in rs if x["seed"] == seed] for b, rs in runs.items()})
            s_own, bound_own = steps_at(own, 1.1 * e)  # against this seed's own constant batches (paired)
            r["gain_own"], r["gain_own_bound"] = 1 - r["steps"] / s_own, bound_own
            r["branch_share"] = r["branch_examples"] / e
        results.append(r)
        print(f"  controller seed {seed}: {r['status']} steps {r['steps']} examples {r['examples']} "
              f"branch {r['branch_examples']} gain {r.get('gain')} {r.get('gain_bound') or ''} "
              f"own-seed gain {r.get('gain_own')} {r.get('gain_own_bound') or ''} "
              f"batches {[(s, b) for s, _, b in r['batches']]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    gains = [r["gain"] for r in results if "gain" in r]
    if len(gains) == len(results):
        m, ci = interval(gains)
        m2, ci2 = interval([r["gain_own"] for r in results])
        print(f"Pareto gain {m:.3f} (95% CI {ci[0]:.3f} to {ci[1]:.3f}) against the mean frontier, {m2:.3f} "
              f"({ci2[0]:.3f} to {ci2[1]:.3f}) against each seed's own; branch share "
              f"{statistics.mean(r['branch_share'] for r in results):.3%}")
    # fixed budget: the smallest examples at which every run (constant batches and controller) has a curve point
    budget = min(min(r["curve"][-1][1] for r in rs) for rs in runs.values())
    budget = min(budget, min(r["curve"][-1][1] for r in results))
    best = min((statistics.mean(loss_at(r["curve"], budget) for r in rs), b) for b, rs in runs.items())
    mine = statistics.mean(loss_at(r["curve"], budget) for r in results)
    print(f"at {budget:.0f} examples: controller loss {mine:.4f}, best constant batch {best[1]}: {best[0]:.4f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"workload": a.workload, "settings": settings, "frontier": front,
                                            "runs": [{**{k: v for k, v in r.items() if k != "report"},
                                                     "decisions": r["report"]["decisions"]} for r in results]},
                                           separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
