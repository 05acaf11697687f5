"""torch.distributed helpers for losses: all-gather with gradient, rank/world queries.

The recipe is open_clip's "local loss": every rank gathers all features (with gradient),
computes the loss for its own rows against all columns, and the gradient that reaches a
rank's local features is the sum of the contributions from every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate equal-sized tensors from every rank along dim 0, differentiably.

    Backward sums the incoming gradient over ranks (every rank's loss may depend on
    every rank's features) and returns this rank's slice.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.batch = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.batch
        return grad[start : start + ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather ``tensor`` (dim 0) from every rank, keeping the autograd graph.

    Outside a process group this returns ``tensor`` unchanged. Every rank must pass the
    same shape; a mismatch is reported as a ``ValueError`` before the collective.
    """
    if not is_distributed():
        return tensor
    _check_same_shape(tensor)
    return _AllGatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather ``tensor`` (dim 0) from every rank without gradient (e.g. indices)."""
    if not is_distributed():
        return tensor
    _check_same_shape(tensor)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


def _check_same_shape(tensor: torch.Tensor) -> None:
    shape = torch.tensor(list(tensor.shape), dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        raise ValueError(
            "all ranks must pass features of the same shape to a distributed loss; got "
            + ", ".join(str(tuple(s.tolist())) for s in shapes)
        )
