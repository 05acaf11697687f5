"""mm-eval: Retrieval, zero-shot, probes, identifiability and alignment metrics, plots."""

__version__ = "0.1.0"
