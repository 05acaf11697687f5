"""Input checks shared by the GHM models: every problem is a ValueError that names it."""

from __future__ import annotations

import torch
from torch import Tensor


def check_tokens(name: str, tokens: Tensor, vocab: int, n_tokens: int | tuple[int, ...]) -> None:
    """tokens must be an integer tensor [B, n] with n in n_tokens and values in 0..vocab-1."""
    allowed = (n_tokens,) if isinstance(n_tokens, int) else n_tokens
    if tokens.dtype in (torch.bool,) or tokens.dtype.is_floating_point or tokens.is_complex():
        raise ValueError(
            f"{name} must be an integer tensor of leaf values, got dtype {tokens.dtype}"
        )
    if tokens.dim() != 2 or tokens.shape[1] not in allowed:
        want = " or ".join(f"[B, {n}]" for n in allowed)
        raise ValueError(
            f"{name} must have shape {want} (number of leaves), got {list(tokens.shape)}"
        )
    if tokens.numel() > 0:
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(
                f"{name} out of range: values must lie in 0..{vocab - 1}, got min {lo} and max {hi}"
            )


def check_real_leaves(name: str, values: Tensor, n_leaves: int) -> None:
    """values must be a floating tensor [B, n_leaves]."""
    if not values.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {values.dtype}")
    if values.dim() != 2 or values.shape[1] != n_leaves:
        raise ValueError(
            f"{name} must have shape [B, {n_leaves}] (number of leaves), got {list(values.shape)}"
        )


def check_embedding(name: str, embedding: Tensor, batch: int, embed_dim: int) -> None:
    """embedding must be a floating tensor [batch, embed_dim]."""
    if not embedding.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {embedding.dtype}")
    if embedding.shape != (batch, embed_dim):
        raise ValueError(
            f"{name} must have shape [B, embed_dim] = [{batch}, {embed_dim}], got {list(embedding.shape)}"
        )


def check_batch(name: str, tensor: Tensor, batch: int) -> None:
    """tensor's first dimension must equal batch."""
    if tensor.dim() == 0 or tensor.shape[0] != batch:
        got = tensor.shape[0] if tensor.dim() else "none (a scalar)"
        raise ValueError(f"{name} has batch size {got}, expected {batch}")
