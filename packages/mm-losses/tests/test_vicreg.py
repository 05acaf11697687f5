"""vicreg against a slow reference written from the paper's formulas (loops)."""

from __future__ import annotations

import math

import pytest
import torch
from _loss_cases import assert_close

import mm_losses

B, D = 7, 4


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 0.7 * torch.randn(B, D, generator=g, dtype=torch.float64)
    t = x + 0.5 * torch.randn(B, D, generator=g, dtype=torch.float64)
    return x.requires_grad_(), t.requires_grad_()


def _variance(z, target, eps):
    """1/d sum_k max(0, target - sqrt(Var(z_k) + eps)), unbiased variance."""
    n, d = z.shape
    total = 0.0
    for k in range(d):
        mean = sum(z[i, k] for i in range(n)) / n
        var = sum((z[i, k] - mean) ** 2 for i in range(n)) / (n - 1)
        total = total + torch.clamp(target - torch.sqrt(var + eps), min=0.0)
    return total / d


def _covariance(z):
    """1/d sum_{k != l} C_kl^2 with C = 1/(n-1) sum_i (z_i - mean)(z_i - mean)^T."""
    n, d = z.shape
    means = [sum(z[i, k] for i in range(n)) / n for k in range(d)]
    total = 0.0
    for k in range(d):
        for m in range(d):
            if k != m:
                c = sum((z[i, k] - means[k]) * (z[i, m] - means[m]) for i in range(n)) / (n - 1)
                total = total + c**2
    return total / d


def vicreg_reference(x, t, lam=25.0, mu=25.0, nu=1.0, target=1.0, eps=1e-4):
    n, d = x.shape
    invariance = sum((x[i, k] - t[i, k]) ** 2 for i in range(n) for k in range(d)) / (n * d)
    variance = _variance(x, target, eps) + _variance(t, target, eps)
    covariance = _covariance(x) + _covariance(t)
    return lam * invariance + mu * variance + nu * covariance


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"invariance_weight": 1.0, "variance_weight": 2.0, "covariance_weight": 3.0},
        {"std_target": 2.0, "eps": 1e-2},
    ],
)
def test_vicreg_matches_reference(kwargs):
    x, t = _inputs()
    got = mm_losses.build("vicreg", **kwargs)(x, t)
    ref_kwargs = {
        "lam": kwargs.get("invariance_weight", 25.0),
        "mu": kwargs.get("variance_weight", 25.0),
        "nu": kwargs.get("covariance_weight", 1.0),
        "target": kwargs.get("std_target", 1.0),
        "eps": kwargs.get("eps", 1e-4),
    }
    want = vicreg_reference(x, t, **ref_kwargs)
    assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (x, t)), torch.autograd.grad(want, (x, t))):
        assert_close(g, w)


def test_vicreg_uses_unnormalised_embeddings():
    x, t = _inputs(1)
    loss = mm_losses.build("vicreg")
    with torch.no_grad():
        assert not math.isclose(float(loss(3.0 * x, 3.0 * t)), float(loss(x, t)))
