"""A multi-label linear probe on frozen features, selected on a dev split by macro-F1.

`multilabel_probe` trains one Linear(D, C) per (learning rate, weight decay) grid point
with BCE (``pos_weight = (N - pos) / (pos + 1e-6)`` per class), Adam, full epochs of
shuffled mini-batches, and keeps the epoch and grid point with the best dev macro-F1
(predictions: logit > 0). All grid points train together as one batched model. `macro_f1`
is the mean of the per-class F1 scores (a class with no positive and no predicted
positive scores 0, as scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["f1_per_class", "macro_f1", "multilabel_probe"]

LRS = (1e-4, 5e-4, 1e-3, 5e-3)
WEIGHT_DECAYS = (0.0, 0.1, 1e-2, 1e-3, 1e-4)


def f1_per_class(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """F1 of each column of 0/1 predictions vs 0/1 targets ([..., N, C] -> [..., C])."""
    pred, target = pred.float(), target.float()
    tp = (pred * target).sum(dim=-2)
    denominator = pred.sum(dim=-2) + target.sum(dim=-2)
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1e-12), 0.0)


def macro_f1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the per-class F1."""
    return f1_per_class(pred, target).mean(dim=-1)


def _check(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"{name}: features must be [N, D] and labels [N, C] of the same N, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: features hold NaN or inf")


def multilabel_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    dev: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    lrs: Sequence[float] = LRS,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    epochs: int = 100,
    batch_size: int = 128,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the grid, select (grid point, epoch) on dev macro-F1, score test.

    Each split is (features [N, D], 0/1 labels [N, C]). Returns ``test_f1`` (macro),
    ``test_f1_per_class`` [C], ``dev_f1``, and the chosen ``lr``, ``weight_decay``, ``epoch``.
    """
    for name, (x, y) in (("train", train), ("dev", dev), ("test", test)):
        _check(name, x, y)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    grid = list(itertools.product(lrs, weight_decays))
    generator = torch.Generator().manual_seed(seed)
    x, y = train[0].float(), train[1].float()
    n, d = x.shape
    c = y.shape[1]
    mean, std = x.mean(0), x.std(0) + 1e-6  # standardised on the training rows
    norm = [(s[0].float() - mean) / std for s in (train, dev, test)]
    positives = y.sum(0)
    pos_weight = (n - positives) / (positives + 1e-6)
    g = len(grid)
    weight = torch.zeros(g, d, c)
    bias = torch.zeros(g, 1, c)
    bound = 1 / d**0.5
    weight.uniform_(-bound, bound, generator=generator)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    lr = torch.tensor([p[0] for p in grid]).view(g, 1, 1)
    wd = torch.tensor([p[1] for p in grid]).view(g, 1, 1)
    state = {k: [torch.zeros_like(weight), torch.zeros_like(bias)] for k in ("m", "v")}
    betas, eps, step = (0.9, 0.999), 1e-8, 0
    best = (-1.0, 0, 0)  # (dev macro-F1, grid index, epoch)
    best_params = None
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            logits = torch.baddbmm(bias, norm[0][rows].expand(g, -1, -1), weight)
            target = y[rows].expand(g, -1, -1)
            loss = F.binary_cross_entropy_with_logits(
                logits, target, pos_weight=pos_weight, reduction="none"
            ).mean(dim=(1, 2)).sum()  # fmt: skip
            grads = torch.autograd.grad(loss, (weight, bias))
            step += 1
            with torch.no_grad():  # Adam with L2 weight decay in the gradient (torch's Adam)
                for k, (p, grad) in enumerate(zip((weight, bias), grads)):
                    grad = grad + wd * p
                    state["m"][k].mul_(betas[0]).add_(grad, alpha=1 - betas[0])
                    state["v"][k].mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
                    m_hat = state["m"][k] / (1 - betas[0] ** step)
                    v_hat = state["v"][k] / (1 - betas[1] ** step)
                    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
        with torch.no_grad():
            dev_logits = torch.baddbmm(bias, norm[1].expand(g, -1, -1), weight)
            scores = macro_f1(dev_logits > 0, dev[1].expand(g, -1, -1))
            k = int(scores.argmax())
            if float(scores[k]) > best[0]:
                best = (float(scores[k]), k, epoch)
                best_params = (weight[k].detach().clone(), bias[k].detach().clone())
    _, k, epoch = best
    w, b = best_params
    test_pred = (norm[2] @ w + b) > 0
    per_class = f1_per_class(test_pred, test[1])
    return {"test_f1": float(per_class.mean()), "test_f1_per_class": per_class.tolist(),
            "dev_f1": best[0], "lr": grid[k][0], "weight_decay": grid[k][1],
            "epoch": epoch}  # fmt: skip
