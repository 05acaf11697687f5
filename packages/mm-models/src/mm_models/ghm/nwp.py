"""Autoregressive next-word model on GHM leaves (the paper's "Autoregressive NWP").

Sequence = image prefix, then the text input text[:-1] (n_leaves - 1 = 80 tokens):
  - image_mode "joint": the 81 image leaves as learned token embeddings;
  - image_mode "sequential": one token holding a frozen CLIP image embedding [B, embed_dim]
    in channels 0..embed_dim-1, zeros above. The caller computes it (e.g. a trained
    GHMClipEncoder under torch.no_grad()) and passes it as `image_embedding`.
Every position gets a learned position embedding. Attention mask (True = may attend):
image tokens attend to image tokens only; text token j attends to every image token and
to text tokens 0..j. Readout Linear(d -> vocab) on the text positions: logits [B, 80,
vocab], where position j predicts text[j + 1].
Paper: d = 256, 9 layers (1 for "shallow").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mm_models.ghm._inputs import check_batch, check_embedding, check_tokens
from mm_models.ghm.transformer import GHMTransformer, GHMTransformerConfig, init_ghm_weights

ImageMode = Literal["joint", "sequential"]


@dataclass
class GHMNextWordConfig(GHMTransformerConfig):
    """vocab leaf values, n_leaves per modality, image_mode "joint" or "sequential",
    embed_dim of the frozen image embedding (sequential)."""

    vocab: int = 10
    n_leaves: int = 81
    image_mode: ImageMode = "joint"
    embed_dim: int = 10
    d_model: int = 256
    n_layer: int = 9

    def validate(self) -> None:
        super().validate()
        if self.vocab < 1 or self.n_leaves < 2:
            raise ValueError(
                f"vocab ({self.vocab}) must be >= 1 and n_leaves ({self.n_leaves}) >= 2"
            )
        if self.image_mode not in ("joint", "sequential"):
            raise ValueError(f"image_mode must be 'joint' or 'sequential', got {self.image_mode!r}")
        if self.image_mode == "sequential" and not 1 <= self.embed_dim <= self.d_model:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must lie in 1..d_model ({self.d_model}) to pad the image embedding"
            )


def prefix_lm_mask(n_prefix: int, n_text: int, device: torch.device | None = None) -> Tensor:
    """Bool [T, T], T = n_prefix + n_text, True = query (row) may attend to key (column):
    prefix rows see the prefix only; text rows see the whole prefix and text causally."""
    n = n_prefix + n_text
    query = torch.arange(n, device=device).unsqueeze(1)
    key = torch.arange(n, device=device).unsqueeze(0)
    key_in_prefix = key < n_prefix
    query_in_prefix = query < n_prefix
    return key_in_prefix | (~query_in_prefix & (key <= query))


class GHMNextWordModel(nn.Module):
    """Prefix language model: image prefix (joint tokens or one frozen embedding) + text."""

    def __init__(self, config: GHMNextWordConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d, n = config.d_model, config.n_leaves
        self.n_image_tokens = n if config.image_mode == "joint" else 1
        self.n_text_tokens = n - 1
        self.image_tok_emb = nn.Embedding(config.vocab, d) if config.image_mode == "joint" else None
        self.text_tok_emb = nn.Embedding(config.vocab, d)
        self.pos_emb = nn.Parameter(torch.zeros(self.n_image_tokens + self.n_text_tokens, d))
        self.transformer = GHMTransformer(config)
        self.head = nn.Linear(d, config.vocab)
        self.register_buffer(
            "attn_mask", prefix_lm_mask(self.n_image_tokens, self.n_text_tokens), persistent=False
        )
        init_ghm_weights(
            self, config.n_layer, embed_std=config.embed_std, positions=(self.pos_emb,)
        )

    @property
    def image_slice(self) -> slice:
        """Positions of the image token(s) in the sequence."""
        return slice(0, self.n_image_tokens)

    @property
    def text_slice(self) -> slice:
        """Positions of the text tokens in the sequence."""
        return slice(self.n_image_tokens, self.n_image_tokens + self.n_text_tokens)

    def input_tokens(
        self, text: Tensor, image: Tensor | None = None, image_embedding: Tensor | None = None
    ) -> Tensor:
        """The transformer input [B, T, d]: image prefix then text[:, :80]."""
        cfg = self.config
        check_tokens("text", text, cfg.vocab, (cfg.n_leaves, cfg.n_leaves - 1))
        text = text[:, : self.n_text_tokens]
        batch = text.shape[0]
        if cfg.image_mode == "joint":
            if image is None or image_embedding is not None:
                raise ValueError(
                    "image_mode 'joint' needs `image` (int leaves) and no `image_embedding`"
                )
            check_tokens("image", image, cfg.vocab, cfg.n_leaves)
            check_batch("image", image, batch)
            prefix = self.image_tok_emb(image)
        else:
            if image_embedding is None or image is not None:
                raise ValueError(
                    "image_mode 'sequential' needs `image_embedding` (frozen CLIP image embedding) and no `image`"
                )
            check_embedding("image_embedding", image_embedding, batch, cfg.embed_dim)
            padded = F.pad(image_embedding.to(self.pos_emb.dtype), (0, cfg.d_model - cfg.embed_dim))
            prefix = padded.unsqueeze(1)
        return torch.cat([prefix, self.text_tok_emb(text)], dim=1) + self.pos_emb

    def forward(
        self,
        text: Tensor,
        image: Tensor | None = None,
        *,
        image_embedding: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """text: int [B, n_leaves] (the last leaf is dropped) or [B, n_leaves - 1];
        image: int [B, n_leaves] (joint) or image_embedding: float [B, embed_dim]
        (sequential). Returns logits [B, n_leaves - 1, vocab], position j predicting
        text[:, j + 1]; with return_hidden also the per-layer residual streams."""
        x = self.input_tokens(text, image, image_embedding)
        h, hidden = self.transformer(x, self.attn_mask, return_hidden=True)
        logits = self.head(h[:, self.text_slice])
        return (logits, hidden) if return_hidden else logits
