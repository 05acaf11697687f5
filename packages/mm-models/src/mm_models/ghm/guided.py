"""Guided training: pull early hidden states towards belief-propagation messages.

Tree levels are numbered from the root: level k has n_child**k nodes, level n_layer holds
the n_child**n_layer leaves. Nodes of a level are in breadth-first order, so the children
of node i at level k are nodes i*n_child .. i*n_child + n_child - 1 at level k+1, and leaf
t descends from node t // n_child**(n_layer - k) at level k.

Transformer layer l (0-based) is matched to tree level n_layer-1-l: layer 0 to the parents
of the leaves, ..., layer n_layer-1 to the root. Each leaf token is matched to the
message of its ancestor at that level (`expand_level_to_leaves`), and the message is
compared with the channel slice slice_l of the hidden state H_l:

    penalty = lam * sum_l  mean_b  sum_{t, c} ( H_l[b, t, slice_l][c] - M_l[b, t, c] )^2

Default slices are distinct per layer, slice_l = [l*vocab, (l+1)*vocab), so the messages of
different levels live in different channels of the residual stream; "shared" reproduces the
authors' choice, 0:vocab for every layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor


def expand_level_to_leaves(msg: Tensor, n_child: int, n_layer: int, level: int) -> Tensor:
    """Broadcast a level-`level` message [B, n_child**level, V] to the leaves
    [B, n_child**n_layer, V]: each leaf gets its ancestor's message."""
    if not 0 <= level <= n_layer:
        raise ValueError(f"level must lie in 0..n_layer ({n_layer}), got {level}")
    n_nodes = n_child**level
    if msg.dim() != 3 or msg.shape[1] != n_nodes:
        raise ValueError(
            f"message of tree level {level} must have shape [B, {n_nodes}, vocab] "
            f"(n_child={n_child}), got {list(msg.shape)}"
        )
    return msg.repeat_interleave(n_child ** (n_layer - level), dim=1)


def channel_slices_for(
    n_guided: int, vocab: int, mode: Literal["distinct", "shared"] = "distinct"
) -> list[slice]:
    """Per-layer channel slices: "distinct" = [l*vocab, (l+1)*vocab), "shared" = [0, vocab)."""
    if mode == "distinct":
        return [slice(layer * vocab, (layer + 1) * vocab) for layer in range(n_guided)]
    if mode == "shared":
        return [slice(0, vocab)] * n_guided
    raise ValueError(f"channel_slices mode must be 'distinct' or 'shared', got {mode!r}")


def guided_penalty(
    hidden_states: Sequence[Tensor],
    bp_messages: Sequence[Tensor] | Mapping[int, Tensor],
    lam: float,
    channel_slices: Sequence[slice] | Literal["distinct", "shared"] = "distinct",
    *,
    n_child: int = 3,
    n_layer: int = 4,
    token_range: slice | None = None,
    n_guided: int | None = None,
) -> Tensor:
    """lam * sum_l || H_l[:, token_range, slice_l] - M_l ||^2, batch mean (the paper's "Guided" training).

    hidden_states: per-layer residual streams [B, T, d] (a model's `return_hidden=True`).
    bp_messages: log-messages indexed by tree level k (root first), [B, n_child**k, vocab];
        a sequence (index = level) or a mapping {level: message}. Levels not guided are
        ignored (e.g. the leaf level). They are used as constants (detached).
    channel_slices: "distinct", "shared", or one slice of width vocab per guided layer.
    n_child, n_layer: the tree shape; the token_range must hold n_child**n_layer tokens.
    token_range: which tokens are the leaves (a model's `image_slice` / `text_slice`);
        None = all tokens.
    n_guided: how many first layers to guide; default min(n_layer, number of layers).
    """
    n_leaves = n_child**n_layer
    if len(hidden_states) == 0:
        raise ValueError("hidden_states is empty; call the model with return_hidden=True")
    n_guided = min(n_layer, len(hidden_states)) if n_guided is None else n_guided
    if not 1 <= n_guided <= min(n_layer, len(hidden_states)):
        raise ValueError(
            f"n_guided ({n_guided}) must lie in 1..min(n_layer={n_layer}, "
            f"number of hidden states={len(hidden_states)})"
        )
    levels = [n_layer - 1 - layer for layer in range(n_guided)]
    if isinstance(bp_messages, Mapping):
        missing = [k for k in levels if k not in bp_messages]
    else:
        missing = [k for k in levels if k >= len(bp_messages)]
    if missing:
        raise ValueError(f"bp_messages lacks tree level(s) {missing} (indexed by level, root = 0)")

    first = bp_messages[levels[0]]
    vocab = first.shape[-1]
    if isinstance(channel_slices, str):
        channel_slices = channel_slices_for(n_guided, vocab, channel_slices)
    if len(channel_slices) < n_guided:
        raise ValueError(
            f"channel_slices has {len(channel_slices)} slices for {n_guided} guided layers"
        )

    total = hidden_states[0].new_zeros(())
    for layer, level in enumerate(levels):
        hidden = hidden_states[layer]
        tokens = hidden if token_range is None else hidden[:, token_range]
        if tokens.dim() != 3 or tokens.shape[1] != n_leaves:
            raise ValueError(
                f"hidden state {layer} has {tokens.shape[1] if tokens.dim() == 3 else list(tokens.shape)} "
                f"tokens in token_range, expected the {n_leaves} leaves (n_child={n_child}, n_layer={n_layer})"
            )
        message = bp_messages[level]
        if message.dim() != 3 or message.shape[1] != n_child**level:
            raise ValueError(
                f"bp_messages for tree level {level} must have shape [B, {n_child**level}, vocab] "
                f"(n_child={n_child}; messages are indexed by level, root = 0), got {list(message.shape)}"
            )
        target = expand_level_to_leaves(message, n_child, n_layer, level)
        width, n_values = tokens.shape[-1], target.shape[-1]
        channels = channel_slices[layer]
        start, stop, step = channels.indices(width)
        if step != 1 or stop - start != n_values or (channels.stop or 0) > width:
            raise ValueError(
                f"channel slice of layer {layer} ({channels}) must select {n_values} contiguous "
                f"channels (the message's vocab) within d_model ({width})"
            )
        if target.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"bp_messages level {level} has batch {target.shape[0]}, hidden states have {tokens.shape[0]}"
            )
        if not bool(torch.isfinite(target).all()):
            raise ValueError(f"bp_messages level {level} has non-finite entries")
        diff = tokens[:, :, start:stop] - target.detach().to(tokens.dtype)
        total = total + diff.pow(2).sum(dim=(1, 2)).mean()
    return lam * total
