"""mm-models: Encoders, transformers and vision-language glue for multimodal representation learning."""

__version__ = "0.1.0"

from mm_models import ghm as ghm
