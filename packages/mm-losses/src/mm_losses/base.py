"""Common base class and input checks for every loss in the registry."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from mm_losses.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    is_distributed,
    raise_if_any_rank_failed,
    rank_and_world,
)

# Set on the parameters whose gradients a loss averages over ranks itself, so a trainer
# can tell them from parameters that no one synchronises (mm_train checks this name).
GRAD_AVERAGED_ATTR = "grad_averaged_over_ranks"


def check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Raise ``ValueError`` unless both are finite 2-D [B, d] tensors with equal B (and d)."""
    for name, x in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"{name} must have shape [batch, dim], got {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise ValueError(f"{name} needs a batch of at least 2 samples, got {x.shape[0]}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if image_features.dtype != text_features.dtype:
        raise ValueError(
            f"image_features and text_features must have the same dtype, got "
            f"{image_features.dtype} and {text_features.dtype}"
        )
    if image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must have the same shape, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    for name, x in (("image_features", image_features), ("text_features", text_features)):
        # fast path: a NaN/Inf element makes the sum non-finite; a non-finite sum of finite
        # values (overflow) falls through to the exact elementwise check
        if not math.isfinite(float(x.detach().sum())) and not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf values")


def as_index(index: torch.Tensor | None, loss_name: str) -> torch.Tensor:
    """``index`` as int64 (an int32 tensor is cast); ``ValueError`` for anything else."""
    if index is None:
        raise ValueError(
            f"loss {loss_name!r} keeps per-sample state and needs `index` "
            "(int64 dataset indices of the batch, shape [B])"
        )
    if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"index must be an int64 (or int32) tensor, got {getattr(index, 'dtype', index)}"
        )
    return index.long()


def check_index(index: torch.Tensor | None, batch: int, num_samples: int, loss_name: str) -> None:
    """Raise ``ValueError`` unless ``index`` is int64 [batch], unique, in [0, num_samples)."""
    index = as_index(index, loss_name)
    if index.shape != (batch,):
        raise ValueError(f"index must have shape [{batch}], got {tuple(index.shape)}")
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= num_samples:
        raise ValueError(
            f"index values must lie in [0, num_samples={num_samples}), got range [{lo}, {hi}]"
        )
    ordered = index.sort().values  # cheaper than torch.unique
    if bool((ordered[1:] == ordered[:-1]).any()):
        raise ValueError("index contains duplicated dataset indices within one batch")


def working_dtype(x: torch.Tensor) -> torch.dtype:
    """dtype to compute a loss in: float32 for half/bfloat16 inputs, else the input's.

    Losses exponentiate logits of size 1/tau (100 for tau = 0.01); that is done in at
    least float32 even under autocast, while the matmuls may run in low precision.
    """
    return torch.promote_types(x.dtype, torch.float32)


_NORM_EPS = 1e-12  # F.normalize's floor of the norm


class _NormalizeRows(torch.autograd.Function):
    """x / max(||x||, eps) row-wise, as ``F.normalize(x, dim=-1)``, with a three-pass backward
    (g - u <u, g>) / ||x|| (I / eps where the norm is floored) instead of autograd's
    division and norm derivatives (about 1.5 ms per step at B = 256, d = 512 on a CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(_NORM_EPS)
        unit = x / norm
        ctx.save_for_backward(unit, norm)
        return unit

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        unit, norm = ctx.saved_tensors
        radial = torch.linalg.vecdot(unit, grad, dim=-1).unsqueeze(-1)
        out = torch.addcmul(grad, unit, radial, value=-1.0).div_(norm)
        if norm.device.type == "cpu" and bool((norm > _NORM_EPS).all()):
            return out  # no floored row (reading that back is free on the CPU only)
        return torch.where(norm > _NORM_EPS, out, grad / _NORM_EPS)


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the rows of ``x`` (the value of ``F.normalize(x, dim=-1)``), computed
    in at least float32 (also under autocast)."""
    return _NormalizeRows.apply(x.to(working_dtype(x)))


def _average_over_ranks(grad: torch.Tensor) -> torch.Tensor:
    """Gradient hook: the mean of ``grad`` over the ranks (the identity alone)."""
    if not is_distributed():
        return grad
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad.div_(dist.get_world_size())


