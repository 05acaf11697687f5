"""torch.distributed helpers for losses: all-gather with gradient, rank/world queries.

The recipe is open_clip's "local loss": every rank gathers all features (with gradient),
computes the loss for its own rows against all columns, and the gradient that reaches a
rank's local features is the sum of the contributions from every rank.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def all_gather_with_grad(tensor: torch.Tensor, *, check_shape: bool = True) -> torch.Tensor:
    """All-gather ``tensor`` (dim 0) from every rank, keeping the autograd graph.

    Outside a process group this returns ``tensor`` unchanged. Every rank must pass the
    same shape; a mismatch is reported as a ``ValueError`` before the collective (one
    extra small collective; pass ``check_shape=False`` when the caller already agreed on
    shapes, e.g. through :func:`raise_if_any_rank_failed`).
    """
    if not is_distributed():
        return tensor
    if check_shape:
        _check_same_shape(tensor)
    return _AllGatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor, *, check_shape: bool = True) -> torch.Tensor:
    """All-gather ``tensor`` (dim 0) from every rank without gradient (e.g. indices)."""
    if not is_distributed():
        return tensor
    if check_shape:
        _check_same_shape(tensor)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


def raise_if_any_rank_failed(error: Exception | None, shapes: Sequence[Sequence[int]]) -> None:
    """Collective input check: raise ``ValueError`` on EVERY rank if any rank failed.

    ``error`` is this rank's validation error (or None) and ``shapes`` the shapes of the
    tensors it is about to gather (at most 15 numbers in all). If one rank rejected its
    input, or the ranks disagree on the shapes, all ranks raise (instead of the failing
    rank raising alone and the others hanging in the next collective). Outside a process
    group this just re-raises ``error``.
    """
    if not is_distributed():
        if error is not None:
            raise error
        return
    numbers = [] if error is not None else [int(n) for shape in shapes for n in shape]
    if len(numbers) > _STATUS_WIDTH - 1:
        raise ValueError(f"too many shape entries to compare across ranks: {shapes}")
    status = torch.full((_STATUS_WIDTH,), -1, dtype=torch.long)
    status[0] = int(error is not None)
    status[1 : len(numbers) + 1] = torch.tensor(numbers, dtype=torch.long)
    status = status.to(_collective_device())
    statuses = [torch.empty_like(status) for _ in range(dist.get_world_size())]
    dist.all_gather(statuses, status)
    failed = [r for r, s in enumerate(statuses) if int(s[0]) == 1]
    if failed:
        messages = _all_gather_text("" if error is None else str(error))
        if error is not None:
            raise error
        raise ValueError("; ".join(f"rank {r} rejected its input: {messages[r]}" for r in failed))
    if any(not torch.equal(s, status) for s in statuses):
        described = [[n for n in s[1:].tolist() if n >= 0] for s in statuses]
        raise ValueError(
            "all ranks must pass tensors of the same shapes to a distributed loss; got "
            + ", ".join(f"rank {r}: {d}" for r, d in enumerate(described))
        )


_STATUS_WIDTH = 16
_MESSAGE_BYTES = 1024


def _all_gather_text(text: str) -> list[str]:
    """Every rank's ``text`` (UTF-8, cut at 1 KiB), gathered as byte tensors.

    ``dist.all_gather_object`` would need numpy, which mm-losses does not depend on.
    """
    data = text.encode("utf-8")[:_MESSAGE_BYTES]
    # two length bytes, then the message
    payload = torch.tensor([len(data) // 256, len(data) % 256, *data], dtype=torch.uint8)
    buffer = torch.zeros(_MESSAGE_BYTES + 2, dtype=torch.uint8)
    buffer[: payload.numel()] = payload
    buffer = buffer.to(_collective_device())
    gathered = [torch.empty_like(buffer) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, buffer)
    texts = []
    for g in gathered:
        raw = g.cpu().tolist()
        n = raw[0] * 256 + raw[1]
        texts.append(bytes(raw[2 : 2 + n]).decode("utf-8", errors="replace"))
    return texts


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_same_shape(tensor: torch.Tensor) -> None:
    shape = torch.tensor(list(tensor.shape), dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        raise ValueError(
            "all ranks must pass features of the same shape to a distributed loss; got "
            + ", ".join(str(tuple(s.tolist())) for s in shapes)
        )
