"""Transformer models of the GHM paper (Oko, Lin, Cai, Mei, arXiv 2501.04641).

Plain tensors in, plain tensors out: leaves are int64 [B, n_leaves] in 0..vocab-1, noisy
image leaves float [B, n_leaves], belief-propagation messages [B, n_nodes_at_level, vocab].
"""

from mm_models.ghm.attention import AttentionKind, GHMSelfAttention, relu_attention
from mm_models.ghm.clip import GHMClipConfig, GHMClipEncoder, GHMClipModel
from mm_models.ghm.denoiser import GHMConditionalDenoiser, GHMDenoiserConfig, evidence_features
from mm_models.ghm.guided import channel_slices_for, expand_level_to_leaves, guided_penalty
from mm_models.ghm.nwp import GHMNextWordConfig, GHMNextWordModel, prefix_lm_mask
from mm_models.ghm.presets import (
    GHM_TASKS,
    GHM_VARIANTS,
    GHMModelConfig,
    build_ghm_model,
    ghm_model_config,
)
from mm_models.ghm.transformer import Block, GHMTransformer, GHMTransformerConfig

__all__ = [
    "GHM_TASKS",
    "GHM_VARIANTS",
    "AttentionKind",
    "Block",
    "GHMClipConfig",
    "GHMClipEncoder",
    "GHMClipModel",
    "GHMConditionalDenoiser",
    "GHMDenoiserConfig",
    "GHMModelConfig",
    "GHMNextWordConfig",
    "GHMNextWordModel",
    "GHMSelfAttention",
    "GHMTransformer",
    "GHMTransformerConfig",
    "build_ghm_model",
    "channel_slices_for",
    "evidence_features",
    "expand_level_to_leaves",
    "ghm_model_config",
    "guided_penalty",
    "prefix_lm_mask",
    "relu_attention",
]
