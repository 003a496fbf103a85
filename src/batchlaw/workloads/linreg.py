"""Synthetic linear regression whose gradient noise scale is known in closed form.

Data: ``x ~ N(0, I_d)``, ``y = w* . x + eps`` with ``eps ~ N(0, sigma^2)``. Model:
``f(x) = w . x`` (``torch.nn.Linear(d, 1, bias=False)``), loss per example
``l = (w . x - y)^2 / 2``. Write ``delta = w - w*`` and ``r = delta . x - eps``.

Per-example gradient: ``g = r x``. True gradient: ``G = E[r x] = E[x x^T] delta = delta``.

Second moment, using Isserlis' theorem for Gaussian ``x``
(``E[(delta . x)^2 x x^T] = |delta|^2 I + 2 delta delta^T``) and independence of ``eps``:

    E[g g^T] = E[(delta . x)^2 x x^T] + sigma^2 E[x x^T] = (|delta|^2 + sigma^2) I + 2 delta delta^T

so the per-example covariance is ``Sigma = E[g g^T] - G G^T = (|delta|^2 + sigma^2) I + delta delta^T``
and

    tr(Sigma) = d (|delta|^2 + sigma^2) + |delta|^2,      |G|^2 = |delta|^2,

    B_simple = tr(Sigma) / |G|^2 = (d + 1) + d sigma^2 / |delta|^2        (examples).

Far from the optimum the noise scale is about ``d + 1``; it grows without bound as the model
approaches ``w*`` (``|delta| -> 0``), as McCandlish et al. 2018 observe of real training: the
noise scale rises as the loss falls. The expected loss is ``(|delta|^2 + sigma^2) / 2``.
"""

from __future__ import annotations

import math

import torch

from .._validation import check_positive_float, check_positive_int
from .base import Workload

__all__ = ["LinearRegression", "linreg_b_simple"]


def linreg_b_simple(delta_sq: float, dim: int, noise_std: float) -> float:
    """Analytic ``B_simple = (d + 1) + d sigma^2 / |delta|^2`` (examples, ``C = I``); see the module docstring."""
    if delta_sq <= 0:
        return math.inf
    return (dim + 1) + dim * noise_std**2 / delta_sq


class LinearRegression(Workload):
    """Linear regression with Gaussian inputs and an analytic noise scale.

    Args:
        dim: input dimension ``d``.
        noise_std: label noise ``sigma``.
        init_distance: ``|w0 - w*|`` at initialisation.
        data_seed: seed of the true weights ``w*``.
        condition: ratio of the largest to the smallest input variance (1: isotropic inputs).
    """

    name = "linreg"
    default_lr = 0.05
    default_micro_batch = 16

    def __init__(self, dim: int = 16, noise_std: float = 1.0, init_distance: float = 2.0, data_seed: int = 0,
                 condition: float = 1.0):
        self.dim = check_positive_int("dim", dim)
        self.condition = check_positive_float("condition", condition)
        if self.condition < 1:
            raise ValueError(f"The 'condition' parameter must be >= 1. Got {condition!r} instead.")
        self.variances = torch.logspace(0, -math.log10(self.condition), self.dim)  # (d,) diag of C
        self.noise_std = check_positive_float("noise_std", noise_std, allow_zero=True)
        self.init_distance = check_positive_float("init_distance", init_distance)
        gen = torch.Generator().manual_seed(data_seed)
        self.w_star = torch.randn(self.dim, generator=gen)  # (d,)

    def make_model(self, seed: int) -> torch.nn.Module:
        gen = torch.Generator().manual_seed(seed)
        direction = torch.randn(self.dim, generator=gen)
        model = torch.nn.Linear(self.dim, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_((self.w_star + self.init_distance * direction / direction.norm())[None, :])
        return model

    def sample_batch(self, batch_size: int, generator: torch.Generator):
        x = torch.randn(batch_size, self.dim, generator=generator) * self.variances.sqrt()  # (B, d)
        eps = self.noise_std * torch.randn(batch_size, generator=generator)  # (B,)
        return x, x @ self.w_star + eps

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return 0.5 * (model(x).squeeze(-1) - y).square().mean()

    def _delta(self, model: torch.nn.Module) -> torch.Tensor:
        return model.weight.detach()[0].double() - self.w_star.double()  # (d,)

    def delta_sq(self, model: torch.nn.Module) -> float:
        """``|w - w*|^2`` of the model's current weights."""
        return float(self._delta(model).square().sum())

    def b_simple(self, model: torch.nn.Module) -> float:
        """Analytic ``B_simple`` (examples) at the model's current weights."""
        delta, c = self._delta(model), self.variances.double()
        g_sq = float((c * delta).square().sum())
        if g_sq <= 0:
            return math.inf
        return float((delta @ (c * delta) + self.noise_std**2) * c.sum()) / g_sq + 1.0

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        """Exact expected loss ``(delta^T C delta + sigma^2) / 2``."""
        delta = self._delta(model)
        return 0.5 * float(delta @ (self.variances.double() * delta) + self.noise_std**2)

    def describe(self) -> dict:
        return {"name": self.name, "tokens_per_example": None, "dim": self.dim,
                "noise_std": self.noise_std, "init_distance": self.init_distance, "condition": self.condition,
                "b_simple_formula": "(delta^T C delta + sigma^2) tr(C) / |C delta|^2 + 1, delta = w - w*"}
