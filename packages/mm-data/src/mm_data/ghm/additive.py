"""The additive (tempered naive-Bayes) baseline of the GHM CLIP task.

A 1-block transformer with a linear readout over positions is close to an additive model:
its embedding is a sum of per-token features. The additive root posterior

    log p_alpha(r | x) = alpha * sum_j log P(leaf j = x_j | root = r) + log prior(r) + const

ignores the correlations that the intermediate tree levels create between leaves; exact
BP does not. Its CLIP risk (with logits log S built from these posteriors, as for Bayes)
measures how much room a tree leaves for depth to matter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mm_data.ghm.bayes import clip_logits_from_root_posteriors, k_negative_clip_losses
from mm_data.ghm.sampling import ClipBatch, sample_clip
from mm_data.ghm.tree import GHM, JointGHM

ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def leaf_given_root(ghm: GHM) -> torch.Tensor:
    """P(leaf j = v | root = r) as [n_leaves, V(root), V(leaf)] (float64): the product of
    the transition matrices on the path from the root to each leaf."""
    c = ghm.config
    rows = []
    for leaf in range(c.n_leaves):
        path, node = [], leaf
        for level in range(c.n_layer, 0, -1):
            path.append(ghm.matrix(level, node).double().cpu())
            node //= c.n_child
        m = torch.eye(c.vocab, dtype=torch.float64)
        for step in reversed(path):
            m = m @ step
        rows.append(m)
    return torch.stack(rows)


def leaf_log_evidence(ghm: GHM, leaves: torch.Tensor) -> torch.Tensor:
    """sum_j log P(leaf j = x_j | root = r) as [N, V] for leaf sequences [N, n_leaves]."""
    log_lik = leaf_given_root(ghm).clamp_min(1e-300).log().to(leaves.device)  # [L, V, V]
    positions = torch.arange(leaves.shape[1], device=leaves.device)[None, :]
    return log_lik[positions, :, leaves].sum(dim=1)


def _tempered(ghm: GHM, evidence: torch.Tensor, alpha: float) -> torch.Tensor:
    """Root log-posterior [V, N] from the leaf evidence [N, V] tempered by alpha."""
    return torch.log_softmax(alpha * evidence + ghm.log_prior.double(), dim=-1).T


def additive_log_posterior(ghm: GHM, leaves: torch.Tensor, alpha: float) -> torch.Tensor:
    """Tempered naive-Bayes root log-posterior [V, N] of leaf sequences [N, n_leaves]."""
    return _tempered(ghm, leaf_log_evidence(ghm, leaves), alpha)


def _clip_losses(joint: JointGHM, batch: ClipBatch, evidence: tuple, alpha: float) -> torch.Tensor:
    logits = clip_logits_from_root_posteriors(
        _tempered(joint.text, evidence[0], alpha),
        _tempered(joint.image, evidence[1], alpha),
        joint.log_prior.double(),
        batch,
    )
    return k_negative_clip_losses(*logits)


def _evidence(joint: JointGHM, batch: ClipBatch) -> tuple[torch.Tensor, torch.Tensor]:
    return leaf_log_evidence(joint.text, batch.text), leaf_log_evidence(joint.image, batch.image)


def additive_clip_losses(joint: JointGHM, batch: ClipBatch, alpha: float) -> torch.Tensor:
    """Per-sample CLIP loss [B] with logits log S built from the additive posteriors."""
    return _clip_losses(joint, batch, _evidence(joint, batch), alpha)


def best_additive_alpha(
    joint: JointGHM,
    samples: int,
    generator: torch.Generator,
    *,
    k: int = 4,
    alphas: Sequence[float] = ALPHAS,
) -> float:
    """The alpha of ``alphas`` with the lowest additive CLIP risk on ``samples`` fresh
    samples (fit it on samples other than those it is scored on). The leaf evidence is
    computed once; only the tempering changes with alpha."""
    if not alphas:
        raise ValueError("alphas is empty")
    batch = sample_clip(joint, samples, generator, k=k)
    evidence = _evidence(joint, batch)
    risks = {a: float(_clip_losses(joint, batch, evidence, a).mean()) for a in alphas}
    return min(risks, key=risks.get)
