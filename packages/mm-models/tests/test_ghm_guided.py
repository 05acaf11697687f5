"""Guided-training penalty and the level-to-leaf broadcast, against hand-written loops."""

import pytest
import torch

from mm_models.ghm import expand_level_to_leaves, guided_penalty


def test_expand_level_to_leaves_gives_each_leaf_its_ancestor():
    n_child, n_layer = 3, 3
    for level in range(n_layer + 1):
        msg = torch.randn(2, n_child**level, 4)
        out = expand_level_to_leaves(msg, n_child, n_layer, level)
        assert out.shape == (2, n_child**n_layer, 4)
        for leaf in range(n_child**n_layer):
            ancestor = leaf
            for _ in range(n_layer - level):  # walk up: parent of node i is i // n_child
                ancestor //= n_child
            torch.testing.assert_close(out[:, leaf], msg[:, ancestor])


def test_expand_level_to_leaves_rejects_wrong_node_count():
    with pytest.raises(ValueError, match="level 2"):
        expand_level_to_leaves(torch.randn(2, 8, 4), 3, 3, 2)


def reference_penalty(hidden, messages, lam, slices, n_child, n_layer, offset):
    """Loop over layers, samples, leaves and channels."""
    total = 0.0
    B = hidden[0].shape[0]
    for layer in range(n_layer):
        level = n_layer - 1 - layer
        for b in range(B):
            for leaf in range(n_child**n_layer):
                node = leaf // n_child ** (n_layer - level)
                for c, channel in enumerate(range(slices[layer].start, slices[layer].stop)):
                    diff = hidden[layer][b, offset + leaf, channel] - messages[level][b, node, c]
                    total += float(diff) ** 2
    return lam * total / B


def make_inputs(n_child=2, n_layer=3, vocab=3, d=12, extra_tokens=2, n_hidden=4):
    gen = torch.Generator().manual_seed(0)
    T = extra_tokens + n_child**n_layer
    hidden = [torch.randn(2, T, d, generator=gen, dtype=torch.float64) for _ in range(n_hidden)]
    messages = [
        torch.randn(2, n_child**k, vocab, generator=gen, dtype=torch.float64)
        for k in range(n_layer + 1)
    ]
    return hidden, messages


def test_guided_penalty_matches_loop_with_distinct_slices():
    hidden, messages = make_inputs()
    got = guided_penalty(hidden, messages, 0.1, n_child=2, n_layer=3, token_range=slice(2, 10))
    slices = [slice(0, 3), slice(3, 6), slice(6, 9)]
    expected = reference_penalty(hidden, messages, 0.1, slices, 2, 3, offset=2)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_guided_penalty_shared_and_custom_slices_and_mapping():
    hidden, messages = make_inputs()
    kwargs = {"n_child": 2, "n_layer": 3, "token_range": slice(2, 10)}
    shared = guided_penalty(hidden, messages, 1.0, "shared", **kwargs)
    expected = reference_penalty(hidden, messages, 1.0, [slice(0, 3)] * 3, 2, 3, offset=2)
    assert shared.item() == pytest.approx(expected, rel=1e-10)
    custom = [slice(9, 12), slice(1, 4), slice(5, 8)]
    as_mapping = {k: m for k, m in enumerate(messages)}
    got = guided_penalty(hidden, as_mapping, 2.0, custom, **kwargs)
    expected = reference_penalty(hidden, messages, 2.0, custom, 2, 3, offset=2)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_guided_penalty_is_zero_at_the_messages_and_has_gradients():
    hidden, messages = make_inputs(extra_tokens=0)
    hidden = [h.clone().requires_grad_() for h in hidden]
    with torch.no_grad():
        for layer in range(3):
            level = 2 - layer
            hidden[layer][:, :, layer * 3 : layer * 3 + 3] = expand_level_to_leaves(
                messages[level], 2, 3, level
            )
    penalty = guided_penalty(hidden, messages, 1.0, n_child=2, n_layer=3)
    assert penalty.item() == 0.0
    hidden[0].detach().add_(1.0)
    penalty = guided_penalty(hidden, messages, 1.0, n_child=2, n_layer=3)
    penalty.backward()
    assert hidden[0].grad.abs().sum() > 0 and hidden[3].grad is None  # layer 3 is not guided


def test_guided_penalty_bad_input():
    hidden, messages = make_inputs()
    kwargs = {"n_child": 2, "n_layer": 3}
    with pytest.raises(ValueError, match="leaves"):
        guided_penalty(hidden, messages, 1.0, **kwargs)  # 10 tokens, 8 leaves
    with pytest.raises(ValueError, match="channel slice"):
        guided_penalty(hidden, messages, 1.0, [slice(0, 2)] * 3, token_range=slice(2, 10), **kwargs)
    with pytest.raises(ValueError, match="d_model"):
        guided_penalty(
            hidden, messages, 1.0, [slice(10, 13)] * 3, token_range=slice(2, 10), **kwargs
        )
    with pytest.raises(ValueError, match="level"):
        guided_penalty(hidden, messages[:2], 1.0, token_range=slice(2, 10), **kwargs)
    with pytest.raises(ValueError, match=r"level 2.*root = 0"):
        guided_penalty(
            hidden, [messages[0], messages[2], messages[1]], 1.0, token_range=slice(2, 10), **kwargs
        )
    with pytest.raises(ValueError, match="n_guided"):
        guided_penalty(hidden[:1], messages, 1.0, token_range=slice(2, 10), n_guided=2, **kwargs)
    bad = [m.clone() for m in messages]
    bad[1][0, 0, 0] = float("-inf")
    with pytest.raises(ValueError, match="non-finite"):
        guided_penalty(hidden, bad, 1.0, token_range=slice(2, 10), **kwargs)
