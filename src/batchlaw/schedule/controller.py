"""BatchController: an online batch size that grows when the evidence says the larger batch pays.

The controller is a :class:`~batchlaw.schedule.BatchSchedule`: call ``controller.step(examples_seen,
monitor)`` once before every optimizer step, as with any schedule. At check points (every
``check_every`` steps) it decides whether to grow the batch from ``B`` to ``k B`` (``k = factor^j``)
from two kinds of evidence (:mod:`batchlaw.schedule.sequential`):

1. **The windowed noise scale** (every check; free). ``B_simple`` over the last ``window``
   measured steps of the current batch, with its interval (never the EMA, which lags and reads
   high while ``|G|^2`` falls fast). The controller grows to the largest ``k B`` that stays at or
   below the interval's **lower end**: the next batch must be in McCandlish et al.'s efficient
   regime (``B <= B_noise``) even at the least noise the data allow. An unresolved interval (too
   few steps, ``|G|^2`` not resolved) never grows.
2. **Branches** (when :meth:`BatchController.bind` gave it the model, optimizer, loss and data).
   From the trunk's state, pairs of short branches train at ``B`` and ``k B`` on the same
   examples; a sequential test (Wald's SPRT, :class:`~batchlaw.schedule.sequential.PairedSPRT`)
   on the paired loss differences, calibrated by their measured spread, grows only when the
   larger batch costs less than ``margin`` (10%) more examples for the same progress.
   ``B_simple`` misreads the critical batch of Adam (Merrill et al. 2025), so when a branch test
   runs it is the arbiter; the noise scale decides alone when branching is unavailable or
   unaffordable, and a test runs only while the batch is not above the whole noise interval.

Branch cost is capped: a test starts only if its first ``min_pairs`` pairs fit in
``branch_budget`` (5%) of the examples seen so far (or of ``planned_examples``, the run's data
budget, when given), stops when the budget runs out, and after a test that stays the next one
waits until the examples seen have doubled (after a growth the next may follow at the next check).
Branch examples, evaluations and seconds are counted (:attr:`BatchController.branch_examples` ...)
and belong in every reported cost.

The batch never shrinks; it never exceeds ``max_batch`` nor ``max_micro_batch * max_accumulation
* world_size`` (a growth past them is refused and the reason logged). The learning rate follows
the rule (``"linear"`` for SGD, ``"sqrt"`` for Adam with betas/eps, Malladi et al. 2022) and is
capped at ``max_lr`` (the stability limit). Every check is logged (:attr:`BatchController.decisions`)
with its reason and evidence; :meth:`~BatchController.state_dict` / ``load_state_dict`` resume the
same trajectory; under data parallelism every rank takes rank 0's decision.

References:
    McCandlish et al. 2018, arXiv:1812.06162, eq. 2.7-2.11 and App. D; Merrill et al. 2025,
    "Critical Batch Size Revisited", arXiv:2505.23971; Wald 1945, "Sequential tests of statistical
    hypotheses", Ann. Math. Statist. 16(2); Malladi et al. 2022, arXiv:2205.10287.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .._format import fmt_num
from .._validation import check_learning_rate, check_positive_int, check_probability
from ..errors import InsufficientDataError
from .batch import BatchSchedule
from .sequential import PairedSPRT, noise_cost, noise_growth_factor

__all__ = ["BatchController"]

_MIN_WINDOW = 10  # measured steps: the monitor's fewest for an interval (batchlaw.noise.MIN_STEPS)


class BatchController(BatchSchedule):
    """Grows the batch online when the measured evidence says the larger batch pays (module docstring).

    Args:
        base_batch: the starting global batch (examples); also the reference batch of ``lr``.
        lr: learning rate at ``base_batch``: a number or an :class:`~batchlaw.schedule.LRSchedule`.
        max_batch: the largest global batch (examples).
        lr_rule: ``"linear"`` (SGD), ``"sqrt"`` (Adam; pass ``adam_betas``/``adam_eps`` and they
            move too) or ``"none"``.
        max_lr: cap on the learning rate (the stability limit); ``None``: no cap.
        margin: the extra-examples fraction a branch-tested growth may cost (0.1: 10%).
        factor: growth factor of one step of ``k`` (2: doubling).
        confidence: level of the noise-scale interval.
        window: measured steps of the current batch the noise-scale estimate covers.
        check_every: optimizer steps between two checks.
        branch_budget: fraction of the examples seen (or of ``planned_examples`` while fewer have
            been seen) that branches may have used.
        branch_steps: steps ``n`` of the large arm of a branch pair (the small arm takes ``k n``);
            ``"auto"``: long enough for the optimizer to forget the fork, ``ceil(2 / (1 - beta1))``
            steps at the large arm's Adam ``beta1`` (or SGD momentum), 1 without momentum.
        planned_examples: the examples the run is planned to use (its data budget), if known:
            branches may then spend ``branch_budget`` of it from the start, instead of only of
            the examples seen so far.
        min_pairs: pairs before the sequential test may decide.
        max_pairs: the test stays after this many pairs without a decision.
        alpha: the test grows with at most this probability when the larger batch costs the margin.
        beta: the test stays with at most this probability when it costs nothing (power ``1 - beta``).
        probe_examples: examples of the probe batch branches are evaluated on when no ``eval_fn``
            is bound.
        max_micro_batch: the largest micro-batch per rank (examples).
        max_accumulation: the most micro-batches per step on each rank (``None``: no limit).
        min_accumulation: at least this many micro-batches per step (2 lets a single-process
            monitor measure ``B_simple`` on every step).
        seed: seeds the branches' examples (decision and pair are mixed in).
        **kwargs: see :class:`~batchlaw.schedule.batch.BatchSchedule` (``world_size``,
            ``adam_betas``, ``adam_eps``, ``tokens_per_example``).

    Attributes:
        decisions: one dict per check (see :meth:`report`).
        branch_examples: training examples spent in branches (over all ranks).
        branch_eval_examples: examples evaluated by branches (forward only; 0 with an ``eval_fn``).
        branch_seconds: wall-clock spent in branches.

    Raises:
        ValueError: a bad argument (named, with the value and what is allowed).

    Examples:
        >>> c = BatchController(8, 0.1, max_batch=64, lr_rule="linear", max_micro_batch=8)
        >>> choice = c.step(0)
        >>> choice.global_batch, choice.accumulation, choice.lr
        (8, 2, 0.1)
    """

    def __init__(self, base_batch: int, lr, *, max_batch: int, lr_rule: str = "sqrt", max_lr: float | None = None,
                 margin: float = 0.1, factor: int = 2, confidence: float = 0.95, window: int = 20,
                 check_every: int = 10, branch_budget: float = 0.05, branch_steps: int | str = "auto",
                 planned_examples: int | None = None, min_pairs: int = 3,
                 max_pairs: int = 8, alpha: float = 0.05, beta: float = 0.2, probe_examples: int = 1024,
                 max_micro_batch: int | None = None, max_accumulation: int | None = None, min_accumulation: int = 2,
                 seed: int = 0, **kwargs) -> None:
        super().__init__(base_batch=base_batch, lr=lr, max_batch=max_batch, lr_rule=lr_rule,
                         max_micro_batch=max_micro_batch, min_accumulation=min_accumulation, **kwargs)
        self.max_lr = None if max_lr is None else check_learning_rate("max_lr", max_lr)
        self.margin = check_probability("margin", margin)
        self.factor = check_positive_int("factor", factor, minimum=2)
        self.confidence = check_probability("confidence", confidence)
        self.window = check_positive_int("window", window, minimum=_MIN_WINDOW)
        self.check_every = check_positive_int("check_every", check_every)
        self.branch_budget = check_probability("branch_budget", branch_budget, open_low=False)
        if isinstance(branch_steps, str) and branch_steps != "auto":
            raise ValueError(f"The 'branch_steps' parameter must be a positive integer or 'auto'. Got {branch_steps!r}.")
        self.branch_steps = branch_steps if branch_steps == "auto" else check_positive_int("branch_steps", branch_steps)
        self.planned_examples = None if planned_examples is None else check_positive_int("planned_examples",
                                                                                          planned_examples)
        self.probe_examples = check_positive_int("probe_examples", probe_examples)
        self.max_accumulation = None if max_accumulation is None else check_positive_int("max_accumulation",
                                                                                          max_accumulation)
        if self.max_accumulation is not None and self.max_accumulation < self.min_accumulation:
            raise ValueError(f"The 'max_accumulation' parameter ({max_accumulation}) must be >= 'min_accumulation' "
                             f"({min_accumulation}).")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"The 'seed' parameter must be an integer. Got {seed!r} instead.")
        self.seed = seed
        self._sprt_args = dict(margin=self.margin, alpha=alpha, beta=beta, min_pairs=min_pairs, max_pairs=max_pairs)
        PairedSPRT(**self._sprt_args)  # validates alpha, beta and the pair counts now
        limit = self.batch_limit()
        if limit[0] < self.base_batch:
            raise ValueError(f"The 'base_batch' parameter ({base_batch}) exceeds {limit[1]}.")
        self._want = self.base_batch  # requested global batch (examples): never decreases
        self._stage_step = 0  # monitor step at which the current batch started
        self._last_check = -check_every  # schedule step of the last check (the first check is at step 0)
        self._next_branch = 0  # examples seen before the next branch test may start
        self._n_decisions = 0
        self._at_limit = False
        self.decisions: list[dict] = []
        self.branch_examples = 0
        self.branch_eval_examples = 0
        self.branch_seconds = 0.0
        self.branch_steps_taken = 0
        self._runner = None

    # ------------------------------------------------------------------ binding
    def bind(self, model, optimizer, *, loss_fn: Callable, sample_fn: Callable, eval_fn: Callable | None = None,
             process_group: Any = "auto") -> BatchController:
        """Give the controller what it needs to branch; without it, it decides from the noise scale only.

        Args:
            model: the trunk's model (or its ``DistributedDataParallel`` wrapper).
            optimizer: the trunk's optimizer.
            loss_fn: ``loss_fn(model, batch) -> 0-d tensor``: the mean loss over ``batch``.
            sample_fn: ``sample_fn(n, generator) -> batch``: ``n`` training examples drawn
                i.i.d. with ``generator`` only (a CPU ``torch.Generator``). Branches use their own
                generator: the trunk's data stream is never consumed.
            eval_fn: ``eval_fn(model) -> float``, a deterministic held-out loss (best: a fixed
                held-out set, the same data for both arms); ``None``: a probe batch from ``sample_fn``.
            process_group: ``"auto"``, ``None`` or a process group to average branches over.

        Returns:
            ``self``.
        """
        from .branching import BranchRunner

        self._runner = BranchRunner(model, optimizer, loss_fn=loss_fn, sample_fn=sample_fn, eval_fn=eval_fn,
                                    probe_examples=self.probe_examples, max_micro_batch=self.max_micro_batch,
                                    process_group=process_group)
        if self._runner.world_size != self.world_size:
            raise ValueError(f"The model runs on {self._runner.world_size} ranks but the controller was built with "
                             f"world_size={self.world_size}.")
        return self

    def bind_workload(self, workload, model, optimizer, *, eval_fn: Callable | None = None,
                      seed: int | None = None) -> BatchController:
        """:meth:`bind` for a :class:`~batchlaw.workloads.Workload`: its ``loss``, its
        ``sample_batch`` and (unless ``eval_fn`` is given) its held-out ``eval_loss``. ``seed``, if
        given, replaces the controller's ``seed`` (the branches' examples): ``batchlaw schedule
        compare`` passes the run's seed, so the seeds of a comparison branch on independent data."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"The 'seed' parameter must be an integer. Got {seed!r} instead.")
            self.seed = seed
        return self.bind(model, optimizer, loss_fn=workload.loss, sample_fn=workload.sample_batch,
                         eval_fn=eval_fn if eval_fn is not None else workload.eval_loss)

    def unbind(self) -> None:
        """Forget the model and optimizer (no more branches; frees the branch copy)."""
        self._runner = None

    # ------------------------------------------------------------------ limits and learning rate
    def batch_limit(self) -> tuple[int, str]:
        """The largest global batch allowed (examples) and what sets it."""
        limits = [(self.max_batch, f"max_batch={self.max_batch}")]
        if self.max_accumulation is not None:
            hw = self.max_micro_batch * self.max_accumulation * self.world_size
            limits.append((hw, f"max_micro_batch={self.max_micro_batch} x max_accumulation={self.max_accumulation} x "
                               f"world_size={self.world_size} = {hw} examples"))
        return min(limits)

    def lr_settings(self, examples_seen: int, global_batch: int) -> dict:
        """``{"lr", "betas", "eps"}`` for a step at ``global_batch`` after ``examples_seen``: the LR
        schedule times the batch rule, capped at ``max_lr``."""
        r = super().lr_settings(examples_seen, global_batch)
        if self.max_lr is not None and r["lr"] > self.max_lr:
            r["lr"] = self.max_lr
        return r

    # ------------------------------------------------------------------ the decision
    def target(self, examples_seen: int, monitor=None) -> float:
        if self._step - self._last_check >= self.check_every and not self._at_limit:
            self._last_check = self._step
            self._check(examples_seen, monitor)
        return float(self._want)

    def _monitor_steps(self, monitor) -> int:
        return int(getattr(monitor, "steps", self._step)) if monitor is not None else self._step

    def _noise_evidence(self, monitor) -> dict:
        """The windowed ``B_simple`` of the current batch, in examples (``lo = 0``, ``hi = inf`` when unresolved)."""
        ev = {"b_simple": None, "ci": [0.0, math.inf], "n_steps": 0, "resolved": False, "note": ""}
        if monitor is None:
            ev["note"] = "no monitor"
            return ev
        now = self._monitor_steps(monitor)
        start = max(self._stage_step, now - self.window)
        ev["window"] = [start, now]
        try:
            est = monitor.estimate(start=start, confidence=self.confidence)
        except InsufficientDataError as err:
            ev["note"] = str(err).split(". ")[0]
            prov = getattr(err, "provisional", None)
            if prov is not None and getattr(prov, "n_steps", None):
                ev["n_steps"] = int(prov.n_steps)
            return ev
        scale = 1.0
        if getattr(monitor, "unit", "examples") == "tokens":
            if not self.tokens_per_example:
                raise ValueError("The monitor counts tokens: give the controller 'tokens_per_example' to convert its "
                                 "B_simple to examples.")
            scale = 1.0 / self.tokens_per_example
        lo, hi = (float(v) for v in est.ci)
        ev.update(b_simple=float(est.b_simple) * scale, ci=[lo * scale, hi * scale], n_steps=int(est.n_steps),
                  resolved=True)
        return ev

    def _check(self, examples_seen: int, monitor) -> None:
        batch = int(self._current if self._current is not None else self._want)
        limit, why = self.batch_limit()
        entry = {"index": self._n_decisions, "step": self._step, "examples_seen": int(examples_seen),
                 "batch": batch, "new_batch": batch, "decision": "stay", "path": "noise"}
        if self.factor * batch > limit and batch >= limit:
            self._at_limit = True
            entry.update(decision="refused", reason=f"growing past {batch} examples is refused: the limit is {why}")
            self._log(entry)
            return
        max_k = limit / batch
        ev = self._noise_evidence(monitor)
        lo, hi = ev["ci"]
        k_try = min(float(self.factor), max_k)  # one growth step (a partial one up to the limit)
        k_noise = noise_growth_factor(batch, lo, self.factor, max_k=max_k) if ev["resolved"] else 1.0
        ev.update(threshold=k_try * batch, cost_at_lo=noise_cost(batch, k_try, lo) if ev["resolved"] else None,
                  k_noise=k_noise)
        entry["noise"] = ev
        new = batch
        k_branch = self._branch_factor(examples_seen, batch, max_k, hi, entry)
        if k_branch is not None:
            entry["path"] = "branch"
            res = self._branch_test(examples_seen, batch, k_branch, entry)
            if res == "grow":
                k = max(k_noise, k_branch)
                new = int(batch * k)
                entry["reason"] = (f"branches: {entry['branch']['reason']}; grow x{k:g}"
                                   + (" (the noise scale allows it)" if k > k_branch else ""))
                self._last_check = self._step - self.check_every + 1  # the next check at the next step
            else:
                entry["reason"] = f"branches: {entry['branch']['reason']}"
        elif not ev["resolved"]:
            entry.update(decision="unresolved", reason=f"the noise scale is unresolved ({ev['note']}): no growth")
        elif k_noise > 1:
            new = int(batch * k_noise)
            entry["reason"] = (f"B_simple interval {_fmt(lo)} to {_fmt(hi)} examples: its lower end is at or above "
                               f"x{k_noise:g} = {_fmt(int(batch * k_noise))} examples (priced at "
                               f"{noise_cost(batch, k_noise, lo):.1%} more examples by McCandlish's model)")
        else:
            entry["reason"] = (f"B_simple interval {_fmt(lo)} to {_fmt(hi)} examples: its lower end is below "
                               f"the next batch {_fmt(int(k_try * batch))} examples")
        new = min(self._broadcast(new, monitor), limit)
        if new > batch:
            entry.update(decision="grow", new_batch=new)
            self._want = new
            self._stage_step = self._monitor_steps(monitor)
        self._log(entry)

    def _budget_left(self, examples_seen: int) -> float:
        """Examples the branches may still spend."""
        base = max(examples_seen, self.planned_examples or 0)
        return self.branch_budget * base - self.branch_examples

    def _pair_steps(self, examples_seen: int, batch: int) -> int:
        """Steps ``n`` of the large arm: ``branch_steps``, or long enough for the optimizer's memory."""
        if self.branch_steps != "auto":
            return self.branch_steps
        s = self.lr_settings(examples_seen, batch)
        groups = getattr(self._runner.optimizer, "param_groups", [{}])
        beta = s["betas"][0] if s.get("betas") else groups[0].get("betas", (groups[0].get("momentum", 0.0),))[0]
        beta = float(beta or 0.0)
        return 1 if beta <= 0 else max(1, math.ceil(2.0 / (1.0 - beta) - 1e-9))  # 1e-9: 2 / (1 - 0.9) is 20.000000000000004

    def _branch_factor(self, examples_seen: int, batch: int, max_k: float, hi: float, entry: dict) -> int | None:
        """The growth factor a branch test should try (the largest affordable ``factor^j`` whose batch is not above
        the noise interval's upper end; one ``factor`` always qualifies on that count), or ``None``."""
        if self._runner is None:
            return None
        if max_k < self.factor:
            entry["branch_skipped"] = f"the room left below the limit (x{max_k:g}) is less than one factor x{self.factor}"
            return None
        if hi < batch:
            entry["branch_skipped"] = "implausible: the batch is above the whole B_simple interval"
            return None
        if examples_seen < self._next_branch:
            entry["branch_skipped"] = f"spacing: the next branch test waits for {self._next_branch} examples seen"
            return None
        left, best, k = self._budget_left(examples_seen), None, self.factor
        while k <= max_k * (1 + 1e-12) and (k == self.factor or k * batch <= hi):
            needed = self._sprt_args["min_pairs"] * 2 * self._pair_steps(examples_seen, k * batch) * k * batch
            if needed > left:
                if best is None:
                    entry["branch_skipped"] = (f"budget: {self._sprt_args['min_pairs']} pairs at x{k} need {needed} "
                                               f"examples, the {self.branch_budget:.0%} budget leaves {max(0, int(left))}")
                break
            best, k = k, k * self.factor
        return best

    def _branch_test(self, examples_seen: int, batch: int, k: int, entry: dict) -> str:
        runner, t0 = self._runner, time.perf_counter()
        ex0, ev0, st0 = runner.examples, runner.eval_examples, runner.steps
        n = self._pair_steps(examples_seen, k * batch)
        small = [self.lr_settings(examples_seen + i * batch, batch) for i in range(k * n)]
        large = [self.lr_settings(examples_seen + i * k * batch, k * batch) for i in range(n)]
        test = PairedSPRT(**self._sprt_args)
        seed = self.seed * 1_000_003 + self._n_decisions
        probe = runner.probe(seed)
        l0 = runner.trunk_loss(probe)
        pairs, res, pair_cost = [], None, 2 * n * k * batch
        for j in range(self._sprt_args["max_pairs"]):
            if j >= self._sprt_args["min_pairs"] and (runner.examples - ex0) + pair_cost > self._budget_left(examples_seen):
                res = replace(res, decision="stay", reason=f"budget spent after {j} pairs ({res.reason})")
                break
            out = runner.run_pair(batch=batch, k=k, steps=n, lrs_small=small, lrs_large=large, seed=seed * 64 + j,
                                  probe=probe)
            pairs.append([out["small"], out["large"]])
            if out["diverged"] or not math.isfinite(l0):
                res = None
                entry["branch_diverged"] = True
                break
            res = test.update(out["large"] - out["small"], l0 - out["large"])
            if res.decision != "continue":
                break
        spent = runner.examples - ex0
        self.branch_examples += spent
        self.branch_eval_examples += runner.eval_examples - ev0
        self.branch_steps_taken += runner.steps - st0
        seconds = time.perf_counter() - t0
        self.branch_seconds += seconds
        if res is None or res.decision != "grow":  # after a stay, wait until the examples seen have doubled
            self._next_branch = 2 * examples_seen
        if res is None:
            info = {"reason": "a branch diverged: the larger batch (or its learning rate) is unstable", "decision": "stay"}
        else:
            info = res.to_dict()
        info.update(k=k, steps=n, loss_start=l0, pairs=pairs, examples=spent, eval_examples=runner.eval_examples - ev0,
                    seconds=seconds)
        entry["branch"] = info
        return info["decision"]

    def _broadcast(self, value: int, monitor=None) -> int:
        """Rank 0's decision on every rank (data parallelism: the group branches average over, else the
        monitor's), else ``value``."""
        from .branching import collective_device

        group = self._runner.group if self._runner is not None else None
        setup = getattr(monitor, "setup", None)
        if group is None and getattr(setup, "distributed", False):
            group = setup.group
        if group is None:
            return value
        import torch

        t = torch.tensor([float(value)], dtype=torch.float64, device=collective_device(group))
        torch.distributed.broadcast(t, src=torch.distributed.get_global_rank(group, 0), group=group)
        return int(t.item())

    def _log(self, entry: dict) -> None:
        entry["branch_examples_total"] = self.branch_examples
        self.decisions.append(_json_safe(entry))
        self._n_decisions += 1

    # ------------------------------------------------------------------ reporting and state
    @property
    def growths(self) -> list[dict]:
        """The checks that grew the batch."""
        return [d for d in self.decisions if d["decision"] == "grow"]

    def report(self) -> dict:
        """JSON-ready summary: settings, branch cost and every decision with its evidence.

        Each decision has ``step``, ``examples_seen``, ``batch``, ``new_batch`` (examples),
        ``decision`` (``grow``, ``stay``, ``unresolved`` or ``refused``), ``path`` (``noise`` or
        ``branch``), ``reason``, ``noise`` (``b_simple``, ``ci`` in examples, ``n_steps``, the
        window of steps, ``threshold``: the noise scale the next growth needs, ``cost_at_lo``)
        and, after a branch test, ``branch`` (pairs of losses, the SPRT's statistic and
        decision, examples and seconds spent).
        """
        return {"schema": "batchlaw.controller/1", "unit": "examples",
                "settings": {"base_batch": self.base_batch, "max_batch": self.max_batch, "margin": self.margin,
                             "factor": self.factor, "lr_rule": self.lr_rule, "max_lr": self.max_lr,
                             "confidence": self.confidence, "window": self.window, "check_every": self.check_every,
                             "branch_budget": self.branch_budget, "branch_steps": self.branch_steps,
                             "planned_examples": self.planned_examples,
                             "sprt": dict(self._sprt_args), "max_micro_batch": self.max_micro_batch,
                             "max_accumulation": self.max_accumulation, "world_size": self.world_size},
                "batch": self._want, "branch_examples": self.branch_examples,
                "branch_eval_examples": self.branch_eval_examples, "branch_seconds": self.branch_seconds,
                "branch_steps": self.branch_steps_taken, "decisions": [dict(d) for d in self.decisions]}

    def save_report(self, path: str | Path) -> None:
        """Write :meth:`report` as JSON."""
        Path(path).write_text(json.dumps(self.report(), indent=1))

    def _extra_state(self) -> dict:
        return {"want": self._want, "stage_step": self._stage_step, "last_check": self._last_check,
                "next_branch": self._next_branch, "n_decisions": self._n_decisions, "at_limit": self._at_limit,
                "decisions": [dict(d) for d in self.decisions], "branch_examples": self.branch_examples,
                "branch_eval_examples": self.branch_eval_examples, "branch_seconds": self.branch_seconds,
                "branch_steps": self.branch_steps_taken}

    def _load_extra_state(self, state: dict) -> None:
        self._want = int(state["want"])
        self._stage_step = int(state["stage_step"])
        self._last_check = int(state["last_check"])
        self._next_branch = int(state["next_branch"])
        self._n_decisions = int(state["n_decisions"])
        self._at_limit = bool(state["at_limit"])
        self.decisions = [dict(d) for d in state["decisions"]]
        self.branch_examples = int(state["branch_examples"])
        self.branch_eval_examples = int(state["branch_eval_examples"])
        self.branch_seconds = float(state["branch_seconds"])
        self.branch_steps_taken = int(state["branch_steps"])


def _fmt(x: float | None) -> str:
    return "inf" if x is None else fmt_num(x)


def _json_safe(value):
    """Non-finite floats as None (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
