"""How the learning rate should move when the batch size changes (see the Concepts page 'Learning rate and batch size' in the docs).

Each rule says where it holds; none is valid far above the critical batch size, where the
optimal learning rate saturates (McCandlish et al. 2018: ``eps_opt(B) = eps_max / (1 + B_noise/B)``).
"""

from __future__ import annotations

import math

from .._validation import check_positive_float

__all__ = ["linear_rule", "sqrt_rule", "surge_lr", "mccandlish_lr"]


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

    Valid below the critical batch size, and while ``k (1 - beta_i) < 1``.

    Examples:
        >>> r = sqrt_rule(1e-3, 4, betas=(0.9, 0.99))
        >>> round(r["lr"], 6), [round(b, 4) for b in r["betas"]], r["eps"]
        (0.002, [0.6, 0.96], 5e-09)
    """
    lr, k = check_positive_float("lr", lr), check_positive_float("k", k)
    new_betas = []
    for b in betas:
        nb = 1.0 - k * (1.0 - b)
        if nb <= 0:
            raise ValueError(f"The square-root rule needs k (1 - beta) < 1; with beta = {b} and k = {k} it fails. "
                             "Scale the batch in smaller steps.")
        new_betas.append(nb)
    return {"lr": lr * math.sqrt(k), "betas": tuple(new_betas), "eps": eps / math.sqrt(k)}


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
