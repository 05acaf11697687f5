"""Paper configurations of the GHM models and a builder.

| task   | model                                       | d   | standard | shallow | guided |
|--------|---------------------------------------------|-----|----------|---------|--------|
| clip   | GHMClipModel (two encoders, embed_dim 10)   | 128 | 5        | 1       | 5      |
| dns    | GHMConditionalDenoiser, text_mode joint     | 128 | 9        | 1       | 9      |
| sdns   | GHMConditionalDenoiser, text_mode sequential| 128 | 9        | 1       | 9      |
| nwp    | GHMNextWordModel, image_mode joint          | 256 | 9        | 1       | 9      |
| snwp   | GHMNextWordModel, image_mode sequential     | 256 | 9        | 1       | 9      |

"guided" has the standard architecture; the difference is the training penalty
(`guided_penalty` on the hidden states), which the app adds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from mm_models.ghm.clip import GHMClipConfig, GHMClipModel
from mm_models.ghm.denoiser import GHMConditionalDenoiser, GHMDenoiserConfig
from mm_models.ghm.nwp import GHMNextWordConfig, GHMNextWordModel

GHM_TASKS: tuple[str, ...] = ("clip", "dns", "sdns", "nwp", "snwp")
GHM_VARIANTS: tuple[str, ...] = ("standard", "shallow", "guided")

GHMModelConfig = GHMClipConfig | GHMDenoiserConfig | GHMNextWordConfig


def ghm_model_config(
    task: str, variant: str = "standard", vocab: int = 10, n_leaves: int = 81, **overrides: Any
) -> GHMModelConfig:
    """The paper's config for `task` in GHM_TASKS and `variant` in GHM_VARIANTS; keyword
    overrides replace fields (e.g. attention="relu", n_head=4)."""
    if task not in GHM_TASKS:
        raise ValueError(f"unknown GHM task {task!r}; expected one of {GHM_TASKS}")
    if variant not in GHM_VARIANTS:
        raise ValueError(f"unknown GHM variant {variant!r}; expected one of {GHM_VARIANTS}")
    shallow = variant == "shallow"
    if task == "clip":
        config: GHMModelConfig = GHMClipConfig(
            vocab=vocab, n_leaves=n_leaves, embed_dim=10, d_model=128, n_layer=1 if shallow else 5
        )
    elif task in ("dns", "sdns"):
        config = GHMDenoiserConfig(
            vocab=vocab,
            n_leaves=n_leaves,
            text_mode="joint" if task == "dns" else "sequential",
            embed_dim=10,
            d_model=128,
            n_layer=1 if shallow else 9,
        )
    else:
        config = GHMNextWordConfig(
            vocab=vocab,
            n_leaves=n_leaves,
            image_mode="joint" if task == "nwp" else "sequential",
            embed_dim=10,
            d_model=256,
            n_layer=1 if shallow else 9,
        )
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for {type(config).__name__}")
    config = dataclasses.replace(config, **overrides)
    config.validate()
    return config


def build_ghm_model(config: GHMModelConfig) -> nn.Module:
    """The model for a config: GHMClipModel, GHMConditionalDenoiser or GHMNextWordModel."""
    if isinstance(config, GHMClipConfig):
        return GHMClipModel(config)
    if isinstance(config, GHMDenoiserConfig):
        return GHMConditionalDenoiser(config)
    if isinstance(config, GHMNextWordConfig):
        return GHMNextWordModel(config)
    raise ValueError(f"not a GHM model config: {type(config).__name__}")
