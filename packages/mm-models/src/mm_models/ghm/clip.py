"""CLIP encoders on GHM leaves (the paper's "CLIP encoder").

tokens [B, L] -> token + position embeddings -> transformer -> per-token Linear(d -> E)
-> [B, L, E] -> transpose -> Linear(L -> 1), the same weights for every channel -> [B, E].

The Linear over positions is initialised to the uniform average 1/L (mean pooling), so an
untrained encoder pools like a bag of tokens; training is free to weight positions.
Paper: L = 81 leaves, E = 10, d = 128, 5 layers ("standard") or 1 ("shallow").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mm_models.ghm._inputs import check_batch, check_tokens
from mm_models.ghm.transformer import GHMTransformer, GHMTransformerConfig, init_ghm_weights


@dataclass
class GHMClipConfig(GHMTransformerConfig):
    """One CLIP encoder: vocab leaf values, n_leaves tokens, embed_dim output channels."""

    vocab: int = 10
    n_leaves: int = 81
    embed_dim: int = 10
    d_model: int = 128
    n_layer: int = 5

    def validate(self) -> None:
        super().validate()
        if self.vocab < 1 or self.n_leaves < 1 or self.embed_dim < 1:
            raise ValueError(
                f"vocab ({self.vocab}), n_leaves ({self.n_leaves}) and embed_dim "
                f"({self.embed_dim}) must be >= 1"
            )


class GHMClipEncoder(nn.Module):
    """Transformer encoder of one modality's leaves into an embed_dim vector."""

    def __init__(self, config: GHMClipConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab, config.d_model)
        self.pos_emb = nn.Parameter(torch.zeros(config.n_leaves, config.d_model))
        self.transformer = GHMTransformer(config)
        self.token_head = nn.Linear(config.d_model, config.embed_dim)
        self.position_head = nn.Linear(config.n_leaves, 1)
        init_ghm_weights(
            self, config.n_layer, embed_std=config.embed_std, positions=(self.pos_emb,)
        )
        nn.init.constant_(self.position_head.weight, 1.0 / config.n_leaves)

    def forward(
        self, tokens: Tensor, return_hidden: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """tokens: int [B, n_leaves] in 0..vocab-1. Returns [B, embed_dim], and with
        return_hidden the per-layer residual streams (list of [B, n_leaves, d])."""
        check_tokens("tokens", tokens, self.config.vocab, self.config.n_leaves)
        x = self.tok_emb(tokens) + self.pos_emb
        h, hidden = self.transformer(x, return_hidden=True)
        per_token = self.token_head(h)  # [B, L, E]
        features = self.position_head(per_token.transpose(1, 2)).squeeze(-1)  # [B, E]
        return (features, hidden) if return_hidden else features


class GHMClipModel(nn.Module):
    """A text encoder and an image encoder with separate weights and the same config."""

    def __init__(self, config: GHMClipConfig) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = GHMClipEncoder(config)
        self.image_encoder = GHMClipEncoder(config)

    def forward(
        self, text: Tensor, image: Tensor, return_hidden: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """text, image: int [B, n_leaves]. Returns (f_text, f_image), each [B, embed_dim];
        with return_hidden also (hidden_text, hidden_image)."""
        f_text, h_text = self.text_encoder(text, return_hidden=True)
        check_batch("image", image, text.shape[0])
        f_image, h_image = self.image_encoder(image, return_hidden=True)
        if return_hidden:
            return f_text, f_image, h_text, h_image
        return f_text, f_image
