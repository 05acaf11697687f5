"""GHM attention and transformer block against slow, obviously-correct references."""

import math

import pytest
import torch

from mm_models.ghm import (
    Block,
    GHMSelfAttention,
    GHMTransformer,
    GHMTransformerConfig,
    relu_attention,
)


def naive_attention(q, k, v, mask, activation):
    """Loop over (batch, head, query): weights per key, then a weighted sum of values."""
    B, H, T, Dh = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                scores = [float(q[b, h, i] @ k[b, h, j]) / math.sqrt(Dh) for j in range(T)]
                allowed = [mask is None or bool(mask[i, j]) for j in range(T)]
                if activation == "relu":
                    w = [max(s, 0.0) if a else 0.0 for s, a in zip(scores, allowed)]
                else:
                    m = max(s for s, a in zip(scores, allowed) if a)
                    e = [math.exp(s - m) if a else 0.0 for s, a in zip(scores, allowed)]
                    w = [x / sum(e) for x in e]
                for j in range(T):
                    out[b, h, i] += w[j] * v[b, h, j]
    return out


def random_mask(T, gen):
    mask = torch.rand(T, T, generator=gen) < 0.6
    mask |= torch.eye(T, dtype=torch.bool)  # every query may attend to itself
    return mask


@pytest.mark.parametrize("use_mask", [False, True])
def test_relu_attention_matches_loop(use_mask):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = random_mask(5, gen) if use_mask else None
    torch.testing.assert_close(
        relu_attention(q, k, v, mask), naive_attention(q, k, v, mask, "relu")
    )


@pytest.mark.parametrize("activation", ["softmax", "relu"])
@pytest.mark.parametrize("n_head", [1, 2])
def test_self_attention_module_matches_loop(activation, n_head):
    torch.manual_seed(0)
    d, T = 6, 5
    attn = GHMSelfAttention(d, n_head=n_head, activation=activation, out_proj=False).double()
    x = torch.randn(2, T, d, dtype=torch.float64)
    mask = random_mask(T, torch.Generator().manual_seed(1))
    with torch.no_grad():
        q, k, v = attn.qkv(x).split(d, dim=-1)
    split = lambda t: t.view(2, T, n_head, d // n_head).transpose(1, 2)  # noqa: E731
    expected = naive_attention(split(q), split(k), split(v), mask, activation)
    expected = expected.transpose(1, 2).reshape(2, T, d)
    torch.testing.assert_close(attn(x, mask), expected.detach())


def test_single_head_equals_formula():
    """n_head=1, no projection: A(x) = act(x Wq (x Wk)^T / sqrt(d)) x Wv (with biases)."""
    torch.manual_seed(0)
    d = 8
    attn = GHMSelfAttention(d, n_head=1, activation="softmax").double()
    assert attn.proj is None  # the authors' single-head model has no output projection
    x = torch.randn(3, 4, d, dtype=torch.float64)
    w, b = attn.qkv.weight, attn.qkv.bias
    q = x @ w[:d].T + b[:d]
    k = x @ w[d : 2 * d].T + b[d : 2 * d]
    v = x @ w[2 * d :].T + b[2 * d :]
    expected = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1) @ v
    torch.testing.assert_close(attn(x), expected)


def test_multi_head_shape_and_projection_default():
    attn = GHMSelfAttention(12, n_head=4)
    assert attn.proj is not None  # heads are mixed by default when n_head > 1
    assert GHMSelfAttention(12, n_head=4, out_proj=False).proj is None
    assert GHMSelfAttention(12, n_head=1, out_proj=True).proj is not None
    assert attn(torch.randn(2, 7, 12)).shape == (2, 7, 12)


def test_block_is_pre_ln_with_single_residual_adds():
    torch.manual_seed(0)
    cfg = GHMTransformerConfig(d_model=8, n_layer=1, attention="relu")
    block = Block(cfg).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    h = x + block.attn(block.ln_1(x))
    expected = h + block.mlp.proj(torch.nn.functional.gelu(block.mlp.fc(block.ln_2(h))))
    torch.testing.assert_close(block(x), expected)


def test_transformer_hidden_states_and_final_norm():
    torch.manual_seed(0)
    cfg = GHMTransformerConfig(d_model=8, n_layer=3)
    tf = GHMTransformer(cfg)
    x = torch.randn(2, 4, 8)
    out, hidden = tf(x, return_hidden=True)
    assert len(hidden) == 3 and all(h.shape == (2, 4, 8) for h in hidden)
    torch.testing.assert_close(hidden[0], tf.blocks[0](x))
    torch.testing.assert_close(out, tf.ln_f(hidden[-1]))
    torch.testing.assert_close(tf(x), out)


def test_bad_attention_arguments():
    with pytest.raises(ValueError, match="n_head"):
        GHMSelfAttention(10, n_head=3)
    with pytest.raises(ValueError, match="n_head"):
        GHMTransformer(GHMTransformerConfig(d_model=10, n_head=4))
    with pytest.raises(ValueError, match="attention"):
        GHMSelfAttention(8, activation="sigmoid")
    tf = GHMTransformer(GHMTransformerConfig(d_model=8, n_layer=1))
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="bool"):
        tf(x, torch.ones(4, 4))
    with pytest.raises(ValueError, match="shape"):
        tf(x, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no allowed key"):
        tf(x, torch.zeros(4, 4, dtype=torch.bool))
