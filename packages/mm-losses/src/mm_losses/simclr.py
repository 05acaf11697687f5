"""SimCLR-style losses of the identifiability paper: ``nt_xent`` and ``lp_simclr``.

Daunhawer et al., "Identifiability Results for Multimodal Contrastive Learning", ICLR 2023
(https://arxiv.org/abs/2303.09166): NT-Xent with cross- and intra-modal negatives for the
image/text experiment, and the Lp-SimCLR loss of the numerical simulation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mm_losses.base import ContrastiveLoss, check_features, normalize_rows, working_dtype
from mm_losses.distributed import all_gather_with_grad, raise_if_any_rank_failed, rank_and_world
from mm_losses.registry import register


def _nt_xent_direction(
    anchors: torch.Tensor, others: torch.Tensor, same: torch.Tensor, rows: slice, tau: float
) -> torch.Tensor:
    """Mean CE of anchors ``same[rows]`` over [sim(a_i, others_j)]_j ++ [sim(a_i, same_k)]_{k!=i}."""
    dtype = working_dtype(anchors)
    cross = (anchors @ others.T).to(dtype) / tau
    intra = (anchors @ same.T).to(dtype) / tau
    intra = intra.diagonal_scatter(
        torch.full((anchors.shape[0],), -math.inf, dtype=dtype, device=intra.device),
        offset=rows.start,
    )
    targets = torch.arange(rows.start, rows.stop, device=anchors.device)
    return F.cross_entropy(torch.cat([cross, intra], dim=1), targets)


@register("nt_xent")
class NTXentLoss(ContrastiveLoss):
    """Multimodal NT-Xent (SimCLR, Chen et al. 2020, Eq. 1; Daunhawer et al. 2023, Sec. 5.2).

    For image anchor i: logits = [cos(x_i, t_j) / tau]_j ++ [cos(x_i, x_k) / tau]_{k != i},
    target the positive t_i; text anchors alike with the roles swapped; the loss is the
    mean of the two directions, 0.5 (CE_image + CE_text), i.e. the mean over 2B anchors.

    Args:
        tau: temperature (1.0, as in the paper's image/text experiment).
        normalize: use cosine similarity (L2-normalise first; default True).
        check_inputs: validate the inputs (default True).
    """

    def __init__(self, tau: float = 1.0, normalize: bool = True, check_inputs: bool = True) -> None:
        super().__init__(normalize=normalize, check_inputs=check_inputs)
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = float(tau)

    def compute(self, x, t, index_all, rank, local_batch):
        rows = slice(rank * local_batch, (rank + 1) * local_batch)
        loss_image = _nt_xent_direction(x[rows], t, x, rows, self.tau)
        loss_text = _nt_xent_direction(t[rows], x, t, rows, self.tau)
        return 0.5 * (loss_image + loss_text)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 for all pairs, via the Gram matrix (memory O(|a| |b|), not O(|a| |b| d))."""
    dtype = working_dtype(a)
    a, b = a.to(dtype), b.to(dtype)
    squares = a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * (a @ b.T)
    return squares.clamp_min(0.0)


def lp_simclr_direction(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    tau: float,
    self_offset: int | None = None,
) -> torch.Tensor:
    """Lp-SimCLR (Daunhawer et al. 2023, Sec. 5.1; Zimmermann et al. 2021, Eq. 2), one direction.

    loss_i = pos_i / tau + log mean({exp(-neg_ij / tau)}_j U {exp(-pos_i / tau)}) with
    pos_i = ||a_i - p_i||^2 and neg_ij = ||a_i - n_j||^2; returns the mean over anchors.
    ``self_offset``: the negatives are the anchor batch itself, anchor i sits at row
    ``self_offset + i`` of ``negatives`` and that entry is left out.
    """
    dtype = working_dtype(anchors)
    pos = (anchors.to(dtype) - positives.to(dtype)).square().sum(1)
    neg = _squared_distances(anchors, negatives)
    count = negatives.shape[0]
    if self_offset is not None:
        neg = neg.diagonal_scatter(
            torch.full_like(pos, math.inf), offset=self_offset
        )  # exp(-inf) = 0: drop a_i - a_i
        count -= 1
    scores = torch.cat([-neg / tau, -pos[:, None] / tau], dim=1)
    loss = pos / tau + scores.logsumexp(1) - math.log(count + 1)
    return loss.mean()


@register("lp_simclr")
class LpSimCLRLoss(ContrastiveLoss):
    """Lp-SimCLR of the identifiability simulation (Daunhawer et al., ICLR 2023, Sec. 5.1).

    For anchor h1_i (image encoder) with positive h2_i (text encoder):
        pos_i = ||h1_i - h2_i||^2,  neg_ij = ||h1_i - h1'_j||^2,
        L(h1, h2) = mean_i pos_i / tau + log mean_j exp({-neg_ij / tau} U {-pos_i / tau})
    where h1' is a fresh independent batch encoded by the anchor's own encoder; the loss
    is 0.5 (L(h1, h2) + L(h2, h1)), the second with ``text_negatives`` h2'.

    Call: ``loss(image_features, text_features, image_negatives=..., text_negatives=...)``
    (the negatives are keyword arguments; a positional third argument is the registry's
    ``index``, ignored here). If the negative batches are omitted, the other samples of
    the batch serve as negatives: neg_ij = ||h1_i - h1_j||^2 for j != i (B - 1 of them).
    Negative batches may have any number of rows M; both must be given or neither.

    Distributed: anchors and negatives are all gathered with gradient; each rank scores
    its own anchors against every negative of the global batch.

    Args:
        tau: temperature (1.0).
        normalize: L2-normalise the encodings first (default False: the loss is defined
            on distances between raw encodings, whose scale carries the latents).
        check_inputs: validate the inputs (default True).
    """

    def __init__(
        self, tau: float = 1.0, normalize: bool = False, check_inputs: bool = True
    ) -> None:
        super().__init__(normalize=normalize, check_inputs=check_inputs)
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = float(tau)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        index: torch.Tensor | None = None,
        *,
        image_negatives: torch.Tensor | None = None,
        text_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._average_parameter_grads()
        error = None
        with_negatives = image_negatives is not None or text_negatives is not None
        if self.check_inputs:
            try:
                check_features(image_features, text_features)
                if with_negatives:
                    _check_negatives(image_features, image_negatives, text_negatives)
            except ValueError as err:
                error = err
        rank, _ = rank_and_world()
        shapes = [image_features.shape] if error is None else []
        if error is None and with_negatives:
            shapes.append(image_negatives.shape)
        if self.check_inputs:
            raise_if_any_rank_failed(error, shapes)
        if self.normalize:
            image_features = normalize_rows(image_features)
            text_features = normalize_rows(text_features)
            if with_negatives:
                image_negatives = normalize_rows(image_negatives)
                text_negatives = normalize_rows(text_negatives)
        batch = image_features.shape[0]
        h1 = all_gather_with_grad(image_features, check_shape=False)
        h2 = all_gather_with_grad(text_features, check_shape=False)
        rows = slice(rank * batch, (rank + 1) * batch)
        if with_negatives:
            n1 = all_gather_with_grad(image_negatives, check_shape=False)
            n2 = all_gather_with_grad(text_negatives, check_shape=False)
            offset = None
        else:
            n1, n2, offset = h1, h2, rows.start
        return 0.5 * (
            lp_simclr_direction(h1[rows], h2[rows], n1, self.tau, offset)
            + lp_simclr_direction(h2[rows], h1[rows], n2, self.tau, offset)
        )


def _check_negatives(
    anchors: torch.Tensor, image_negatives: torch.Tensor | None, text_negatives: torch.Tensor | None
) -> None:
    if image_negatives is None or text_negatives is None:
        missing = "image_negatives" if image_negatives is None else "text_negatives"
        raise ValueError(f"lp_simclr needs both negative batches or neither; {missing} is missing")
    for name, x in (("image_negatives", image_negatives), ("text_negatives", text_negatives)):
        if isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[0] >= 1:
            continue
        raise ValueError(f"{name} must have shape [M, dim] with M >= 1, got {_shape(x)}")
    if image_negatives.shape != text_negatives.shape:
        raise ValueError(
            "image_negatives and text_negatives must have the same shape, got "
            f"{tuple(image_negatives.shape)} and {tuple(text_negatives.shape)}"
        )
    if image_negatives.shape[1] != anchors.shape[1]:
        raise ValueError(
            f"negatives have dim {image_negatives.shape[1]} but the features have dim "
            f"{anchors.shape[1]}: shape mismatch"
        )
    for name, x in (("image_negatives", image_negatives), ("text_negatives", text_negatives)):
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf values")


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