class ContrastiveLoss(nn.Module):
    """Base class: validates inputs, gathers across ranks, then calls ``compute``.

    Subclasses implement ``compute(image_all, text_all, index_all, rank, local_batch)``
    where ``*_all`` are the features of the global batch (all ranks concatenated, with
    gradient) and ``rank * local_batch`` is the offset of this rank's rows. The returned
    scalar is this rank's share: the mean over the rank's own anchors, so that averaging
    the value over ranks (as DDP averages gradients) gives the global-batch loss.
    ``index_all`` is the gathered int64 index for stateful losses and None otherwise
    (losses without per-sample state ignore ``index``).

    Stateful subclasses set ``stateful = True`` and take ``num_samples``; their per-sample
    state lives in registered buffers so ``state_dict()`` carries it. ``diagnostics()``
    returns a dict of floats (mean temperatures, ...); ``on_epoch_end(epoch)`` advances
    epoch-based schedules. ``batch_multiple`` is how many rows per sample a batch holds
    (1; ``ghm_clip`` takes K+1 blocks of B rows).

    Inputs are validated before any state changes. In a process group, validation is
    agreed on by all ranks (one small collective): if any rank's input is bad, every
    rank raises ``ValueError`` instead of the others hanging in the gather.
    ``check_inputs=False`` skips the checks: the value checks (NaN/Inf, index range and
    uniqueness) read back one number each, a host synchronisation per call on an
    accelerator, and under DDP the agreement is one more small collective.

    Features are L2-normalised first when ``normalize`` is True (the default of every
    similarity-based loss; see the package README for the losses defined on raw
    embeddings). Learnable parameters of a loss (temperatures, biases) get their
    gradient averaged over the ranks of an initialised process group by the loss itself
    (a hook on each parameter), so the ranks stay identical with the model in DDP and the
    loss outside it, and stay correct with the loss inside DDP too (the mean of equal
    gradients is unchanged). Buffers, parameters and per-sample state follow module
    casts (``.double()``, ``.half()``, ``.to(dtype)``).
    """

    registry_name: str = "?"
    stateful: bool = False
    num_samples: int = 0
    batch_multiple: int = 1
    _hooked: bool = False

    def __init__(self, *, normalize: bool = False, check_inputs: bool = True) -> None:
        super().__init__()
        self.normalize = bool(normalize)
        self.check_inputs = bool(check_inputs)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of a batch: ``image_features``, ``text_features`` [B, d] (this rank's
        rows) and, for stateful losses, ``index`` (int64 or int32 [B], the dataset index of
        each pair, unique within the global batch). Returns a 0-dim tensor: this rank's
        share, whose mean over ranks is the loss of the global batch."""
        if not self._hooked:
            self._average_parameter_grads()
        rank, world = rank_and_world()
        if self.check_inputs:
            error = None
            try:
                check_features(image_features, text_features)
                if self.stateful:
                    index = as_index(index, self.registry_name)
                    check_index(
                        index, image_features.shape[0], self.num_samples, self.registry_name
                    )
            except ValueError as err:
                error = err
            if world == 1 and error is not None:
                raise error
            if world > 1:
                raise_if_any_rank_failed(error, [image_features.shape])
        elif self.stateful:
            index = as_index(index, self.registry_name)
        if self.normalize and not self._normalizes_itself(world):
            image_features = normalize_rows(image_features)
            text_features = normalize_rows(text_features)
        if world == 1:
            index_all = index if self.stateful else None
            return self.compute(
                image_features, text_features, index_all, 0, image_features.shape[0]
            )
        batch = image_features.shape[0]
        image_all = all_gather_with_grad(image_features, check_shape=False)
        text_all = all_gather_with_grad(text_features, check_shape=False)
        index_all = None
        if self.stateful:
            index_all = all_gather_no_grad(index, check_shape=False)
            if self.check_inputs:
                check_index(index_all, batch * world, self.num_samples, self.registry_name)
        return self.compute(image_all, text_all, index_all, rank, batch)

    def _normalizes_itself(self, world: int) -> bool:
        """Whether ``compute`` folds the normalisation into its own op; False here."""
        return False

    def _average_parameter_grads(self) -> None:
        """Hook every parameter once: its gradient becomes the mean over ranks."""
        for param in self.parameters():
            if not getattr(param, GRAD_AVERAGED_ATTR, False):
                param.register_hook(_average_over_ranks)
                setattr(param, GRAD_AVERAGED_ATTR, True)
        self._hooked = True

    def compute(
        self,
        image_all: torch.Tensor,
        text_all: torch.Tensor,
        index_all: torch.Tensor | None,
        rank: int,
        local_batch: int,
    ) -> torch.Tensor:
        raise NotImplementedError

    def diagnostics(self) -> dict[str, float]:
        """Scalar diagnostics for logging (e.g. mean temperature); empty by default."""
        return {}

    def on_epoch_end(self, epoch: int) -> None:
        """Advance epoch-based schedules (gamma, eta); no-op by default."""
