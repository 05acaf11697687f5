"""Encoders of the multimodal identifiability simulation (Daunhawer et al., ICLR 2023, 5.1).

Each view x in R^n is encoded by an MLP with hidden widths [10n, 50n, 50n, 50n, 50n, 10n]
and LeakyReLU(0.01) activations into an `encoding_size`-dim representation.

    g1, g2 = mlp_encoder_pair(15, encoding_size=5, shared=False)
    h1, h2 = g1(x1), g2(x2)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DEFAULT_HIDDEN_MULTIPLIERS", "MLPEncoder", "mlp_encoder_pair"]

DEFAULT_HIDDEN_MULTIPLIERS: tuple[int, ...] = (10, 50, 50, 50, 50, 10)


class MLPEncoder(nn.Module):
    """h = W_out a(W_6 ... a(W_1 x)) with a = LeakyReLU(0.01) and widths k * n per layer."""

    def __init__(
        self,
        input_dim: int,
        encoding_size: int = 5,
        hidden_multipliers: Sequence[int] = DEFAULT_HIDDEN_MULTIPLIERS,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        for name, value in (("input_dim", input_dim), ("encoding_size", encoding_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in hidden_multipliers):
            raise ValueError(
                f"hidden_multipliers must be positive ints, got {list(hidden_multipliers)}"
            )
        self.input_dim = input_dim
        self.encoding_size = encoding_size
        self.hidden_widths = [k * input_dim for k in hidden_multipliers]
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in self.hidden_widths:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(negative_slope)]
            width = hidden
        layers.append(nn.Linear(width, encoding_size))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"MLPEncoder expects input of shape [batch, {self.input_dim}], got {tuple(x.shape)}"
            )
        return self.net(x)


def mlp_encoder_pair(
    input_dim: int,
    encoding_size: int = 5,
    *,
    shared: bool = False,
    input_dim2: int | None = None,
    hidden_multipliers: Sequence[int] = DEFAULT_HIDDEN_MULTIPLIERS,
) -> tuple[MLPEncoder, MLPEncoder]:
    """Encoders (g1, g2) for the two views: separate modules, or g2 is g1 when shared."""
    dim2 = input_dim if input_dim2 is None else input_dim2
    if shared and dim2 != input_dim:
        raise ValueError(f"a shared encoder needs equal input dims, got {input_dim} and {dim2}")
    g1 = MLPEncoder(input_dim, encoding_size, hidden_multipliers)
    g2 = g1 if shared else MLPEncoder(dim2, encoding_size, hidden_multipliers)
    return g1, g2
