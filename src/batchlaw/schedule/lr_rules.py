"""How the learning rate should move when the batch size changes (see the Concepts page 'Learning rate and batch size' in the docs).

Each rule says where it holds; none is valid far above the critical batch size, where the
optimal learning rate saturates (McCandlish et al. 2018: ``eps_opt(B) = eps_max / (1 + B_noise/B)``).
"""

from __future__ import annotations

import math

from .._validation import check_positive_float, check_probability

__all__ = ["linear_rule", "sqrt_rule", "sqrt_rule_limit", "check_betas", "surge_lr", "mccandlish_lr"]


def linear_rule(lr: float, k: float) -> float:
    """Goyal et al. 2017: batch ``B -> k B``, learning rate ``lr -> k lr`` (SGD, with warm-up).

    Valid below the critical batch size (held to B = 8192 on ResNet-50/ImageNet).

    Examples:
        >>> linear_rule(0.1, 4)
        0.4
    """
    return check_positive_float("lr", lr) * check_positive_float("k", k)


def sqrt_rule(lr: float, k: float, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict:
    """Malladi et al. 2022 (arXiv:2205.10287), Adam: ``lr -> sqrt(k) lr``,
    ``1 - beta_i -> k (1 - beta_i)``, ``eps -> eps / sqrt(k)``.

    Valid below the critical batch size, and while ``k (1 - beta_i) < 1``, i.e. for ``k`` below
    :func:`sqrt_rule_limit` ``= 1 / (1 - min(betas))`` (10 for ``beta1 = 0.9``): ``k`` is the
    batch over the batch the betas were tuned at, so this bounds how far the batch may grow in
    all, not in one change.

    Args:
        lr: learning rate at the reference batch.
        k: the batch over the reference batch.
        betas: Adam's betas at the reference batch, each in ``[0, 1)``.
        eps: Adam's epsilon at the reference batch (> 0).

    Raises:
        ValueError: a bad argument, or ``k >= 1 / (1 - beta)`` for some beta.

    Examples:
        >>> r = sqrt_rule(1e-3, 4, betas=(0.9, 0.99))
        >>> round(r["lr"], 6), [round(b, 4) for b in r["betas"]], r["eps"]
        (0.002, [0.6, 0.96], 5e-09)
    """
    lr, k = check_positive_float("lr", lr), check_positive_float("k", k)
    eps = check_positive_float("eps", eps)
    betas = check_betas("betas", betas)
    limit = sqrt_rule_limit(betas)
    if k >= limit:
        b = min(betas)
        raise ValueError(f"The square-root rule sets beta -> 1 - k (1 - beta), which needs k < 1 / (1 - beta) = "
                         f"{limit:.4g} for beta = {b:g}; got k = {k:g}. k is the batch divided by the batch the betas were "
                         f"tuned at: the batch must stay below {limit:.4g} times that one in all, however it gets "
                         "there (or tune the betas at a larger batch).")
    return {"lr": lr * math.sqrt(k), "betas": tuple(1.0 - k * (1.0 - b) for b in betas), "eps": eps / math.sqrt(k)}


def sqrt_rule_limit(betas) -> float:
    """The bound on the batch ratio ``k`` of the square-root rule with ``betas`` (``k`` must stay
    below it): ``1 / (1 - min(betas))`` (rounded to 9 decimals, so that ``beta = 0.9`` gives 10,
    not ``10.000000000000002``), infinite without betas.

    Examples:
        >>> sqrt_rule_limit((0.9, 0.999))
        10.0
    """
    return min((round(1.0 / (1.0 - b), 9) for b in betas), default=math.inf)


def check_betas(name: str, betas) -> tuple:
    """``betas`` as a tuple of floats, each finite and in ``[0, 1)`` (Adam's), else ValueError."""
    try:
        values = tuple(betas)
    except TypeError:
        raise ValueError(f"The '{name}' parameter must be a tuple of numbers in [0, 1). Got {betas!r} instead.") from None
    for b in values:
        check_probability(name, b, open_low=False, open_high=True)
    return tuple(float(b) for b in values)


def mccandlish_lr(batch: float, b_noise: float, lr_max: float) -> float:
    """SGD: ``eps_opt(B) = eps_max / (1 + B_noise / B)`` (McCandlish et al. 2018, eq. 2.6)."""
    b = check_positive_float("batch", batch)
    return check_positive_float("lr_max", lr_max) / (1.0 + check_positive_float("b_noise", b_noise) / b)


def surge_lr(batch: float, b_noise: float, lr_max: float) -> float:
    """Adam-style: the optimal LR rises with ``B``, peaks at ``B = B_noise`` and then falls
    (Li et al. 2024, arXiv:2405.14578): ``eps_max / (0.5 (sqrt(B_noise/B) + sqrt(B/B_noise)))``.

    Examples:
        >>> surge_lr(1000, 1000, 1e-3)
        0.001
    """
    b = check_positive_float("batch", batch)
    bn = check_positive_float("b_noise", b_noise)
    return check_positive_float("lr_max", lr_max) / (0.5 * (math.sqrt(bn / b) + math.sqrt(b / bn)))
