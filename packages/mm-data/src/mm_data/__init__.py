"""mm-data: Synthetic generators (GHM trees, latent models, image/text corpora) and dataset loaders for multimodal representation learning."""

from mm_data import ghm as ghm  # explicit re-export: mm_data.ghm

__version__ = "0.1.0"
