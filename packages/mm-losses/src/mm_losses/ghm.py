"""CLIP loss of the joint generative hierarchical model paper (``ghm_clip``).

The batch layout of the GHM paper: text and image features of B(K+1) trees each.
Blocks [0, B) and [B, 2B) are matched pairs (shared root); blocks [2B, B(K+1)) are K-1
independent draws. Direction 1: image i of block 0 against its text i (positive) and
the independent texts 2B + kB + i, k = 0..K-2. Direction 2: text B + i of block 1
against its image B + i and the independent images 2B + kB + i. Every anchor has one
positive and K-1 negatives, i.e. K logits.
"""

from __future__ import annotations

import torch

from mm_losses.base import ContrastiveLoss, check_features, normalize_rows, working_dtype
from mm_losses.distributed import raise_if_any_rank_failed
from mm_losses.registry import register


def ghm_clip_pairs(batch: int, num_negatives: int, device=None) -> tuple[torch.Tensor, ...]:
    """Row indices of the scored pairs: (image_1, text_1, image_2, text_2), each [B, K].

    Direction d scores the pairs (image_d[i, k], text_d[i, k]); column 0 is the positive.
    A Bayes baseline evaluates its own score on these pairs and calls
    :func:`ghm_clip_from_logits`.
    """
    if num_negatives < 2:
        raise ValueError(f"num_negatives (K) must be at least 2, got {num_negatives}")
    i = torch.arange(batch, device=device)[:, None]
    k = torch.arange(num_negatives - 1, device=device)[None, :]
    independent = 2 * batch + k * batch + i  # [B, K-1]
    block0, block1 = i, batch + i
    image_1 = block0.expand(batch, num_negatives)
    text_1 = torch.cat([block0, independent], dim=1)
    image_2 = torch.cat([block1, independent], dim=1)
    text_2 = block1.expand(batch, num_negatives)
    return image_1, text_1, image_2, text_2


def ghm_clip_logits(
    image_features: torch.Tensor, text_features: torch.Tensor, num_negatives: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits <f_t, f_i> [B, K] of the scored pairs of both directions (positive in column 0)
    for features of B(K+1) rows laid out as in this module's docstring."""
    batch = image_features.shape[0] // (num_negatives + 1)
    image_1, text_1, image_2, text_2 = ghm_clip_pairs(batch, num_negatives, image_features.device)
    logits_1 = (image_features[image_1] * text_features[text_1]).sum(-1)
    logits_2 = (image_features[image_2] * text_features[text_2]).sum(-1)
    return logits_1, logits_2


def ghm_clip_from_logits(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """GHM CLIP loss: sum over directions of mean_i -log softmax(logits_i)[0].

    ``logits_d`` is [B, K] with the positive in column 0; for the learned model the logit
    is <f_t, f_i> (S = exp(<f_t, f_i>)), for the Bayes baseline log S(t, i).
    """
    return sum((logits.logsumexp(dim=1) - logits[:, 0]).mean() for logits in (logits_1, logits_2))


@register("ghm_clip")
class GHMClipLoss(ContrastiveLoss):
    """CLIP loss with K-1 independent negatives of the GHM paper.

    Per anchor -log(S+ / (S+ + sum_k S-_k)) with S = exp(<f_t, f_i>) (no normalisation,
    no temperature), summed over the two directions and averaged over the batch.
    Inputs are ``image_features`` and ``text_features`` of B(K+1) rows each
    (``batch_multiple = K + 1``), laid out as in this module's docstring.

    Distributed: every rank holds its own B(K+1) block layout, so nothing is gathered;
    each rank returns the loss of its own batch. The mean over ranks equals the loss of
    one process on the block-wise concatenation of the ranks' batches (block k of every
    rank, in rank order, forms block k of the global batch), and DDP's gradient
    averaging matches it.

    Args:
        num_negatives: K as in the paper (4): the batch holds K+1 blocks and every anchor
            is scored against its positive and K-1 independent draws.
        normalize: L2-normalise the features first (default False: the paper's loss
            scores raw inner products, without temperature).
        check_inputs: validate the inputs (default True).
    """

    def __init__(
        self, num_negatives: int = 4, normalize: bool = False, check_inputs: bool = True
    ) -> None:
        super().__init__(normalize=normalize, check_inputs=check_inputs)
        if num_negatives < 2:
            raise ValueError(f"num_negatives (K) must be at least 2, got {num_negatives}")
        self.num_negatives = int(num_negatives)
        self.batch_multiple = self.num_negatives + 1

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        error = None
        try:
            if self.check_inputs:
                check_features(image_features, text_features)
            rows = image_features.shape[0]
            if rows % self.batch_multiple:
                raise ValueError(
                    f"ghm_clip needs a batch of B(K+1) = B * {self.batch_multiple} rows "
                    f"(K = num_negatives = {self.num_negatives}), got {rows} rows"
                )
        except ValueError as err:
            error = err
        if self.check_inputs:
            raise_if_any_rank_failed(error, [image_features.shape] if error is None else [])
        elif error is not None:
            raise error
        if self.normalize:
            image_features = normalize_rows(image_features)
            text_features = normalize_rows(text_features)
        dtype = working_dtype(image_features)
        logits = ghm_clip_logits(
            image_features.to(dtype), text_features.to(dtype), self.num_negatives
        )
        return ghm_clip_from_logits(*logits)
