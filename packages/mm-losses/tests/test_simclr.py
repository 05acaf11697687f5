"""nt_xent and lp_simclr against slow references written from the formulas (loops)."""

from __future__ import annotations

import math

import pytest
import torch
from _loss_cases import assert_close

import mm_losses

B, D = 5, 3


def _pair(seed: int, rows: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, D, generator=g, dtype=torch.float64)
    t = 0.5 * x + torch.randn(rows, D, generator=g, dtype=torch.float64)
    return x.requires_grad_(), t.requires_grad_()


def _cos(a, b):
    dot = sum(a[k] * b[k] for k in range(a.shape[0]))
    return dot / torch.sqrt(
        sum(a[k] ** 2 for k in range(a.shape[0])) * sum(b[k] ** 2 for k in range(b.shape[0]))
    )


def nt_xent_reference(x, t, tau):
    """Mean over 2B anchors of CE over [cos(a_i, other_j)/tau]_j ++ [cos(a_i, same_k)/tau]_{k != i}."""
    n = x.shape[0]
    total = 0.0
    for same, other in ((x, t), (t, x)):
        for i in range(n):
            logits = [_cos(same[i], other[j]) / tau for j in range(n)]
            logits += [_cos(same[i], same[k]) / tau for k in range(n) if k != i]
            total = total - (logits[i] - torch.log(sum(torch.exp(v) for v in logits)))
    return total / (2 * n)


def _check(got, want, inputs):
    assert_close(got, want, what="value")
    for g, w in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(want, inputs)):
        assert_close(g, w, what="gradient")


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_nt_xent_matches_reference(tau):
    x, t = _pair(0)
    _check(mm_losses.build("nt_xent", tau=tau)(x, t), nt_xent_reference(x, t, tau), (x, t))


def _sq(a, b):
    return sum((a[k] - b[k]) ** 2 for k in range(a.shape[0]))


def lp_direction_reference(anchors, positives, negatives, tau, skip_self):
    """mean_i pos_i/tau + log mean({exp(-neg_ij/tau)}_j U {exp(-pos_i/tau)})."""
    n = anchors.shape[0]
    total = 0.0
    for i in range(n):
        pos = _sq(anchors[i], positives[i])
        terms = [
            torch.exp(-_sq(anchors[i], negatives[j]) / tau)
            for j in range(negatives.shape[0])
            if not (skip_self and j == i)
        ]
        terms.append(torch.exp(-pos / tau))
        total = total + pos / tau + torch.log(sum(terms) / len(terms))
    return total / n


def lp_simclr_reference(h1, h2, n1=None, n2=None, tau=1.0):
    if n1 is None:
        return 0.5 * (
            lp_direction_reference(h1, h2, h1, tau, True)
            + lp_direction_reference(h2, h1, h2, tau, True)
        )
    return 0.5 * (
        lp_direction_reference(h1, h2, n1, tau, False)
        + lp_direction_reference(h2, h1, n2, tau, False)
    )


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_lp_simclr_with_fresh_negative_batches_matches_reference(tau):
    h1, h2 = _pair(1)
    n1, n2 = _pair(2, rows=7)  # any number of negatives
    loss = mm_losses.build("lp_simclr", tau=tau)
    got = loss(h1, h2, image_negatives=n1, text_negatives=n2)
    _check(got, lp_simclr_reference(h1, h2, n1, n2, tau), (h1, h2, n1, n2))


def test_lp_simclr_without_negatives_uses_the_other_batch_samples():
    h1, h2 = _pair(3)
    got = mm_losses.build("lp_simclr")(h1, h2)
    _check(got, lp_simclr_reference(h1, h2), (h1, h2))


def test_lp_simclr_accepts_and_ignores_a_positional_index():
    h1, h2 = _pair(4)
    loss = mm_losses.build("lp_simclr")
    with torch.no_grad():
        assert_close(loss(h1, h2, torch.arange(B)), loss(h1, h2))


@pytest.mark.parametrize(
    ("negatives", "match"),
    [
        ({"image_negatives": torch.zeros(4, D)}, "text_negatives is missing"),
        ({"image_negatives": torch.zeros(4, D), "text_negatives": torch.zeros(3, D)}, "same shape"),
        (
            {"image_negatives": torch.zeros(4, D + 1), "text_negatives": torch.zeros(4, D + 1)},
            "shape mismatch",
        ),
        ({"image_negatives": torch.zeros(4), "text_negatives": torch.zeros(4)}, r"\[M, dim\]"),
        (
            {"image_negatives": torch.full((4, D), math.nan), "text_negatives": torch.zeros(4, D)},
            "NaN",
        ),
    ],
)
def test_lp_simclr_validates_negative_batches(negatives, match):
    h1, h2 = _pair(5)
    with pytest.raises(ValueError, match=match):
        mm_losses.build("lp_simclr")(h1, h2, **negatives)
