"""Data for alignment studies: the synthetic redundancy / uniqueness / heterogeneity task,
and MM-IMDb in its released layout."""

from mm_data.alignment.mmimdb import GENRES, MMIMDb, first_paragraph, write_miniature
from mm_data.alignment.perturb import (
    CharRewriter,
    RuleRewriter,
    load_rewriter,
    read_rewritten,
    word_similarity,
)
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
    "CharRewriter",
    "LabelModel",
    "MMIMDb",
    "RuleRewriter",
    "SyntheticSplits",
    "all_bit_patterns",
    "first_paragraph",
    "heterogeneity_map",
    "label_model",
    "load_rewriter",
    "make_synthetic",
    "read_rewritten",
    "word_similarity",
    "write_miniature",
]
