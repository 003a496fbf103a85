"""What a run will take on 1, 2, ... N GPUs, and which limit binds, through the steps-vs-batch law.

For ``g`` GPUs the global batch is ``B = g * micro_batch * accumulation`` examples (sequences of
``seq_len`` tokens). The steps to the target follow ``S(B) = S_min (1 + B_crit / B)`` and the
examples ``E(B) = E_min (1 + B / B_crit)`` (McCandlish et al. 2018, eq. 2.11). ``E_min`` comes from
the data budget when one is given: ``tokens`` is what the run needs at ``reference_batch``, so
``E_min = tokens / seq_len / (1 + B_ref / B_crit)``. Without it the plan still answers the ratio
questions (speed-up, GPU-hour factor), which need no ``S_min``.

Step time on ``g`` GPUs: the compute of ``accumulation`` micro-batches (from a measured profile,
or tokens/s per GPU) plus the part of the gradient all-reduce not hidden behind backward (ring
model, :mod:`batchlaw.plan.comm`). Time to target ``T(g) = S(B_g) * step(g)``.

Efficiency is against perfect linear scaling from one GPU at the same micro-batch:
``eff(g) = T(1) / (g T(g))``. A doubling ``g -> 2g`` is judged by what it buys against a perfect
doubling, ``T(g) / (2 T(2g))``: the table's "from g/2" column and the text's verdict are that number. It does not depend on which GPU counts are listed, and it falls
with ``g``, so the recommendation (the largest ``g`` with ``eff(g) >= min_efficiency``) is found over
all GPU counts, whatever the list. The loss of efficiency splits into a statistical part
(``S(B_1) / (g S(B_g))``: beyond ``B_crit`` more batch buys few steps) and a systems part
(``compute(1) / step(g)``: exposed communication); memory binds when the micro-batch does not fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .._format import fmt_num
from .._validation import check_choice, check_positive_float, check_positive_int, check_probability
from ..schedule import linear_rule, sqrt_rule
from .comm import exposed_comm_time
from .profile_data import HardwareProfile

__all__ = ["PlanRow", "Plan", "plan_run", "throughput_from_flops", "UNITS", "LR_RULES"]

UNITS = ("sequences", "examples", "tokens")
LR_RULES = ("sqrt", "linear")
_BACKWARD_SHARE = 2.0 / 3.0  # backward ~ 2x forward FLOPs (Kaplan et al. 2020: 6N = 2N fwd + 4N bwd)
_MAX_GPUS = 1 << 24


def throughput_from_flops(peak_flops: float, mfu: float, params: float) -> float:
    """Tokens/s per GPU from peak FLOP/s, model FLOP utilisation and parameters: ``peak * mfu / (6 N)``.

    Examples:
        >>> throughput_from_flops(1e15, 0.5, 1e9)
        83333.33333333333

    References:
        Kaplan et al. 2020 (6N FLOPs per token); Chowdhery et al. 2022 (MFU).
    """
    peak = check_positive_float("peak_flops", peak_flops)
    mfu = check_probability("mfu", mfu, open_high=False)
    return peak * mfu / (6.0 * check_positive_float("params", params))


@dataclass(frozen=True)
class PlanRow:
    """One GPU count. Batch sizes in examples (sequences); ``*_tokens`` in tokens.

    ``steps``, ``tokens``, ``wall_clock_h``, ``gpu_hours`` and ``cost`` are ``None`` without a
    data budget (or, for times, without a throughput); ``speedup_vs_1`` and ``efficiency`` always exist.
    """

    gpus: int
    global_batch: int
    global_batch_tokens: int
    micro_batch: int
    accumulation: int
    steps_vs_min: float  # S(B) / S_min
    steps: float | None
    tokens: float | None
    step_time_s: float | None
    comm_time_s: float | None  # exposed all-reduce per step
    wall_clock_h: float | None
    gpu_hours: float | None
    cost: float | None
    speedup_vs_1: float  # T(1) / T(g)
    efficiency: float  # speedup_vs_1 / g: against perfect linear scaling
    efficiency_range: tuple[float, float] | None  # over the B_crit interval
    doubling_efficiency: float | None  # T(g/2) / (2 T(g)): the last doubling against a perfect one
    statistical_efficiency: float
    systems_efficiency: float
    limit: str  # "statistical", "communication" or "memory"
    over_critical: bool
    within_target: bool  # efficiency >= min_efficiency
    lr: float | None


@dataclass
class Plan:
    """The plan: rows per listed GPU count, the doubling answers and the recommendation."""

    rows: list[PlanRow]
    b_crit: float  # examples
    b_crit_ci: tuple[float, float] | None
    e_min_tokens: float | None
    s_min: float | None
    seq_len: int
    unit: str
    min_efficiency: float
    recommended: int
    recommended_range: tuple[int, int] | None
    recommended_listed: int | None
    reason: str
    doubling: list[dict]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"b_crit": self.b_crit, "b_crit_tokens": self.b_crit * self.seq_len,
                "b_crit_ci": None if self.b_crit_ci is None else list(self.b_crit_ci),
                "s_min": self.s_min, "e_min_tokens": self.e_min_tokens, "seq_len": self.seq_len, "unit": self.unit,
                "min_efficiency": self.min_efficiency, "rows": [asdict(r) for r in self.rows],
                "recommended_gpus": self.recommended,
                "recommended_gpus_range": None if self.recommended_range is None else list(self.recommended_range),
                "recommended_listed_gpus": self.recommended_listed, "reason": self.reason,
                "doubling": self.doubling, "notes": self.notes}

    def _batch(self, r: PlanRow) -> str:
        return f"{r.global_batch_tokens:,}" if self.unit == "tokens" else f"{r.global_batch:,}"

    def table(self) -> str:
        """A text table whose notes come from the same rows as :meth:`doubling_lines`."""
        unit = {"tokens": "tokens", "examples": "examples", "sequences": "seqs"}[self.unit]
        head = (f"{'GPUs':>5} {'batch (' + unit + ')':>16} {'micro x acc':>11} {'S/S_min':>7} {'steps':>9} "
                f"{'wall-clock':>10} {'GPU-hours':>9} {'cost':>9} {'speed-up':>8} {'efficiency':>15} "
                f"{'from g/2':>8}  limit")
        lines = [head]
        for r in self.rows:
            wall = "-" if r.wall_clock_h is None else f"{r.wall_clock_h:.3g} h"
            eff = f"{r.efficiency:.0%}"
            if r.efficiency_range is not None:
                eff = f"{eff} ({r.efficiency_range[0]:.0%}-{r.efficiency_range[1]:.0%})"
            ok = "ok" if r.within_target else f"below {self.min_efficiency:.0%}"
            dbl = "-" if r.doubling_efficiency is None else f"{r.doubling_efficiency:.0%}"
            lim = _limit_text(r, self.b_crit)
            lines.append(f"{r.gpus:>5} {self._batch(r):>16} {f'{r.micro_batch}x{r.accumulation}':>11} "
                         f"{_ratio(r.steps_vs_min):>7} {fmt_num(r.steps):>9} {wall:>10} {fmt_num(r.gpu_hours):>9} "
                         f"{fmt_num(r.cost):>9} {r.speedup_vs_1:>7.2f}x {eff:>15} {dbl:>8}  {ok}; {lim}")
        return "\n".join(lines)

    def doubling_lines(self) -> list[str]:
        """"g -> 2g GPUs: ..." sentences; the verdict is the table's "from g/2" column against
        ``min_efficiency`` (a doubling is worth it when it buys at least ``2 * min_efficiency``)."""
        out = []
        for d in self.doubling:
            line = (f"{d['from']} -> {d['to']} GPUs: {d['speedup']:.2f}x faster")
            if d.get("speedup_range"):
                lo, hi = d["speedup_range"]
                line += f" ({lo:.2f}-{hi:.2f}x over the B_crit interval)"
            line += f" for {d['gpu_hours_ratio']:.2f}x the GPU-hours; {d['steps_ratio']:.2f}x the steps"
            verdict = "worth it" if d["worth_it"] else "poor value"
            cmp = ">=" if d["worth_it"] else "<"
            out.append(f"{line}: {verdict} ({d['doubling_efficiency']:.0%} of a perfect doubling {cmp} "
                       f"{self.min_efficiency:.0%}; {d['limit_to']} limit at {d['to']}).")
        return out


def _ratio(x: float) -> str:
    return f"{x:.2f}" if x < 1e4 else f"{x:.3g}"


def _budget(tokens: float, seq_len: int, b_ref: float, b_crit: float, unit: str) -> tuple[float, float]:
    """``(S_min, E_min in tokens)`` from the data budget at the reference batch, refusing budgets that
    give less than one step: ``E_min = tokens / seq_len / (1 + B_ref / B_crit)`` examples and
    ``S_min = E_min / B_crit`` (McCandlish et al. 2018, eq. 2.11: ``E_min = B_crit S_min``)."""
    word = "examples" if unit == "examples" else "sequences"
    what = "examples" if unit == "examples" else "tokens"
    per_step = b_ref * seq_len
    if tokens < per_step:
        raise ValueError(
            f"The data budget 'tokens' (--tokens) = {fmt_num(tokens)} {what} is less than one step at the reference "
            f"batch ({fmt_num(b_ref)} {word}" + ("" if seq_len == 1 else f" x {seq_len:,} tokens") +
            f" = {fmt_num(per_step)} {what} per step): raise the budget or lower 'reference_batch' (--reference-batch).")
    e_min = tokens / seq_len / (1.0 + b_ref / b_crit)  # examples
    s_min = e_min / b_crit
    if s_min < 1:
        raise ValueError(
            f"The inputs give S_min = {fmt_num(s_min)} steps, fewer than one: B_crit = {fmt_num(b_crit)} {word} is "
            f"more than the {fmt_num(e_min)} {word} the whole run needs at its most efficient (E_min = tokens / "
            f"seq_len / (1 + B_ref / B_crit), with tokens = {fmt_num(tokens)} {what}" +
            ("" if seq_len == 1 else f", seq_len = {seq_len:,}") +
            f"). Check 'b_crit' (--b-crit) and the budget 'tokens' (--tokens).")
    return s_min, e_min * seq_len


def _check_finite(rows: list[PlanRow], doubling: list[dict]) -> None:
    """Refuse a plan with a non-finite or negative number: inputs at the edge of floating point."""
    for r in rows:
        for name, v in asdict(r).items():
            if isinstance(v, float) and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"The plan's {name} at {r.gpus} GPUs is {v!r}: an input is out of the range the "
                                 "model can compute (check B_crit, the budget and the throughput).")
    for d in doubling:
        for name in ("speedup", "doubling_efficiency", "steps_ratio", "gpu_hours_ratio"):
            if not math.isfinite(d[name]) or d[name] <= 0:
                raise ValueError(f"The plan's {name} from {d['from']} to {d['to']} GPUs is {d[name]!r}: an input is "
                                 "out of the range the model can compute (check B_crit and the throughput).")


def _limit_text(r: PlanRow, b_crit: float) -> str:
    if r.limit == "memory":
        return "memory: the micro-batch asked for does not fit"
    if r.limit == "communication":
        return f"communication ({1 - r.systems_efficiency:.0%} of the step)"
    return f"statistical (B = {r.global_batch / b_crit:.3g}x B_crit)"


class _Model:
    """Time to target vs GPU count at one B_crit (internal: shared by rows, doubling and search)."""

    def __init__(self, *, b_crit, seq_len, micro, accumulation, compute_s, comm, overlap, comm_overhead,
                 backward_s, memory_capped):
        self.b_crit, self.seq_len, self.micro, self.acc = b_crit, seq_len, micro, accumulation
        self.compute_s, self.comm, self.overlap, self.comm_overhead = compute_s, comm, overlap, comm_overhead
        self.backward_s, self.memory_capped = backward_s, memory_capped

    def batch(self, g: int) -> int:
        return g * self.micro * self.acc

    def steps_vs_min(self, g: int) -> float:
        return 1.0 + self.b_crit / self.batch(g)

    def comm_exposed(self, g: int) -> float:
        if self.compute_s is None:
            return 0.0
        if self.comm is not None:
            return exposed_comm_time(self.comm(g), self.backward_s, self.overlap)
        return self.comm_overhead * self.compute_s if g > 1 else 0.0

    def step_time(self, g: int) -> float:
        # relative units (per-GPU examples per step) when no throughput is known
        base = self.compute_s if self.compute_s is not None else float(self.micro * self.acc)
        return base + self.comm_exposed(g)

    def time(self, g: int) -> float:  # in units of S_min steps
        return self.steps_vs_min(g) * self.step_time(g)

    def efficiency(self, g: int) -> float:
        return self.time(1) / (g * self.time(g))

    def doubling_efficiency(self, g: int) -> float | None:
        """``T(g/2) / (2 T(g))`` (``g / 2`` may be fractional: the model is smooth in ``g``)."""
        return None if g < 2 else self.time(g / 2) / (2.0 * self.time(g))

    def stat_eff(self, g: int) -> float:
        return self.steps_vs_min(1) / (g * self.steps_vs_min(g))

    def largest_efficient(self, min_eff: float) -> int:
        """Largest g with eff(g) >= min_eff (eff falls with g: bisection over integers)."""
        if self.efficiency(_MAX_GPUS) >= min_eff:
            return _MAX_GPUS
        lo, hi = 1, _MAX_GPUS  # eff(1) = 1 >= min_eff; eff(hi) < min_eff
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.efficiency(mid) >= min_eff else (lo, mid)
        return lo

    def limit(self, g: int) -> str:
        if self.memory_capped:
            return "memory"
        stat_loss = 1.0 - self.stat_eff(g)
        comm_loss = self.comm_exposed(g) / self.step_time(g)
        return "communication" if comm_loss > stat_loss else "statistical"


def plan_run(
    *,
    gpus: list[int],
    b_crit: float,
    seq_len: int,
    micro_batch: int,
    tokens: float | None = None,
    accumulation: int = 1,
    reference_batch: float | None = None,
    tokens_per_sec_per_gpu: float | None = None,
    profile: HardwareProfile | None = None,
    comm_overhead: float = 0.0,
    grad_bytes: float | None = None,
    bandwidth_bytes_per_s: float | None = None,
    latency_s: float = 0.0,
    overlap: bool = True,
    price_per_gpu_hour: float | None = None,
    min_efficiency: float = 0.7,
    b_crit_ci: tuple[float, float] | None = None,
    lr: float | None = None,
    lr_rule: str = "sqrt",
    unit: str = "sequences",
) -> Plan:
    """Plan a data-parallel run for each GPU count and recommend one.

    Args:
        gpus: GPU counts to compare (order and set do not change the recommendation).
        b_crit: critical batch size in examples (sequences).
        seq_len: tokens per example (1 for non-sequence data).
        micro_batch: examples per GPU per micro-batch.
        tokens: training tokens the run needs at ``reference_batch``; ``None``: ratios only.
        accumulation: micro-batches per optimizer step.
        reference_batch: global batch (examples) at which ``tokens`` and ``lr`` hold (default: the
            global batch of the smallest GPU count listed).
        tokens_per_sec_per_gpu: training throughput of one GPU (constant in the micro-batch).
        profile: a measured profile: step time per micro-batch and the memory ceiling (overrides
            ``tokens_per_sec_per_gpu``).
        comm_overhead: communication as a fraction of compute time (without an all-reduce model).
        grad_bytes: bytes all-reduced per optimizer step (parameters x bytes per gradient element).
        bandwidth_bytes_per_s: ring bus bandwidth per GPU (see :data:`batchlaw.plan.comm.LINKS`).
        latency_s: seconds per ring step.
        overlap: whether the all-reduce overlaps the last micro-batch's backward.
        price_per_gpu_hour: for the cost column.
        min_efficiency: efficiency (against perfect linear scaling) the recommendation keeps.
        b_crit_ci: ``(lo, hi)`` interval of ``b_crit``: carried into ranges of efficiency and speed-up.
        lr: learning rate used at ``reference_batch``; each row then gets the rule's learning rate.
        lr_rule: ``"sqrt"`` (Adam, Malladi et al. 2022) or ``"linear"`` (SGD, Goyal et al. 2017).
        unit: how batch sizes are shown: ``"sequences"``, ``"examples"`` or ``"tokens"``.

    Returns:
        A :class:`Plan`.

    Raises:
        ValueError: any argument out of range, named with its value.

    Examples:
        >>> p = plan_run(gpus=[16, 32], b_crit=1000, seq_len=2048, micro_batch=128)
        >>> p.recommended, round(p.doubling[0]["speedup"], 3)
        (4, 1.196)

    References:
        McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", eq. 2.11.
    """
    if gpus is None or len(gpus) == 0:
        raise ValueError("The 'gpus' parameter must list at least one GPU count.")
    gpus = sorted({check_positive_int("gpus", g) for g in gpus})
    b_crit = check_positive_float("b_crit", b_crit)
    seq_len = check_positive_int("seq_len", seq_len)
    micro_batch = check_positive_int("micro_batch", micro_batch)
    accumulation = check_positive_int("accumulation", accumulation)
    tokens = None if tokens is None else check_positive_float("tokens", tokens)
    if reference_batch is not None:
        reference_batch = check_positive_float("reference_batch", reference_batch)
    comm_overhead = check_positive_float("comm_overhead", comm_overhead, allow_zero=True)
    latency_s = check_positive_float("latency_s", latency_s, allow_zero=True)
    min_efficiency = check_probability("min_efficiency", min_efficiency, open_high=False)
    tps = None if tokens_per_sec_per_gpu is None else check_positive_float("tokens_per_sec_per_gpu", tokens_per_sec_per_gpu)
    price = None if price_per_gpu_hour is None else check_positive_float("price_per_gpu_hour", price_per_gpu_hour, allow_zero=True)
    lr = None if lr is None else check_positive_float("lr", lr)
    lr_rule = check_choice("lr_rule", lr_rule, LR_RULES)
    unit = check_choice("unit", unit, UNITS)
    if (grad_bytes is None) != (bandwidth_bytes_per_s is None):
        raise ValueError("Give both 'grad_bytes' and 'bandwidth_bytes_per_s' for the all-reduce model, or neither.")
    if b_crit_ci is not None:
        lo, hi = (check_positive_float("b_crit_ci", v) for v in b_crit_ci)
        if not lo <= b_crit <= hi:
            raise ValueError(f"The 'b_crit_ci' interval must contain b_crit = {b_crit}. Got {b_crit_ci!r} instead.")
        b_crit_ci = (lo, hi)

    notes: list[str] = []
    micro, acc, memory_capped = micro_batch, accumulation, False
    compute_s = backward_s = None
    if profile is not None:
        fit = profile.max_micro_batch
        if fit is None:
            raise ValueError(f"The profile {profile.source!r} has no micro-batch that fitted in memory.")
        if micro > fit and profile.oom_micro_batch is None:
            raise ValueError(f"Micro-batch {micro} is beyond the profile {profile.source!r}, which stopped at {fit} "
                             "without running out of memory: profile up to it (batchlaw profile --max-batch).")
        if micro > fit:
            per_gpu = micro * acc
            micro, acc, memory_capped = fit, math.ceil(per_gpu / fit), True
            notes.append(f"memory: micro-batch {micro_batch} does not fit (largest that fitted: {fit}, first out of "
                         f"memory: {profile.oom_micro_batch}); planned as {micro} x {acc} accumulation steps.")
        step1 = profile.step_time(micro)
        compute_s, backward_s = acc * step1, _BACKWARD_SHARE * step1
    elif tps is not None:
        compute_s = micro * acc * seq_len / tps
        backward_s = _BACKWARD_SHARE * micro * seq_len / tps
    comm = None
    if grad_bytes is not None:
        gb = check_positive_float("grad_bytes", grad_bytes)
        bw = check_positive_float("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
        if compute_s is None:
            raise ValueError("The all-reduce model needs the compute time too: give a throughput "
                             "('tokens_per_sec_per_gpu') or a profile.")

        def comm(g, gb=gb, bw=bw):  # ring_allreduce_time's formula, smooth in g (g / 2 may be fractional)
            return 0.0 if g <= 1 else 2.0 * (g - 1) * latency_s + 2.0 * (g - 1) / g * gb / bw

    def model(bc):
        return _Model(b_crit=bc, seq_len=seq_len, micro=micro, accumulation=acc, compute_s=compute_s, comm=comm,
                      overlap=overlap, comm_overhead=comm_overhead, backward_s=backward_s or 0.0,
                      memory_capped=memory_capped)

    m = model(b_crit)
    ms = None if b_crit_ci is None else (model(b_crit_ci[0]), model(b_crit_ci[1]))
    b_ref = reference_batch if reference_batch is not None else m.batch(gpus[0])
    s_min = e_min_tokens = None
    if tokens is not None:
        s_min, e_min_tokens = _budget(tokens, seq_len, b_ref, b_crit, unit)

    rows = []
    for g in gpus:
        b = m.batch(g)
        steps = None if s_min is None else s_min * m.steps_vs_min(g)
        step_time = m.step_time(g) if compute_s is not None else None
        wall = gpu_h = cost = None
        if steps is not None and step_time is not None:
            wall = steps * step_time / 3600.0
            gpu_h = wall * g
            cost = None if price is None else gpu_h * price
        eff = m.efficiency(g)
        eff_range = None if ms is None else tuple(sorted((ms[0].efficiency(g), ms[1].efficiency(g))))
        new_lr = None
        if lr is not None:
            k = b / b_ref
            new_lr = linear_rule(lr, k) if lr_rule == "linear" else sqrt_rule(lr, k, betas=())["lr"]
        rows.append(PlanRow(
            gpus=g, global_batch=b, global_batch_tokens=b * seq_len, micro_batch=micro, accumulation=acc,
            steps_vs_min=m.steps_vs_min(g), steps=steps, tokens=None if steps is None else steps * b * seq_len,
            step_time_s=step_time, comm_time_s=m.comm_exposed(g) if compute_s is not None else None,
            wall_clock_h=wall, gpu_hours=gpu_h, cost=cost, speedup_vs_1=g * eff, efficiency=eff,
            efficiency_range=eff_range, doubling_efficiency=m.doubling_efficiency(g), statistical_efficiency=m.stat_eff(g),
            systems_efficiency=m.step_time(1) / m.step_time(g), limit=m.limit(g), over_critical=b > b_crit,
            within_target=eff >= min_efficiency, lr=new_lr))

    doubling = []
    for g in gpus:
        d = {"from": g, "to": 2 * g, "steps_ratio": m.steps_vs_min(2 * g) / m.steps_vs_min(g),
             "speedup": m.time(g) / m.time(2 * g), "efficiency_to": m.efficiency(2 * g),
             "doubling_efficiency": m.doubling_efficiency(2 * g),
             "worth_it": m.doubling_efficiency(2 * g) >= min_efficiency, "limit_to": m.limit(2 * g),
             "relative_time": compute_s is None}
        d["gpu_hours_ratio"] = 2.0 / d["speedup"]
        if ms is not None:
            d["speedup_range"] = sorted(mm.time(g) / mm.time(2 * g) for mm in ms)
            d["gpu_hours_ratio_range"] = sorted(2.0 / s for s in d["speedup_range"])
        doubling.append(d)

    _check_finite(rows, doubling)
    rec = m.largest_efficient(min_efficiency)
    rec_range = None if ms is None else tuple(sorted(mm.largest_efficient(min_efficiency) for mm in ms))
    listed = [g for g in gpus if g <= rec]
    rec_listed = listed[-1] if listed else None
    word = "examples" if unit == "examples" else "sequences"
    count = f"{rec} GPUs" if rec < _MAX_GPUS else f"{rec:,} GPUs or more (the most the search tries)"
    reason = (f"{count}: the largest count that keeps at least {min_efficiency:.0%} of perfect linear scaling "
              f"(global batch {m.batch(rec):,} {word} vs B_crit = {fmt_num(b_crit)}; limit there: {m.limit(rec)})")
    if rec_range is not None:
        reason += f"; {rec_range[0]} to {rec_range[1]} GPUs over the B_crit interval"
    if rec_listed is None:
        reason += f". None of the counts listed ({', '.join(map(str, gpus))}) keeps it."
    elif rec_listed != rec:
        reason += f". Among the counts listed: {rec_listed}."
    else:
        reason += "."
    mixed = [r.gpus for r in rows if not r.within_target and (r.doubling_efficiency or 0) >= min_efficiency]
    if mixed:
        notes.append(f"at {', '.join(map(str, mixed))} GPUs the efficiency against one GPU is below "
                     f"{min_efficiency:.0%} but the doubling that leads there keeps at least that share of a perfect "
                     "doubling: the efficiency was lost at smaller counts (each doubling there still buys at least "
                     f"{2 * min_efficiency:.2g}x).")
    if compute_s is None:
        notes.append("no throughput given: times are relative (constant per-GPU throughput assumed); "
                     "give --tokens-per-sec or --profile for wall-clock.")
    if lr is not None and any(r.over_critical for r in rows):
        notes.append("learning rates above B_crit follow the rule only as an upper bound: the optimal step "
                     "saturates there (McCandlish et al. 2018, eq. 2.6).")
    if lr is not None and b_ref > b_crit and any(r.global_batch < b_ref for r in rows):
        notes.append(f"the reference batch ({fmt_num(b_ref)}) is above B_crit, where the optimal step saturates "
                     "(McCandlish et al. 2018, eq. 2.6): scaled down from there, the rule's learning rates underestimate "
                     "the optimum at smaller batches, the more so the further below B_crit.")
    return Plan(rows, b_crit, b_crit_ci, e_min_tokens, s_min, seq_len, unit, min_efficiency, rec, rec_range,
                rec_listed, reason, doubling, notes)
