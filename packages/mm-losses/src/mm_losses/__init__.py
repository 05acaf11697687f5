"""mm-losses: every contrastive objective of the toolkit, standalone (torch only).

>>> import mm_losses
>>> loss = mm_losses.build("clip", tau=0.07)
>>> value = loss(image_features, text_features)
"""

from mm_losses.base import ContrastiveLoss, check_features, check_index
from mm_losses.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    raise_if_any_rank_failed,
    rank_and_world,
)
from mm_losses.ghm import ghm_clip_from_logits, ghm_clip_logits, ghm_clip_pairs
from mm_losses.registry import available, build, get, register

# Importing the loss modules registers their losses.
from mm_losses import clip, ghm, onlineclr, simclr, sogclr, vicreg  # noqa: F401  isort: skip

__version__ = "0.1.0"

__all__ = [
    "ContrastiveLoss",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "available",
    "build",
    "check_features",
    "check_index",
    "get",
    "ghm_clip_from_logits",
    "ghm_clip_logits",
    "ghm_clip_pairs",
    "raise_if_any_rank_failed",
    "rank_and_world",
    "register",
]
