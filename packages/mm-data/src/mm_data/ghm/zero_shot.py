"""Zero-shot classifier of learned embeddings on GHM data.

Prompts come from :func:`mm_data.ghm.sampling.sample_zero_shot_prompts` (``M`` texts per
class, conditioned on their first leaf); the app embeds them and calls
:func:`zero_shot_logits`.
"""

from __future__ import annotations

import math

import torch


def zero_shot_logits(image_features: torch.Tensor, prompt_features: torch.Tensor) -> torch.Tensor:
    """Class logit ``log mean_m exp<f_i, f_{c,m}>``: image ``[B, d]`` and
    prompts ``[n_class, M, d]`` -> ``[B, n_class]``."""
    if image_features.dim() != 2 or prompt_features.dim() != 3:
        raise ValueError(
            "image_features must be [B, d] and prompt_features [n_class, M, d], got "
            f"{list(image_features.shape)} and {list(prompt_features.shape)}"
        )
    if image_features.shape[1] != prompt_features.shape[2]:
        raise ValueError(
            f"feature dimensions differ: {image_features.shape[1]} vs {prompt_features.shape[2]}"
        )
    sims = torch.einsum("bd,cmd->bcm", image_features, prompt_features)
    return torch.logsumexp(sims, dim=-1) - math.log(prompt_features.shape[1])
