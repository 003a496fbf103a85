"""The stability limit of a learning-rate rule, found by short runs (for the schedule comparison).

:func:`probe_lr_cap` trains short runs from the initialisation, one per batch of a grid at the
LR the rule gives that batch, in increasing order; the first whose held-out loss is not finite,
or is worse than the previous (smaller) batch's, marks the limit, and the LR of the last batch
before it becomes the cap. It is an LR range test in the manner of Smith 2017 ("Cyclical
Learning Rates for Training Neural Networks", section 3.3), with the batch moving with the LR so
the gradient noise per step stays on the rule's path (under the linear rule ``lr / B`` is
constant, so a worse loss means curvature, not noise).
"""

from __future__ import annotations

import math

__all__ = ["probe_lr_cap", "initial_losses", "resolve_lr_cap", "rule_lr"]


def initial_losses(workload, seeds) -> dict[int, float]:
    """The held-out loss of the initial model of each seed (cheap: no training)."""
    return {s: workload.eval_loss(workload.make_model(s)) for s in seeds}


def probe_lr_cap(workload, grid, *, seed: int, steps: int, lr_schedule=None) -> dict:
    """The stability limit of a learning-rate rule, found by short runs from the initialisation.

    Args:
        workload: a :class:`~batchlaw.workloads.Workload`.
        grid: ``[(batch, lr), ...]`` by increasing batch: each batch (examples) with the LR the
            rule gives it (the first is the reference, the LR the user chose).
        seed: initialisation and data seed of every probe.
        steps: optimizer steps per probe.
        lr_schedule: callable ``examples seen -> factor`` on the LR (a warm-up), or ``None``.

    Returns:
        ``{"cap", "limit", "probes"}``: ``cap`` is the LR of the last probe that passed
        (``None``: the reference failed), ``limit`` the first that failed (``None``: none did),
        ``probes`` one ``{"batch", "lr", "loss", "status"}`` per run (``status``: ``ok``,
        ``diverged`` (not finite) or ``worse`` (held-out loss above the previous probe's);
        the probes stop at the first failure).
    """
    import torch

    previous = workload.eval_loss(workload.make_model(seed))
    probes, cap, limit = [], None, None
    for batch, lr in grid:
        model = workload.make_model(seed)
        opt = workload.make_optimizer(model, lr)
        gen = torch.Generator().manual_seed(seed + 1)
        seen, finite = 0, True
        for _ in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * (lr_schedule(seen) if lr_schedule is not None else 1.0)
            loss = workload.loss(model, workload.sample_batch(batch, gen))
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            seen += batch
        final = workload.eval_loss(model) if finite else math.inf
        status = "diverged" if not math.isfinite(final) else ("worse" if final > previous else "ok")
        probes.append({"batch": batch, "lr": lr, "loss": final if math.isfinite(final) else None, "status": status})
        if status != "ok":
            limit = lr
            break
        cap, previous = lr, final
    return {"cap": cap, "limit": limit, "probes": probes}


def rule_lr(lr0: float, batch: int, small: int, rule: str) -> float:
    """The learning rate ``rule`` gives ``batch`` from ``lr0`` at ``small`` (no cap)."""
    from .batch import rescale_lr

    return rescale_lr(lr0, batch / small, rule)["lr"]


def resolve_lr_cap(cfg, wl, lr0: float, rule: str, grid: list[int], lr_schedule, *, margin: float) -> dict:
    """The cap on every run's learning rate of a comparison ``cfg``: the user's (``cfg.lr_cap``),
    ``margin`` times the workload's known limit (``wl.max_stable_lr``), or the probe's over ``grid``.

    Returns:
        ``{"lr", "source", "limit", "margin", "probes"}``; ``lr`` is ``None`` when every LR of
        the probe passed (no cap needed up to the largest batch).

    Raises:
        ValueError: the LR at the small batch fails its own probe.
    """
    if cfg.lr_cap is not None:
        return {"lr": cfg.lr_cap, "source": "user", "limit": None, "margin": None, "probes": []}
    limit = getattr(wl, "max_stable_lr", None)
    if limit is not None:
        return {"lr": margin * limit, "source": "workload", "limit": limit, "margin": margin, "probes": []}
    grid_lrs = [(b, rule_lr(lr0, b, cfg.small_batch, rule)) for b in grid]
    res = probe_lr_cap(wl, grid_lrs, seed=cfg.seeds[0], steps=cfg.lr_probe_steps, lr_schedule=lr_schedule.multiplier)
    if res["cap"] is None:
        raise ValueError(f"The 'lr' parameter ({lr0:g} at the small batch {cfg.small_batch}) does not lower the held-out "
                         f"loss in a {cfg.lr_probe_steps}-step probe from the initialisation (probe: {res['probes'][0]}). "
                         "Choose a smaller learning rate.")
    cap = res["cap"] if res["limit"] is not None else None  # None: every LR of the grid passed
    return {"lr": cap, "source": "probe", "limit": res["limit"], "margin": None, "probes": res["probes"]}
