"""Many small independent MLPs trained as one module (batched matmuls, one kernel per layer).

A sweep of tiny encoders (the alignment study trains hundreds of 12-wide MLPs) is
dominated by per-call overhead, not arithmetic. `EnsembleMLP` holds E members' weights
stacked on a leading axis and runs them with ``torch.baddbmm``: member e sees its own
inputs ``x[e]`` and its own weights, so its outputs and gradients are exactly those of a
separate ``nn.Sequential`` with the same weights (tested), at the cost of one call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EnsembleMLP"]


class EnsembleMLP(nn.Module):
    """E members, each ``Linear(in, width)``, ``depth`` x [LeakyReLU, Linear(width, width)],
    LeakyReLU, head ``Linear(width, out)``.

    ``forward(x)``: ``x`` [E, B, in] -> logits [E, B, out]; ``hidden(x)`` returns the
    ``depth + 1`` post-activation layers, each [E, B, width]. ``seeds[e]`` draws member e's
    initial weights (PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        in_dim: int,
        width: int,
        depth: int,
        out_dim: int,
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        if not seeds:
            raise ValueError("seeds must name at least one member")
        for name, value in (("in_dim", in_dim), ("width", width), ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an int >= 0, got {depth!r}")
        self.members, self.depth, self.negative_slope = len(seeds), depth, negative_slope
        shapes = [(in_dim, width)] + [(width, width)] * depth + [(width, out_dim)]
        weights = [torch.empty(len(seeds), i, o) for i, o in shapes]
        biases = [torch.empty(len(seeds), 1, o) for _, o in shapes]
        for e, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(int(seed))
            for w, b in zip(weights, biases):
                bound = 1.0 / math.sqrt(w.shape[1])
                w[e].uniform_(-bound, bound, generator=generator)
                b[e].uniform_(-bound, bound, generator=generator)
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[0] != self.members or x.shape[2] != self.weights[0].shape[1]:
            raise ValueError(
                f"x must be [members={self.members}, batch, in={self.weights[0].shape[1]}], "
                f"got {tuple(x.shape)}"
            )

    def _run(self, x: torch.Tensor, keep: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check(x)
        hidden: list[torch.Tensor] = []
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = F.leaky_relu(torch.baddbmm(b, h, w), self.negative_slope)
            if keep:
                hidden.append(h)
        return torch.baddbmm(self.biases[-1], h, self.weights[-1]), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, keep=False)[0]

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The depth + 1 post-activation layers, each [E, B, width]."""
        return self._run(x, keep=True)[1]

    def member(self, e: int) -> nn.Sequential:
        """Member e as a plain ``nn.Sequential`` (a copy of its current weights)."""
        layers: list[nn.Module] = []
        for w, b in zip(self.weights, self.biases):
            linear = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                linear.weight.copy_(w[e].T)
                linear.bias.copy_(b[e, 0])
            layers += [linear, nn.LeakyReLU(self.negative_slope)]
        return nn.Sequential(*layers[:-1])

    def clip_member_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale each member's gradient to L2 norm <= max_norm (its own norm, over all its
        parameters), as clipping each model separately would; returns the norms [E]."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros(self.members)
        norms = torch.stack([g.flatten(1).square().sum(dim=1) for g in grads]).sum(0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.ndim - 1))))
        return norms
