"""OnlineCLR: contrastive loss with a global normaliser tracked online across steps."""

from __future__ import annotations

import math

import torch

from mm_losses.base import ContrastiveLoss, working_dtype
from mm_losses.distributed import all_gather_no_grad, rank_and_world
from mm_losses.registry import register


@register("onlineclr")
class OnlineCLRLoss(ContrastiveLoss):
    """Online global contrastive loss: the log-sum-exp normaliser becomes a scalar EMA.

    The objective is the global (pooled) contrastive loss
        L = -E_i[S_ii / tau] + log E_{i != j}[exp(S_ij / tau)]
    where the second expectation runs over every negative pair of the data set, not of
    one batch. Per step, with B anchors and the batch's negative term
        n = 1/(B(B-1)) sum_{i != j} exp(S_ij / tau),
    the scalar u (a registered buffer, kept as log u) is an exponential moving average
    across steps, u <- (1 - gamma) u + gamma n (u = n at the first step; no gradient),
    and log E[...] is replaced by its first-order expansion around u:
        loss = -1/B sum_i S_ii / tau + log u + n / u - 1.
    Its value equals L when n = u, and its gradient is -grad(pos) + grad(n) / u: the
    gradient of log n with the batch's normaliser n replaced by the running estimate u
    (the SogCLR moving-average idea with one global scalar instead of one per anchor).
    The pooled negative term is the same for image and text anchors (the sum over i != j
    of S and of S^T coincide), so the loss is symmetric by construction. A second EMA
    of the positive term E_i[S_ii] is kept for ``diagnostics()`` only. The EMAs move only
    in training mode; in ``eval()`` mode the loss uses u as it stands (the batch's own n
    before the first training step).

    Distributed: each rank computes n over its anchor rows against all gathered columns;
    u is updated with the global n (a log-mean-exp of the ranks' values, gathered without
    gradient), identically on every rank; the mean over ranks of the returned values is
    the single-process loss on the global batch.

    Args:
        tau: temperature (0.07).
        gamma: EMA rate in (0, 1] (0.9); gamma = 1 uses the current batch only.
        normalize: L2-normalise the features first (default True).
        check_inputs: validate the inputs (default True).
    """

    def __init__(
        self,
        tau: float = 0.07,
        gamma: float = 0.9,
        normalize: bool = True,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(normalize=normalize, check_inputs=check_inputs)
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
        self.tau, self.gamma = float(tau), float(gamma)
        self.register_buffer("log_normaliser", torch.tensor(0.0))
        self.register_buffer("positive_ema", torch.tensor(0.0))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    def compute(self, x, t, index_all, rank, local_batch):
        n = x.shape[0]
        start = rank * local_batch
        logits = (x[start : start + local_batch] @ t.T).to(working_dtype(x)) / self.tau
        positives = logits.diagonal(offset=start)
        off_diagonal = torch.ones_like(logits, dtype=torch.bool)
        off_diagonal.diagonal(offset=start).fill_(False)
        # log of this rank's share n_r of the negative term, computed stably.
        log_negative = logits.masked_fill(~off_diagonal, -math.inf).logsumexp(
            dim=(0, 1)
        ) - math.log(local_batch * (n - 1))
        log_global, positive = self._global_terms(
            log_negative.detach(), positives.detach().mean() * self.tau
        )
        if self.training:
            self._update(log_global, positive)
        if int(self.num_updates) > 0:
            log_u = self.log_normaliser.to(log_negative.dtype)
        else:  # eval() before any training step: the batch's own normaliser
            log_u = log_global.to(log_negative.dtype)
        return -positives.mean() + log_u + torch.exp(log_negative - log_u) - 1.0

    @torch.no_grad()
    def _global_terms(
        self, log_negative: torch.Tensor, positive: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log n and the mean positive similarity of the global batch (all ranks)."""
        _, world = rank_and_world()
        if world > 1:
            both = torch.stack([log_negative.float(), positive.float()])
            gathered = all_gather_no_grad(both[None], check_shape=False)
            log_negative = gathered[:, 0].logsumexp(0) - math.log(world)
            positive = gathered[:, 1].mean()
        return log_negative, positive

    @torch.no_grad()
    def _update(self, log_negative: torch.Tensor, positive: torch.Tensor) -> None:
        """EMA of the global negative term (in log space) and of the positive similarity."""
        log_negative = log_negative.to(self.log_normaliser.dtype)
        positive = positive.to(self.positive_ema.dtype)
        if int(self.num_updates) == 0:
            self.log_normaliser.copy_(log_negative)
            self.positive_ema.copy_(positive)
        else:
            keep = math.log1p(-self.gamma) if self.gamma < 1 else -math.inf
            self.log_normaliser.copy_(
                torch.logaddexp(self.log_normaliser + keep, log_negative + math.log(self.gamma))
            )
            self.positive_ema.mul_(1 - self.gamma).add_(self.gamma * positive)
        self.num_updates += 1

    def diagnostics(self) -> dict[str, float]:
        return {
            "log_normaliser": float(self.log_normaliser),
            "positive_ema": float(self.positive_ema),
        }
