"""Tests for mm_data.alignment: the redundancy / uniqueness / heterogeneity data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mm_data.alignment import all_bit_patterns, heterogeneity_map, label_model, make_synthetic


def test_bit_patterns_enumerate_every_vector_once():
    grid = all_bit_patterns(4)
    assert grid.shape == (16, 4)
    assert [tuple(r) for r in grid] == list(itertools.product([0, 1], repeat=4))


@pytest.mark.parametrize("u", [0, 3, 8])
def test_label_reads_8_bits_with_u_unique_ones_and_is_balanced(u):
    model = label_model(u, seed=5)
    cols = model.columns
    assert len(cols) == 8 and len(set(cols.tolist())) == 8
    shared = [c for c in cols if c < 8]
    unique1 = [c for c in cols if 8 <= c < 12]
    unique2 = [c for c in cols if c >= 12]
    assert (len(shared), len(unique1), len(unique2)) == (8 - u, u // 2, u - u // 2)
    assert np.abs(model.probs.mean(axis=0) - 0.25).max() <= 0.01 or model.balance_rounds == 100
    np.testing.assert_allclose(model.probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(model.weights, axis=1), 1.0)
    # p(y|x) depends on the chosen bits only: a grid row and the same row with an
    # unused bit flipped have the same law
    grid = all_bit_patterns()
    unused = next(c for c in range(16) if c not in set(cols.tolist()))
    flipped = grid.copy()
    flipped[:, unused] ^= 1
    index = flipped.astype(np.int64) @ (1 << np.arange(15, -1, -1))
    np.testing.assert_allclose(model.probs[index], model.probs)


def test_unbalanced_softmax_is_what_the_rebalancing_corrects():
    model = label_model(2, seed=1)
    z = all_bit_patterns()[:, model.columns].astype(float)
    logits = z @ model.weights / 0.05
    raw = np.exp(logits - logits.max(axis=1, keepdims=True))
    raw /= raw.sum(axis=1, keepdims=True)
    # the rebalanced law is raw * c(y) renormalised for one per-class factor c
    ratio = model.probs / raw
    c = ratio / ratio.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(c, np.broadcast_to(c[:1], c.shape), rtol=1e-6)


def test_labels_are_drawn_from_the_table():
    model = label_model(4, seed=2)
    rng = np.random.default_rng(0)
    bits = np.tile(all_bit_patterns()[1234], (20000, 1))
    y = model.sample(bits, rng)
    freq = np.bincount(y, minlength=4) / len(y)
    np.testing.assert_allclose(freq, model.probs[1234], atol=0.015)


def test_heterogeneity_map_is_seeded_frozen_and_deep_as_asked():
    a, b = heterogeneity_map(3, seed=7), heterogeneity_map(3, seed=7)
    x = torch.randn(5, 12)
    assert torch.equal(a(x), b(x))
    assert not any(p.requires_grad for p in a.parameters())
    assert sum(isinstance(m, torch.nn.Tanh) for m in a) == 3
    assert not torch.equal(heterogeneity_map(3, seed=8)(x), a(x))
    with pytest.raises(ValueError, match="D_phi"):
        heterogeneity_map(-1, seed=0)


def test_splits_are_stratified_zscored_and_share_samples_across_views():
    data = make_synthetic(4000, uniqueness=[0, 8], dphi=[0, 2], seed=3)
    sizes = {s: len(data.x1[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 4000 and abs(sizes["train"] - 2800) <= 4
    for s in ("val", "test"):
        a = np.bincount(data.y["train"][0].numpy(), minlength=4) / sizes["train"]
        b = np.bincount(data.y[s][0].numpy(), minlength=4) / sizes[s]
        np.testing.assert_allclose(a, b, atol=0.01)
    assert torch.allclose(data.x1["train"].mean(0), torch.zeros(12), atol=1e-5)
    assert torch.allclose(data.x1["train"].std(0), torch.ones(12), atol=1e-3)
    # D_phi = 0 is one Linear of [x_c, x_u2]: shared columns of x1 and x2 stay related
    x1, x2 = data.x1["train"].double(), data.x2["train"][0].double()
    design = torch.cat([x2, torch.ones(len(x2), 1, dtype=x2.dtype)], dim=1)

    def residual(target):
        coef = torch.linalg.lstsq(design, target).solution
        return float(((design @ coef - target) ** 2).mean())

    assert residual(x1[:, :8]) < 1e-8  # x_c is a linear function of the D_phi = 0 view
    assert residual(x1[:, 8:]) > 0.95  # x_u1 is invisible from modality 2 (unit variance)


def test_modality_1_alone_loses_bayes_accuracy_exactly_when_u_is_positive():
    """Exact Bayes accuracy from [x_c, x_u1] vs from every bit (by enumeration)."""
    for u in range(9):
        model = label_model(u, seed=11)
        full = model.probs.max(axis=1).mean()
        from_x1 = model.probs.reshape(2**12, 2**4, 4).mean(axis=1).max(axis=1).mean()
        if u == 0:  # the label reads shared bits only
            assert math.isclose(from_x1, full, rel_tol=1e-12)
        else:  # x_u2 holds at least one of the label's bits
            assert from_x1 < full - 1e-3, u
