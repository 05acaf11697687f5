"""mm-data: Synthetic generators (GHM trees, latent models, image/text corpora) and dataset loaders for multimodal representation learning."""

__version__ = "0.1.0"
