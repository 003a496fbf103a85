"""What every batch-size schedule shares: the per-step choice, the hardware layout, the LR rule.

Call order in a training loop (one call per optimizer step)::

    choice = schedule.step(examples_seen, monitor)   # examples over all ranks so far
    for _ in range(choice.accumulation):              # K micro-batches on each rank
        loss = loss_fn(model, next_batch(choice.micro_batch_size)) / choice.accumulation
        loss.backward()
    monitor.step(choice.micro_batch_size)             # optional: feeds the noise-scale ramp
    apply_choice(optimizer, choice)                    # learning rate (and Adam betas/eps)
    optimizer.step(); optimizer.zero_grad()
    examples_seen += choice.global_batch

The batch only takes values the hardware allows (:func:`layout`): ``global_batch =
micro_batch_size * accumulation * world_size`` with ``micro_batch_size <= max_micro_batch``.
The learning rate is ``lr_schedule(examples_seen) * rule(global_batch / base_batch)``: the
schedule (warm-up, cosine, WSD) runs on data seen so it stays on time when the batch grows,
and a named rule (:data:`LR_RULES`) rescales it for the batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real

from .._validation import check_choice, check_positive_float, check_positive_int
from .lr_rules import check_betas, linear_rule, sqrt_rule, sqrt_rule_limit
from .lr_schedule import LRSchedule

__all__ = ["BatchChoice", "BatchSchedule", "LR_RULES", "MAX_BATCH", "layout", "rescale_lr", "apply_choice"]

#: Named rules that move the learning rate with the batch (``k = B / base_batch``):
#: ``"sqrt"`` (Adam; Malladi et al. 2022, with betas/eps when given), ``"linear"`` (SGD;
#: Goyal et al. 2017) and ``"none"``.
LR_RULES = ("sqrt", "linear", "none")

_STATE_VERSION = 1

#: The largest batch (examples) a schedule lays out: 2^53, above which whole numbers are no longer
#: exact in floating point (a CBS of 1e300 is a unit slip, not a batch).
MAX_BATCH = 2**53


@dataclass(frozen=True)
class BatchChoice:
    """What to do at one optimizer step.

    Attributes:
        micro_batch_size: examples per micro-batch on each rank.
        accumulation: micro-batches per optimizer step on each rank (``K``).
        world_size: data-parallel ranks.
        global_batch: examples per optimizer step over all ranks
            (``micro_batch_size * accumulation * world_size``).
        lr: the learning rate for this step (LR schedule at the data seen, times the batch rule).
        changed: the batch differs from the previous step's (``False`` at the first step).
        step: index of this optimizer step (0-based).
        examples_seen: examples consumed before this step, over all ranks.
        target_batch: the batch the schedule asked for before rounding to the hardware
            (examples).
        betas: Adam betas under the square-root rule when the schedule was given
            ``adam_betas`` (Malladi et al. 2022), else ``None``.
        eps: Adam epsilon likewise, else ``None``.
    """

    micro_batch_size: int
    accumulation: int
    world_size: int
    global_batch: int
    lr: float
    changed: bool
    step: int = 0
    examples_seen: int = 0
    target_batch: float = 0.0
    betas: tuple | None = None
    eps: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def layout(batch: float, *, world_size: int = 1, max_micro_batch: int, min_accumulation: int = 1) -> tuple[int, int]:
    """The largest batch the hardware allows at or below ``batch``, as ``(micro_batch_size, K)``.

    Each rank takes ``r = floor(batch / world_size)`` examples per step. Below
    ``min_accumulation * max_micro_batch`` the rank splits them into ``min_accumulation``
    equal micro-batches (rounding ``r`` down to a multiple of ``min_accumulation``); above, the
    micro-batch stays at ``max_micro_batch`` and ``K = floor(r / max_micro_batch)``. The realized
    batch ``micro * K * world_size`` never exceeds ``batch`` and never decreases when ``batch``
    grows.

    Args:
        batch: requested global batch (examples).
        world_size: data-parallel ranks.
        max_micro_batch: the largest micro-batch that fits on one device (examples).
        min_accumulation: at least this many micro-batches per step (2 lets the
            :class:`~batchlaw.noise.GradientNoiseMonitor` measure on every step).

    Returns:
        ``(micro_batch_size, accumulation)`` per rank.

    Raises:
        ValueError: ``batch`` is too small to give every rank ``min_accumulation`` examples.

    Examples:
        >>> layout(100, world_size=4, max_micro_batch=8)
        (8, 3)
        >>> layout(12, world_size=1, max_micro_batch=8, min_accumulation=2)
        (6, 2)
    """
    w = check_positive_int("world_size", world_size)
    m = check_positive_int("max_micro_batch", max_micro_batch)
    kmin = check_positive_int("min_accumulation", min_accumulation)
    if isinstance(batch, bool) or not (isinstance(batch, (int, float)) and math.isfinite(batch)) or batch > MAX_BATCH:
        raise ValueError(f"The 'batch' parameter must be a finite number of examples <= 2^53. Got {batch!r} instead.")
    per_rank = int(batch) // w
    if per_rank < kmin:
        raise ValueError(
            f"A batch of {batch!r} examples over world_size={w} ranks gives {per_rank} per rank, fewer than "
            f"min_accumulation={kmin}. Raise the batch to at least {w * kmin} examples or lower min_accumulation."
        )
    if per_rank >= kmin * m:
        return m, per_rank // m
    return per_rank // kmin, kmin


def is_whole(value, lo: float, hi: float = math.inf) -> bool:
    """Whether ``value`` is a whole number (an int, or a float without a fraction) in ``[lo, hi]``."""
    return (not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
            and float(value).is_integer() and lo <= value <= hi)


def state_entry(state: dict, key: str, ok, allowed: str):
    """``state[key]``, if present and ``ok(value)``; else a ValueError naming the key, the value and
    what is ``allowed`` (for :meth:`BatchSchedule.load_state_dict`)."""
    if key not in state:
        raise ValueError(f"The batch-schedule state has no {key!r} entry (it has {', '.join(map(repr, state))}): "
                         "pass what state_dict() returned.")
    value = state[key]
    if not ok(value):
        raise ValueError(f"The batch-schedule state's {key!r} must be {allowed}. Got {value!r} instead.")
    return value


def rescale_lr(lr: float, k: float, rule: str, *, betas: tuple | None = None, eps: float | None = None) -> dict:
    """The learning rate (and Adam betas/eps) for a batch ``k`` times the reference batch.

    Args:
        lr: learning rate at the reference batch.
        k: ratio of the batch to the reference batch.
        rule: ``"sqrt"`` (Adam: :func:`~batchlaw.schedule.sqrt_rule`, Malladi et al. 2022,
            arXiv:2205.10287, section 3), ``"linear"`` (SGD: :func:`~batchlaw.schedule.linear_rule`,
            Goyal et al. 2017) or ``"none"``.
        betas: Adam's betas at the reference batch; rescaled by the square-root rule when given.
        eps: Adam's eps at the reference batch; rescaled by the square-root rule when given.

    Returns:
        ``{"lr": ..., "betas": ... or None, "eps": ... or None}``.

    Examples:
        >>> rescale_lr(1e-3, 4, "sqrt")["lr"]
        0.002
        >>> rescale_lr(0.1, 4, "linear")["lr"]
        0.4
    """
    check_choice("lr_rule", rule, LR_RULES)
    if rule == "linear":
        return {"lr": linear_rule(lr, k), "betas": None, "eps": None}
    if rule == "none":
        return {"lr": check_positive_float("lr", lr), "betas": None, "eps": None}
    if betas is None:
        return {"lr": sqrt_rule(lr, k, betas=())["lr"], "betas": None, "eps": None}  # the LR only
    out = sqrt_rule(lr, k, betas=tuple(betas), eps=1e-8 if eps is None else eps)
    return {"lr": out["lr"], "betas": out["betas"], "eps": out["eps"] if eps is not None else None}


def apply_choice(optimizer, choice: BatchChoice) -> None:
    """Set every parameter group's ``lr`` (and ``betas``/``eps`` when the choice has them).

    Examples:
        >>> import torch
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> apply_choice(opt, BatchChoice(4, 2, 1, 8, lr=0.05, changed=False))
        >>> opt.param_groups[0]["lr"]
        0.05
    """
    for group in optimizer.param_groups:
        group["lr"] = choice.lr
        if choice.betas is not None and "betas" in group:
            group["betas"] = tuple(choice.betas)
        if choice.eps is not None and "eps" in group:
            group["eps"] = choice.eps


class BatchSchedule:
    """Base class: a requested batch per step (:meth:`target`), made real by :func:`layout`,
    with the learning rate from the LR schedule and the batch rule.

    Args:
        base_batch: the global batch (examples) at which ``lr`` was tuned; the batch rule is
            applied to ``global_batch / base_batch``.
        lr: the learning rate at ``base_batch``: a number, or an :class:`LRSchedule` counted in
            examples/tokens.
        max_micro_batch: the largest micro-batch per rank (examples); default ``base_batch``.
        world_size: data-parallel ranks.
        min_accumulation: at least this many micro-batches per step on each rank.
        lr_rule: ``"sqrt"`` (Adam), ``"linear"`` (SGD) or ``"none"`` (see :func:`rescale_lr`).
        adam_betas: Adam's betas at ``base_batch``; given, the square-root rule rescales them too
            (Malladi et al. 2022).
        adam_eps: Adam's eps at ``base_batch``; given, the square-root rule rescales it too.
        max_batch: the largest global batch the schedule may request (examples).
        tokens_per_example: tokens in one example, where data is counted in tokens.

    Raises:
        ValueError: a bad argument, or a square-root rule with betas that ``max_batch`` would
            break (``k (1 - beta) >= 1``).
    """

    def __init__(self, *, base_batch: int, lr, max_micro_batch: int | None = None, world_size: int = 1,
                 min_accumulation: int = 1, lr_rule: str = "sqrt", adam_betas: tuple | None = None,
                 adam_eps: float | None = None, max_batch: int | None = None,
                 tokens_per_example: int | None = None) -> None:
        self.base_batch = check_positive_int("base_batch", base_batch)
        if isinstance(lr, LRSchedule):
            self.lr_schedule = lr
        else:
            self.lr_schedule = LRSchedule(check_positive_float("lr", lr), tokens_per_example=tokens_per_example)
        self.world_size = check_positive_int("world_size", world_size)
        self.max_micro_batch = check_positive_int("max_micro_batch", max_micro_batch or -(-base_batch // world_size))
        self.min_accumulation = check_positive_int("min_accumulation", min_accumulation)
        self.lr_rule = check_choice("lr_rule", lr_rule, LR_RULES)
        self.adam_betas = None if adam_betas is None else check_betas("adam_betas", adam_betas)
        if self.adam_betas is not None and len(self.adam_betas) != 2:
            raise ValueError(f"The 'adam_betas' parameter must be Adam's (beta1, beta2). Got {adam_betas!r} instead.")
        self.adam_eps = None if adam_eps is None else check_positive_float("adam_eps", adam_eps)
        self.max_batch = None if max_batch is None else check_positive_int("max_batch", max_batch)
        if self.max_batch is not None and self.max_batch < self.base_batch:
            raise ValueError(f"The 'max_batch' parameter ({max_batch}) must be >= 'base_batch' ({base_batch}).")
        if self.max_batch is not None and self.max_batch > MAX_BATCH:
            raise ValueError(f"The 'max_batch' parameter must be at most 2^53 examples. Got {max_batch!r} instead.")
        self.tokens_per_example = None if tokens_per_example is None else check_positive_int(
            "tokens_per_example", tokens_per_example)
        try:
            layout(self.base_batch, world_size=self.world_size, max_micro_batch=self.max_micro_batch,
                   min_accumulation=self.min_accumulation)
        except ValueError as err:
            raise ValueError(f"The 'base_batch' parameter ({self.base_batch}) cannot be laid out: {err}") from None
        if self.max_batch is not None:
            self._check_reach(self.max_batch, "max_batch")
        self._step = 0
        self._current: int | None = None  # realized global batch of the last step

    def _check_reach(self, largest: float, what: str) -> None:
        """Refuse a schedule whose batch may reach ``largest`` examples (``what`` says from where)
        when the square-root rule cannot rescale ``adam_betas`` that far: it needs every batch
        below ``base_batch / (1 - beta1)`` (:func:`~batchlaw.schedule.lr_rules.sqrt_rule_limit`),
        the bound on the ratio to the batch the betas were tuned at, however many changes it takes.
        Also refuse a learning rate the rule would scale past the largest float at ``largest``."""
        largest = min(largest, self.max_batch or largest)
        k = largest / self.base_batch
        peak = self.lr_schedule.peak_lr
        top = peak * {"linear": k, "sqrt": math.sqrt(k), "none": 1.0}[self.lr_rule]
        if not math.isfinite(top):
            raise ValueError(f"The learning rate {peak:g} at base_batch={self.base_batch} becomes {top:g} under "
                             f"lr_rule={self.lr_rule!r} at {largest:g} examples ({what}): not a finite number. Give the "
                             "learning rate training uses at base_batch.")
        if self.lr_rule != "sqrt" or self.adam_betas is None:
            return
        limit = sqrt_rule_limit(self.adam_betas)
        if largest / self.base_batch < limit:
            return
        allowed = math.ceil(limit * self.base_batch) - 1
        raise ValueError(
            f"With lr_rule='sqrt' and adam_betas={self.adam_betas}, the square-root rule (Malladi et al. 2022) sets "
            f"beta -> 1 - k (1 - beta) with k = batch / base_batch, so every batch must stay below 1 / (1 - "
            f"{min(self.adam_betas):g}) = {limit:.4g} times base_batch={self.base_batch}: at most {allowed} examples. "
            f"This schedule may reach {largest:g} examples ({what}). Lower max_batch to {allowed} or less, start "
            "from a larger base_batch (the batch the betas were tuned at), or leave adam_betas out (the rule then "
            "rescales the learning rate only).")

    # ------------------------------------------------------------ subclass API
    def target(self, examples_seen: int, monitor=None) -> float:
        """The global batch (examples) requested at this step; subclasses override."""
        return float(self.base_batch)

    def lr_factor(self, examples_seen: int, global_batch: int) -> float:
        """An extra factor on the learning rate (Seesaw uses it); 1 by default."""
        return 1.0

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`_extra_state` saved; subclasses check every entry (with
        :func:`state_entry`) before they restore any."""
        return None

    # ------------------------------------------------------------ the step
    def lr_settings(self, examples_seen: int, global_batch: int) -> dict:
        """``{"lr", "betas", "eps"}`` for a step of ``global_batch`` examples after ``examples_seen``: the LR
        schedule (times :meth:`lr_factor`) moved by the batch rule (:func:`rescale_lr`)."""
        base_lr = self.lr_schedule(examples_seen) * self.lr_factor(examples_seen, global_batch)
        if base_lr > 0:
            return rescale_lr(base_lr, global_batch / self.base_batch, self.lr_rule, betas=self.adam_betas,
                              eps=self.adam_eps)
        # the first step of a warm-up from zero
        r = rescale_lr(1.0, global_batch / self.base_batch, self.lr_rule, betas=self.adam_betas, eps=self.adam_eps)
        r["lr"] = 0.0
        return r

    def step(self, examples_seen: int, monitor=None) -> BatchChoice:
        """The batch layout and learning rate for the next optimizer step.

        Args:
            examples_seen: training examples consumed so far, over all ranks.
            monitor: a :class:`~batchlaw.noise.GradientNoiseMonitor` (read by the noise-scale
                ramp; ignored by the others).

        Returns:
            A :class:`BatchChoice`.
        """
        if isinstance(examples_seen, bool) or not isinstance(examples_seen, Integral) or examples_seen < 0:
            raise ValueError(f"The 'examples_seen' parameter must be an integer >= 0. Got {examples_seen!r} instead.")
        examples_seen = int(examples_seen)
        want = float(self.target(examples_seen, monitor))
        if self.max_batch is not None:
            want = min(want, float(self.max_batch))
        want = max(want, float(self.world_size * self.min_accumulation))
        micro, k = layout(want, world_size=self.world_size, max_micro_batch=self.max_micro_batch,
                          min_accumulation=self.min_accumulation)
        global_batch = micro * k * self.world_size
        changed = self._current is not None and global_batch != self._current
        self._current = global_batch
        r = self.lr_settings(examples_seen, global_batch)
        choice = BatchChoice(micro_batch_size=micro, accumulation=k, world_size=self.world_size,
                             global_batch=global_batch, lr=r["lr"], changed=changed, step=self._step,
                             examples_seen=examples_seen, target_batch=want, betas=r["betas"], eps=r["eps"])
        self._step += 1
        return choice

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue the schedule after a checkpoint."""
        return {"version": _STATE_VERSION, "kind": type(self).__name__, "step": self._step,
                "current": self._current, **self._extra_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the next :meth:`step` continues as if never interrupted.

        Every entry is checked before any is restored: a state that fails leaves the schedule as
        it was.

        Raises:
            ValueError: the state is from another kind of schedule or another version, lacks an
                entry, or holds a value no schedule could have written (named, with the value).
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"Unsupported batch-schedule state (version {state.get('version') if isinstance(state, dict) else state!r}).")
        if state.get("kind") != type(self).__name__:
            raise ValueError(f"The state is from a {state.get('kind')!r} schedule, not a {type(self).__name__!r}.")
        step = int(state_entry(state, "step", lambda v: is_whole(v, 0), "a whole number >= 0"))
        current = state_entry(state, "current", lambda v: v is None or is_whole(v, 1, MAX_BATCH),
                              "None (before the first step) or a whole number of examples >= 1")
        self._load_extra_state(state)  # checks its own entries before it restores them
        self._step = step
        self._current = None if current is None else int(current)

    @property
    def current_batch(self) -> int | None:
        """The global batch of the last step (``None`` before the first)."""
        return self._current

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_batch={self.base_batch}, world_size={self.world_size}, "
                f"max_micro_batch={self.max_micro_batch}, lr_rule={self.lr_rule!r}, current={self._current})")
