"""The pre-LayerNorm transformer stack shared by every GHM model.

One block:  x = x + Attn(LN(x), mask);  x = x + MLP(LN(x)),  MLP = Linear(d, 4d) -> GELU ->
Linear(4d, d). Token and position embeddings live in the task models (clip.py,
denoiser.py, nwp.py), which feed this stack with [B, T, d] inputs. The attention output is
added to the residual stream once per layer (the authors' code adds it twice; not copied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mm_models.ghm.attention import ATTENTION_KINDS, AttentionKind, GHMSelfAttention


@dataclass
class GHMTransformerConfig:
    """Transformer fields shared by the GHM model configs.

    d_model: residual width; n_layer: number of blocks; n_head: heads (divides d_model);
    attention: "softmax" or "relu"; out_proj: attention output projection (None = on iff
    n_head > 1); mlp_ratio: MLP hidden width / d_model; bias: biases in Linear layers;
    final_norm: LayerNorm after the last block, before the task readout (the hidden states
    returned for guided training are taken before it); embed_std: std of the token and
    position embeddings at initialisation (1.0, PyTorch's nn.Embedding default: with
    nanoGPT's 0.02 the positions are so faint that a deep stack learns the tree far more
    slowly than a 1-block one; measured in apps/ghm/README.md).
    """

    d_model: int = 128
    n_layer: int = 5
    n_head: int = 1
    attention: AttentionKind = "softmax"
    out_proj: bool | None = None
    mlp_ratio: int = 4
    bias: bool = True
    final_norm: bool = True
    embed_std: float = 1.0

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if self.d_model < 1 or self.n_layer < 1 or self.mlp_ratio < 1:
            raise ValueError(
                f"d_model ({self.d_model}), n_layer ({self.n_layer}) and mlp_ratio "
                f"({self.mlp_ratio}) must be >= 1"
            )
        if self.n_head < 1 or self.d_model % self.n_head != 0:
            raise ValueError(
                f"n_head ({self.n_head}) must be >= 1 and divide d_model ({self.d_model})"
            )
        if not self.embed_std > 0:
            raise ValueError(f"embed_std must be > 0, got {self.embed_std}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")


class MLP(nn.Module):
    """Linear(d, ratio*d) -> GELU -> Linear(ratio*d, d)."""

    def __init__(self, d_model: int, ratio: int = 4, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(ratio * d_model, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention then MLP, each with a residual."""

    def __init__(self, config: GHMTransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = GHMSelfAttention(
            config.d_model, config.n_head, config.attention, config.out_proj, config.bias
        )
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config.d_model, config.mlp_ratio, config.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


def _check_mask(mask: Tensor, batch: int, n_tokens: int, softmax: bool) -> Tensor:
    """Validate a bool attention mask and shape it for [B, H, T, T] scores."""
    if mask.dtype != torch.bool:
        raise ValueError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
    if mask.shape == (n_tokens, n_tokens):
        shaped = mask
    elif mask.shape == (batch, n_tokens, n_tokens):
        shaped = mask.unsqueeze(1)
    else:
        raise ValueError(
            f"attention mask must have shape [T, T] or [B, T, T] = [{n_tokens}, {n_tokens}] or "
            f"[{batch}, {n_tokens}, {n_tokens}], got {list(mask.shape)}"
        )
    if softmax and not bool(mask.any(dim=-1).all()):
        raise ValueError(
            "attention mask has a query row with no allowed key (softmax would be NaN)"
        )
    return shaped


class GHMTransformer(nn.Module):
    """A stack of n_layer pre-LN blocks, plus an optional final LayerNorm."""

    def __init__(self, config: GHMTransformerConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model) if config.final_norm else nn.Identity()

    def forward(
        self, x: Tensor, mask: Tensor | None = None, return_hidden: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """x: [B, T, d]. Returns the normalised output [B, T, d], and with return_hidden the
        list of residual streams H_l after block l (l = 0..n_layer-1), each [B, T, d]."""
        if x.dim() != 3 or x.shape[-1] != self.config.d_model:
            raise ValueError(
                f"transformer input must be [B, T, {self.config.d_model}], got {list(x.shape)}"
            )
        if mask is not None:
            mask = _check_mask(mask, x.shape[0], x.shape[1], self.config.attention == "softmax")
        hidden: list[Tensor] = []
        for block in self.blocks:
            x = block(x, mask)
            if return_hidden:
                hidden.append(x)
        x = self.ln_f(x)
        return (x, hidden) if return_hidden else x


def init_ghm_weights(
    model: nn.Module,
    n_layer: int,
    std: float = 0.02,
    embed_std: float = 1.0,
    positions: tuple[Tensor, ...] = (),
) -> None:
    """nanoGPT-style initialisation: N(0, std) for Linear weights, zero biases, and
    std / sqrt(2 n_layer) for the projections that write into the residual stream;
    N(0, embed_std) for Embedding weights and the position-embedding tensors `positions`."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=embed_std)
    for position in positions:
        nn.init.normal_(position, mean=0.0, std=embed_std)
    residual_std = std / math.sqrt(2 * n_layer)
    for module in model.modules():
        writes_residual = isinstance(module, MLP) or (
            isinstance(module, GHMSelfAttention) and module.proj is not None
        )
        if writes_residual:
            nn.init.normal_(module.proj.weight, mean=0.0, std=residual_std)
