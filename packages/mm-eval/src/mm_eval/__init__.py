"""mm-eval: Retrieval, zero-shot, probes, identifiability and alignment metrics, plots."""

from mm_eval.alignment import alignment_score, layer_alignment
from mm_eval.retrieval import retrieval_metrics, zero_shot_accuracy, zero_shot_classifier

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "alignment_score",
    "layer_alignment",
    "retrieval_metrics",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
