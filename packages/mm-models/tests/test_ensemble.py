"""Tests for mm_models.ensemble.EnsembleMLP: each member is an ordinary MLP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mm_models.ensemble import EnsembleMLP


def test_each_member_computes_and_learns_like_a_separate_mlp():
    torch.manual_seed(0)
    ens = EnsembleMLP(seeds=[3, 4, 5], in_dim=6, width=5, depth=2, out_dim=4).double()
    x = torch.randn(3, 8, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (3, 8))
    logits = ens(x)
    loss = sum(F.cross_entropy(logits[e], y[e]) for e in range(3))
    loss.backward()
    for e in range(3):
        plain = ens.member(e).double()
        assert torch.allclose(plain(x[e]), logits[e], atol=1e-12)
        F.cross_entropy(plain(x[e]), y[e]).backward()
        linears = [m for m in plain if isinstance(m, torch.nn.Linear)]
        for lin, w, b in zip(linears, ens.weights, ens.biases):
            assert torch.allclose(lin.weight.grad, w.grad[e].T, atol=1e-12)
            assert torch.allclose(lin.bias.grad, b.grad[e, 0], atol=1e-12)


def test_hidden_layers_are_the_post_activation_outputs():
    ens = EnsembleMLP(seeds=[1, 2], in_dim=4, width=3, depth=3, out_dim=2)
    x = torch.randn(2, 5, 4)
    hidden = ens.hidden(x)
    assert len(hidden) == 4 and all(h.shape == (2, 5, 3) for h in hidden)
    plain = ens.member(1)
    activations, h = [], x[1]
    for module in plain:
        h = module(h)
        if isinstance(module, torch.nn.LeakyReLU):
            activations.append(h)
    for got, want in zip(hidden, activations):
        assert torch.allclose(got[1], want, atol=1e-6)


def test_seeds_fix_each_members_init():
    a = EnsembleMLP(seeds=[7, 8], in_dim=3, width=3, depth=1, out_dim=2)
    b = EnsembleMLP(seeds=[8, 7], in_dim=3, width=3, depth=1, out_dim=2)
    for wa, wb in zip(a.weights, b.weights):
        assert torch.equal(wa[0], wb[1]) and not torch.equal(wa[0], wa[1])


def test_member_gradient_clipping_is_per_member():
    ens = EnsembleMLP(seeds=[1, 2], in_dim=3, width=3, depth=1, out_dim=2)
    x = torch.randn(2, 4, 3)
    (ens(x)[0].sum() * 1000 + ens(x)[1].sum() * 1e-3).backward()
    before = [p.grad.clone() for p in ens.parameters()]
    norms = ens.clip_member_grad_norm_(1.0)
    after_norms = (
        torch.stack([p.grad.flatten(1).square().sum(1) for p in ens.parameters()]).sum(0).sqrt()
    )
    assert norms[0] > 1.0 and after_norms[0] == pytest.approx(1.0, rel=1e-5)
    assert norms[1] < 1.0  # the small member is untouched
    for b, p in zip(before, ens.parameters()):
        assert torch.equal(b[1], p.grad[1])


def test_bad_shapes_are_named():
    ens = EnsembleMLP(seeds=[1, 2], in_dim=3, width=3, depth=1, out_dim=2)
    with pytest.raises(ValueError, match=r"members=2, batch, in=3"):
        ens(torch.randn(3, 4, 3))
    with pytest.raises(ValueError, match="depth"):
        EnsembleMLP(seeds=[1], in_dim=3, width=3, depth=-1, out_dim=2)
