"""Data for alignment studies: the synthetic redundancy / uniqueness / heterogeneity task."""

from mm_data.alignment.synthetic import (
    LabelModel,
    SyntheticSplits,
    all_bit_patterns,
    heterogeneity_map,
    label_model,
    make_synthetic,
)

__all__ = [
    "LabelModel",
    "SyntheticSplits",
    "all_bit_patterns",
    "heterogeneity_map",
    "label_model",
    "make_synthetic",
]
