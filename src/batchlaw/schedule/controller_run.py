"""Train a workload to a target loss with the :class:`~batchlaw.schedule.BatchController`, counting
everything it costs (the trunk's steps and examples, and the branches' examples and seconds)."""

from __future__ import annotations

import math
import time

from .batch import apply_choice

__all__ = ["train_with_controller"]


def _crossing(prev, cur, target):
    """Linear crossing between two evaluations ``(steps, examples, seconds, loss)``."""
    (s0, e0, w0, l0), (s1, e1, w1, l1) = prev, cur
    f = 1.0 if l0 <= target or l0 == l1 else (l0 - target) / (l0 - l1)
    return s0 + f * (s1 - s0), e0 + f * (e1 - e0), w0 + f * (w1 - w0)


def train_with_controller(workload, controller, *, seed: int, target_loss: float | None, max_examples: int,
                          eval_every: int, branch: bool = True) -> dict:
    """Train ``workload`` with ``controller`` until the held-out loss reaches ``target_loss``.

    The loop is the one of ``batchlaw schedule compare`` (the same data stream per seed, the
    same evaluation and crossing rule) with a :class:`~batchlaw.noise.GradientNoiseMonitor`
    attached and, when ``branch``, the controller bound to the model for branching.

    Args:
        workload: a :class:`~batchlaw.workloads.Workload`.
        controller: a fresh :class:`~batchlaw.schedule.BatchController`.
        seed: initialisation and data seed.
        target_loss: held-out loss to reach (``None``: train until ``max_examples``).
        max_examples: budget of examples, the branches' included.
        eval_every: examples between evaluations.
        branch: bind the controller (branches allowed) or not (noise scale only).

    Returns:
        ``status`` (``reached``, ``budget`` or ``diverged``), ``steps``, ``examples`` (the
        trunk's, interpolated at the crossing; ``None`` unless reached), ``branch_examples``,
        ``branch_eval_examples``, ``branch_seconds`` (spent before the crossing),
        ``examples_with_branches`` (the sum), ``wall_s``, ``final_loss``, ``batches``
        (``[[step, examples seen, batch], ...]`` at each change), ``curve`` and ``report``
        (:meth:`~batchlaw.schedule.BatchController.report`).
    """
    import torch

    from ..noise import GradientNoiseMonitor

    model = workload.make_model(seed)
    opt = workload.make_optimizer(model, 1e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    monitor = GradientNoiseMonitor(model, ema_beta=0.95)
    if branch:
        controller.bind_workload(workload, model, opt)
    seen, steps, wall = 0, 0, 0.0
    prev = (0, 0, 0.0, workload.eval_loss(model))
    curve, batches = [list(prev)], []
    status, hit, next_eval = "budget", None, eval_every
    try:
        while seen + controller.branch_examples < max_examples:  # the budget pays for the branches too
            t0 = time.perf_counter()
            c = controller.step(seen, monitor)
            if c.changed or not batches:
                batches.append([steps, seen, c.global_batch])
            total = 0.0
            for _ in range(c.accumulation):
                loss = workload.loss(model, workload.sample_batch(c.micro_batch_size, gen)) / c.accumulation
                loss.backward()
                total += float(loss.detach())
            monitor.step(c.micro_batch_size)
            apply_choice(opt, c)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seen += c.global_batch
            steps += 1
            wall += time.perf_counter() - t0
            if not math.isfinite(total):
                status = "diverged"
                break
            if seen >= next_eval:
                while next_eval <= seen:
                    next_eval += eval_every
                cur = (steps, seen, wall, workload.eval_loss(model))
                curve.append(list(cur))
                if not math.isfinite(cur[3]):
                    status = "diverged"
                    break
                if target_loss is not None and cur[3] <= target_loss:
                    status, hit = "reached", _crossing(prev, cur, target_loss)
                    break
                prev = cur
    finally:
        monitor.remove()
        controller.unbind()
    tpe = workload.tokens_per_example
    out = {"status": status, "steps": None, "examples": None, "tokens": None, "wall_s": wall,
           "final_loss": curve[-1][3], "branch_examples": controller.branch_examples,
           "branch_eval_examples": controller.branch_eval_examples, "branch_seconds": controller.branch_seconds,
           "examples_with_branches": None, "batches": batches, "curve": curve, "report": controller.report()}
    if hit is not None:
        out.update(steps=hit[0], examples=hit[1], tokens=hit[1] * tpe if tpe else None, wall_s=hit[2],
                   examples_with_branches=hit[1] + controller.branch_examples)
    return out
