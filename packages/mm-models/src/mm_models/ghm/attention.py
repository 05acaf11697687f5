"""Self-attention of the GHM transformers: softmax over keys, or elementwise ReLU.

Oko, Lin, Cai, Mei, "A Statistical Theory of Contrastive Pre-training and Multimodal
Generative AI" (arXiv 2501.04641), section on experiments.

With scores S = Q K^T / sqrt(d_head) per head:

    softmax:  A = softmax(S) over the allowed keys          (standard scaled dot product)
    relu:     A = relu(S), disallowed pairs set to 0         (no normalisation by length)

and the head output is A @ V. Heads are concatenated and, optionally, mixed by an output
projection Linear(d, d). The authors' model is single-head without output projection, so
that is the default for n_head=1; with several heads the projection defaults to on
(otherwise the heads would never be mixed before the MLP's LayerNorm).
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

AttentionKind = Literal["softmax", "relu"]
ATTENTION_KINDS: tuple[str, ...] = ("softmax", "relu")


def relu_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """ReLU attention relu(Q K^T / sqrt(d_head)) @ V, masked pairs contribute 0.

    q, k, v: [..., T, d_head]; mask: bool, broadcastable to [..., T, T], True = may attend.
    """
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    weights = F.relu(scores)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v


class GHMSelfAttention(nn.Module):
    """Multi-head self-attention with a softmax or ReLU activation.

    Args:
        d_model: width of the residual stream.
        n_head: number of heads; must divide d_model. Default 1 (the authors' model).
        activation: "softmax" (uses F.scaled_dot_product_attention) or "relu".
        out_proj: add Linear(d_model, d_model) after the heads. None means "on iff
            n_head > 1".
        bias: biases in the Q/K/V (and output) projections.
    """

    def __init__(
        self,
        d_model: int,
        n_head: int = 1,
        activation: AttentionKind = "softmax",
        out_proj: bool | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ATTENTION_KINDS:
            raise ValueError(
                f"attention activation must be one of {ATTENTION_KINDS}, got {activation!r}"
            )
        if n_head < 1 or d_model % n_head != 0:
            raise ValueError(f"n_head ({n_head}) must be >= 1 and divide d_model ({d_model})")
        self.d_model = d_model
        self.n_head = n_head
        self.activation = activation
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        use_proj = n_head > 1 if out_proj is None else out_proj
        self.proj = nn.Linear(d_model, d_model, bias=bias) if use_proj else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: [B, T, d]; mask: bool [T, T] or [B, 1, T, T], True = may attend. Returns [B, T, d]."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        # [B, T, D] -> [B, H, T, D/H]
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.activation == "softmax":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = relu_attention(q, k, v, mask)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.proj(y) if self.proj is not None else y
