"""What a run will take on 1, 2, ... N GPUs, and at what cost, through the steps-vs-batch law.

For each GPU count ``g`` the global batch is ``B = g * micro_batch * accumulation`` sequences.
The examples needed to reach the target follow ``E(B) = E_min (1 + B / B_crit)`` and the steps
``S(B) = E(B) / B = S_min (1 + B_crit / B)`` (McCandlish et al. 2018, eq. 2.11). ``E_min`` comes
from the data budget: ``tokens`` is what the run needs at ``reference_batch`` (default: the
smallest global batch planned), so ``E_min = tokens / (1 + B_ref / B_crit)``.

Time per step: the tokens of one step over the cluster's throughput (``g`` times the per-GPU
tokens/s), plus communication, either a fraction of compute time or one ring all-reduce of the
gradients per optimizer step, ``2 (g - 1)/g * grad_bytes / bandwidth``. Efficiency is the speed-up
over the smallest GPU count divided by the ratio of GPU counts (1 = perfect scaling).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._format import fmt_num
from .._validation import check_positive_float, check_positive_int, check_probability

__all__ = ["PlanRow", "Plan", "plan_run"]


@dataclass(frozen=True)
class PlanRow:
    """One GPU count of a :class:`Plan`: batch, steps, time, cost and efficiency (batches in sequences)."""

    gpus: int
    global_batch: int  # sequences
    global_batch_tokens: int
    accumulation: int
    steps: float
    tokens: float
    step_time_s: float | None
    wall_clock_h: float | None
    gpu_hours: float | None
    cost: float | None
    efficiency: float  # vs perfect scaling from the smallest count (compute-only without throughput)
    over_critical: bool
    steps_vs_min: float  # S(B) / S_min


@dataclass(frozen=True)
class Plan:
    """The result of :func:`plan_run`: one :class:`PlanRow` per GPU count, the recommendation and the doubling verdicts."""

    rows: list[PlanRow]
    b_crit: float  # sequences
    e_min_tokens: float
    s_min: float
    seq_len: int
    recommended: int | None
    reason: str
    doubling: list[dict]

    def to_dict(self) -> dict:
        return {"b_crit": self.b_crit, "b_crit_tokens": self.b_crit * self.seq_len, "s_min": self.s_min,
                "e_min_tokens": self.e_min_tokens, "seq_len": self.seq_len,
                "rows": [r.__dict__ for r in self.rows], "recommended_gpus": self.recommended,
                "reason": self.reason, "doubling": self.doubling}

    def table(self) -> str:
        head = (f"{'GPUs':>5} {'global batch':>13} {'accum':>5} {'steps':>10} {'S/S_min':>7} {'wall-clock':>11} "
                f"{'GPU-hours':>10} {'cost':>10} {'efficiency':>10}  note")
        lines = [head]
        for r in self.rows:
            wall = "-" if r.wall_clock_h is None else f"{r.wall_clock_h:.1f} h"
            note = "over B_crit: diminishing returns" if r.over_critical else ""
            eff = f"{r.efficiency:.0%}"
            lines.append(f"{r.gpus:>5} {r.global_batch:>13,} {r.accumulation:>5} {fmt_num(r.steps):>10} "
                         f"{r.steps_vs_min:>7.2f} {wall:>11} {fmt_num(r.gpu_hours):>10} {fmt_num(r.cost):>10} {eff:>10}  {note}")
        return "\n".join(lines)


def plan_run(
    *,
    gpus: list[int],
    b_crit: float,
    tokens: float,
    seq_len: int,
    micro_batch: int,
    accumulation: int = 1,
    reference_batch: float | None = None,
    tokens_per_sec_per_gpu: float | None = None,
    comm_overhead: float = 0.0,
    grad_bytes: float | None = None,
    bandwidth_bytes_per_s: float | None = None,
    price_per_gpu_hour: float | None = None,
    min_efficiency: float = 0.7,
) -> Plan:
    """Plan a run for each GPU count (batch sizes in sequences of ``seq_len`` tokens).

    Args:
        gpus: GPU counts to compare.
        b_crit: critical batch size in sequences.
        tokens: training tokens the run needs at ``reference_batch``.
        seq_len: tokens per sequence.
        micro_batch: sequences per GPU per micro-batch.
        accumulation: micro-batches per optimizer step.
        reference_batch: global batch (sequences) at which ``tokens`` holds (default: smallest planned).
        tokens_per_sec_per_gpu: training throughput of one GPU (for wall-clock and cost).
        comm_overhead: communication as a fraction of compute time (used when no all-reduce model).
        grad_bytes: all-reduce model: bytes of gradients (with ``bandwidth_bytes_per_s``).
        bandwidth_bytes_per_s: all-reduce model: bus bandwidth per GPU, bytes/s (with ``grad_bytes``).
        price_per_gpu_hour: for the cost column.
        min_efficiency: the recommendation is the largest GPU count whose efficiency is at least this.
    """
    if not gpus:
        raise ValueError("The 'gpus' parameter must list at least one GPU count.")
    gpus = sorted({check_positive_int("gpus", g) for g in gpus})
    b_crit = check_positive_float("b_crit", b_crit)
    tokens = check_positive_float("tokens", tokens)
    seq_len = check_positive_int("seq_len", seq_len)
    micro_batch = check_positive_int("micro_batch", micro_batch)
    accumulation = check_positive_int("accumulation", accumulation)
    comm_overhead = check_positive_float("comm_overhead", comm_overhead, allow_zero=True)
    min_efficiency = check_probability("min_efficiency", min_efficiency, open_high=False)
    tps = None if tokens_per_sec_per_gpu is None else check_positive_float("tokens_per_sec_per_gpu", tokens_per_sec_per_gpu)
    price = None if price_per_gpu_hour is None else check_positive_float("price_per_gpu_hour", price_per_gpu_hour, allow_zero=True)
    if (grad_bytes is None) != (bandwidth_bytes_per_s is None):
        raise ValueError("Give both 'grad_bytes' and 'bandwidth_bytes_per_s' for the all-reduce model, or neither.")
    b_ref = reference_batch or gpus[0] * micro_batch * accumulation
    e_min = tokens / seq_len / (1.0 + b_ref / b_crit)  # sequences
    s_min = e_min / b_crit
    rows = []
    base_time = None
    for g in gpus:
        b = g * micro_batch * accumulation
        steps = s_min * (1.0 + b_crit / b)
        step_time = wall = gpu_h = cost = None
        if tps is not None:
            compute = b * seq_len / (g * tps)
            if grad_bytes is not None:
                comm = 2.0 * (g - 1) / g * check_positive_float("grad_bytes", grad_bytes) / check_positive_float(
                    "bandwidth_bytes_per_s", bandwidth_bytes_per_s)
            else:
                comm = comm_overhead * compute
            step_time = compute + comm
            wall = steps * step_time / 3600.0
            gpu_h = wall * g
            cost = None if price is None else gpu_h * price
        time_rel = wall if wall is not None else steps * b / g  # compute-only when no throughput is given
        if base_time is None:
            base_time = (time_rel, g)
        eff = (base_time[0] / time_rel) / (g / base_time[1])
        rows.append(PlanRow(g, b, b * seq_len, accumulation, steps, steps * b * seq_len, step_time, wall, gpu_h,
                            cost, eff, b > b_crit, steps / s_min))
    doubling = []
    for r0 in rows:
        for r1 in rows:
            if r1.gpus == 2 * r0.gpus:
                d = {"from": r0.gpus, "to": r1.gpus, "steps_ratio": r1.steps / r0.steps}
                if r0.wall_clock_h:
                    d["speedup"] = r0.wall_clock_h / r1.wall_clock_h
                    d["gpu_hours_ratio"] = r1.gpu_hours / r0.gpu_hours
                doubling.append(d)
    ok = [r for r in rows if r.efficiency >= min_efficiency]
    recommended = ok[-1].gpus if ok else rows[0].gpus
    rec_row = next(r for r in rows if r.gpus == recommended)
    reason = (f"{recommended} GPUs: the largest count that keeps at least {min_efficiency:.0%} of perfect scaling "
              f"(global batch {rec_row.global_batch:,} sequences vs B_crit = {fmt_num(b_crit)}).")
    return Plan(rows, b_crit, e_min * seq_len, s_min, seq_len, recommended, reason, doubling)
