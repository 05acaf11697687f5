"""Identifiability of multimodal contrastive learning (Daunhawer et al., ICLR 2023): data."""

from mm_data.identifiability.latents import (
    InvertibleMLP,
    LatentBatch,
    LatentConfig,
    LatentModel,
    condition_threshold,
    load_mixing,
    make_mixing,
    random_unit_column_matrices,
    sample_wishart,
    save_mixing,
)

__all__ = [
    "InvertibleMLP",
    "LatentBatch",
    "LatentConfig",
    "LatentModel",
    "condition_threshold",
    "load_mixing",
    "make_mixing",
    "random_unit_column_matrices",
    "sample_wishart",
    "save_mixing",
]
