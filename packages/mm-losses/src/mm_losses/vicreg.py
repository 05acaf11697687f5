"""VICReg: variance-invariance-covariance regularisation (``vicreg``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mm_losses.base import ContrastiveLoss, working_dtype
from mm_losses.registry import register


def variance_hinge(z: torch.Tensor, std_target: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg (Bardes et al. 2022) Eq. 1-2: mean_k relu(std_target - sqrt(Var(z_k) + eps))."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(std_target - std).mean()


def covariance_penalty(z: torch.Tensor) -> torch.Tensor:
    """VICReg (Bardes et al. 2022) Eq. 3-4: sum of off-diagonal C(z)^2 / d, C = cov with 1/(n-1)."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = (centred.T @ centred) / (n - 1)
    off_diagonal = cov.square().sum() - cov.diagonal().square().sum()
    return off_diagonal / d


@register("vicreg")
class VICRegLoss(ContrastiveLoss):
    """VICReg (Bardes, Ponce, LeCun, ICLR 2022, https://arxiv.org/abs/2105.04906, Eq. 6).

    loss = lambda s(X, T) + mu [v(X) + v(T)] + nu [c(X) + c(T)] on unnormalised embeddings:
    s = MSE between paired rows (Eq. 5, averaged over dimensions too, as in the authors'
    code), v = variance hinge (Eq. 1-2), c = off-diagonal covariance penalty (Eq. 3-4).
    The variance term sums the two branches as in Eq. 6 (the authors' code averages
    them, i.e. uses mu / 2: ``reference_scale=True`` does that).

    Distributed: the invariance term is this rank's rows' mean; variance and covariance
    are statistics of the global batch, computed on the gathered features (identical on
    every rank), so the mean over ranks is the global-batch loss.

    Args:
        invariance_weight: lambda (25).
        variance_weight: mu (25).
        covariance_weight: nu (1).
        std_target: gamma of the hinge, the target standard deviation (1).
        eps: added to the variance under the square root (1e-4).
        normalize: L2-normalise the embeddings first (default False: VICReg is defined
            on raw embeddings; its variance target of 1 per dimension cannot be met by
            unit vectors).
        check_inputs: validate the inputs (default True).
        reference_scale: halve the variance term, as the authors' code (default False).
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        std_target: float = 1.0,
        eps: float = 1e-4,
        normalize: bool = False,
        check_inputs: bool = True,
        reference_scale: bool = False,
    ) -> None:
        super().__init__(normalize=normalize, check_inputs=check_inputs)
        self.reference_scale = bool(reference_scale)
        self.invariance_weight = float(invariance_weight)
        self.variance_weight = float(variance_weight)
        self.covariance_weight = float(covariance_weight)
        self.std_target = float(std_target)
        self.eps = float(eps)

    def compute(self, image_all, text_all, index_all, rank, local_batch):
        dtype = working_dtype(image_all)
        x, t = image_all.to(dtype), text_all.to(dtype)
        rows = slice(rank * local_batch, (rank + 1) * local_batch)
        invariance = F.mse_loss(x[rows], t[rows])
        variance = variance_hinge(x, self.std_target, self.eps) + variance_hinge(
            t, self.std_target, self.eps
        )
        covariance = covariance_penalty(x) + covariance_penalty(t)
        variance_weight = self.variance_weight / 2 if self.reference_scale else self.variance_weight
        return (
            self.invariance_weight * invariance
            + variance_weight * variance
            + self.covariance_weight * covariance
        )
