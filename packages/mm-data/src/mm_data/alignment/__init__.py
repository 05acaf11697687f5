"""Data for alignment studies: the synthetic redundancy / uniqueness / heterogeneity task,
and MM-IMDb in its released layout."""

from mm_data.alignment.mmimdb import GENRES, MMIMDb, first_paragraph, write_miniature
from mm_data.alignment.synthetic import (
    LabelModel,
    SyntheticSplits,
    all_bit_patterns,
    heterogeneity_map,
    label_model,
    make_synthetic,
)

__all__ = [
    "GENRES",
    "LabelModel",
    "MMIMDb",
    "SyntheticSplits",
    "all_bit_patterns",
    "first_paragraph",
    "heterogeneity_map",
    "label_model",
    "make_synthetic",
    "write_miniature",
]
