"""MLP encoders of the identifiability simulation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mm_models.identifiability import MLPEncoder, mlp_encoder_pair


def test_widths_activation_and_shapes():
    enc = MLPEncoder(15, encoding_size=5)
    linears = [m for m in enc.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (15, 150),
        (150, 750),
        (750, 750),
        (750, 750),
        (750, 750),
        (750, 150),
        (150, 5),
    ]
    acts = [m for m in enc.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 6 and all(a.negative_slope == 0.01 for a in acts)
    assert not isinstance(list(enc.net)[-1], nn.LeakyReLU)
    out = enc(torch.randn(7, 15))
    assert out.shape == (7, 5)
    assert MLPEncoder(4, encoding_size=3)(torch.randn(2, 4)).shape == (2, 3)


def test_matches_reference_forward():
    torch.manual_seed(0)
    enc = MLPEncoder(3, encoding_size=2, hidden_multipliers=(2, 3))
    x = torch.randn(5, 3)
    linears = [m for m in enc.net if isinstance(m, nn.Linear)]
    h = x
    for i, lin in enumerate(linears):
        h = h @ lin.weight.T + lin.bias
        if i < len(linears) - 1:
            h = torch.where(h > 0, h, 0.01 * h)
    torch.testing.assert_close(enc(x), h)


def test_pair_separate_vs_shared():
    g1, g2 = mlp_encoder_pair(6, 4)
    assert g1 is not g2
    assert not set(map(id, g1.parameters())) & set(map(id, g2.parameters()))
    x = torch.randn(3, 6)
    assert not torch.allclose(g1(x), g2(x))
    s1, s2 = mlp_encoder_pair(6, 4, shared=True)
    assert s1 is s2
    assert sum(p.numel() for p in nn.ModuleList([s1, s2]).parameters()) == sum(
        p.numel() for p in s1.parameters()
    )
    a, b = mlp_encoder_pair(6, 4, input_dim2=8)
    assert a.input_dim == 6 and b.input_dim == 8


def test_bad_input():
    with pytest.raises(ValueError, match="input_dim"):
        MLPEncoder(0)
    with pytest.raises(ValueError, match="encoding_size"):
        MLPEncoder(5, encoding_size=-1)
    with pytest.raises(ValueError, match="hidden_multipliers"):
        MLPEncoder(5, hidden_multipliers=(10, 0))
    with pytest.raises(ValueError, match=r"\[batch, 5\]"):
        MLPEncoder(5)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="shared"):
        mlp_encoder_pair(5, shared=True, input_dim2=6)
