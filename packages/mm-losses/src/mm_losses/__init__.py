"""mm-losses: every contrastive objective of the toolkit, standalone (torch only).

>>> import mm_losses
>>> loss = mm_losses.build("clip", tau=0.07)
>>> value = loss(image_features, text_features)
"""

from mm_losses.base import (
    GRAD_AVERAGED_ATTR,
    ContrastiveLoss,
    as_index,
    check_features,
    check_index,
)
from mm_losses.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    raise_if_any_rank_failed,
    rank_and_world,
)
from mm_losses.ghm import ghm_clip_from_logits, ghm_clip_logits, ghm_clip_pairs
from mm_losses.registry import available, build, get, register

# Importing the loss modules registers their losses.
from mm_losses.clip import CLIPLoss, CyCLIPLoss, SigLIPLoss, Temperature  # isort: skip
from mm_losses.ghm import GHMClipLoss  # isort: skip
from mm_losses.onlineclr import OnlineCLRLoss  # isort: skip
from mm_losses.simclr import LpSimCLRLoss, NTXentLoss  # isort: skip
from mm_losses.sogclr import (  # isort: skip
    HybridSogCLRLoss,
    InfoSogCLRLoss,
    ISogCLRLoss,
    SogCLRLoss,
)
from mm_losses.vicreg import VICRegLoss, covariance_penalty, variance_hinge  # isort: skip

__version__ = "0.2.0"

__all__ = [
    "GRAD_AVERAGED_ATTR",
    "CLIPLoss",
    "ContrastiveLoss",
    "CyCLIPLoss",
    "GHMClipLoss",
    "HybridSogCLRLoss",
    "ISogCLRLoss",
    "InfoSogCLRLoss",
    "LpSimCLRLoss",
    "NTXentLoss",
    "OnlineCLRLoss",
    "SigLIPLoss",
    "SogCLRLoss",
    "Temperature",
    "VICRegLoss",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "as_index",
    "available",
    "build",
    "check_features",
    "check_index",
    "covariance_penalty",
    "get",
    "ghm_clip_from_logits",
    "ghm_clip_logits",
    "ghm_clip_pairs",
    "raise_if_any_rank_failed",
    "rank_and_world",
    "register",
    "variance_hinge",
]
