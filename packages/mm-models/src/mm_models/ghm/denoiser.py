"""Conditional denoiser on GHM leaves (the paper's "Conditional denoiser").

Predicts the clean image leaves x from noisy leaves z = x + sigma * N(0, 1), given the text.

Image tokens: channel v (v = 0..vocab-1) holds the Gaussian log-evidence -(v - z)^2 / (2 sigma^2)
of leaf value v, channels vocab..d-1 are zero; a learned position embedding is added.
Text, two modes:
  - "joint": the 81 text leaves as learned token embeddings (+ positions), one transformer
    over 162 tokens, text tokens first, full (bidirectional) attention;
  - "sequential": one token holding a frozen CLIP text embedding [B, embed_dim] in channels
    0..embed_dim-1, zeros above (+ a learned position embedding), then the image tokens:
    82 tokens. The caller computes the embedding, e.g. with a trained GHMClipEncoder under
    torch.no_grad(), and passes it as `text_embedding`; this module never sees the encoder.
Readout: Linear(d -> 1) per image token -> [B, 81] predicted clean leaves.
Paper: d = 128, 9 layers (1 for "shallow"), sigma = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mm_models.ghm._inputs import check_batch, check_embedding, check_real_leaves, check_tokens
from mm_models.ghm.transformer import GHMTransformer, GHMTransformerConfig, init_ghm_weights

TextMode = Literal["joint", "sequential"]


@dataclass
class GHMDenoiserConfig(GHMTransformerConfig):
    """vocab leaf values, n_leaves per modality, text_mode "joint" or "sequential",
    embed_dim of the frozen text embedding (sequential), sigma of the observation noise."""

    vocab: int = 10
    n_leaves: int = 81
    text_mode: TextMode = "joint"
    embed_dim: int = 10
    sigma: float = 1.0
    d_model: int = 128
    n_layer: int = 9

    def validate(self) -> None:
        super().validate()
        if self.vocab < 1 or self.n_leaves < 1:
            raise ValueError(f"vocab ({self.vocab}) and n_leaves ({self.n_leaves}) must be >= 1")
        if self.d_model < self.vocab:
            raise ValueError(
                f"d_model ({self.d_model}) must be >= vocab ({self.vocab}) to hold the evidence channels"
            )
        if self.text_mode not in ("joint", "sequential"):
            raise ValueError(f"text_mode must be 'joint' or 'sequential', got {self.text_mode!r}")
        if self.text_mode == "sequential" and not 1 <= self.embed_dim <= self.d_model:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must lie in 1..d_model ({self.d_model}) to pad the text embedding"
            )
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")


def evidence_features(z: Tensor, vocab: int, d_model: int, sigma: float = 1.0) -> Tensor:
    """Gaussian log-evidence -(v - z)^2 / (2 sigma^2) for v in 0..vocab-1 in channels
    0..vocab-1, zero-padded to d_model. z: [B, L] -> [B, L, d_model]."""
    if d_model < vocab:
        raise ValueError(
            f"d_model ({d_model}) must be >= vocab ({vocab}) to hold the evidence channels"
        )
    values = torch.arange(vocab, dtype=z.dtype, device=z.device)
    evidence = -((values - z.unsqueeze(-1)) ** 2) / (2.0 * sigma**2)
    return F.pad(evidence, (0, d_model - vocab))


class GHMConditionalDenoiser(nn.Module):
    """Transformer denoiser of noisy image leaves conditioned on text (joint or sequential)."""

    def __init__(self, config: GHMDenoiserConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d, n = config.d_model, config.n_leaves
        self.n_text_tokens = n if config.text_mode == "joint" else 1
        self.text_tok_emb = nn.Embedding(config.vocab, d) if config.text_mode == "joint" else None
        self.text_pos_emb = nn.Parameter(torch.zeros(self.n_text_tokens, d))
        self.image_pos_emb = nn.Parameter(torch.zeros(n, d))
        self.transformer = GHMTransformer(config)
        self.head = nn.Linear(d, 1)
        init_ghm_weights(
            self,
            config.n_layer,
            embed_std=config.embed_std,
            positions=(self.text_pos_emb, self.image_pos_emb),
        )

    @property
    def text_slice(self) -> slice:
        """Positions of the text token(s) in the sequence."""
        return slice(0, self.n_text_tokens)

    @property
    def image_slice(self) -> slice:
        """Positions of the image tokens in the sequence (use as guided_penalty's token_range)."""
        return slice(self.n_text_tokens, self.n_text_tokens + self.config.n_leaves)

    def input_tokens(
        self, z: Tensor, text: Tensor | None = None, text_embedding: Tensor | None = None
    ) -> Tensor:
        """The transformer input [B, T, d]: text token(s) first, then the image tokens."""
        cfg = self.config
        check_real_leaves("z (noisy image leaves)", z, cfg.n_leaves)
        if cfg.text_mode == "joint":
            if text is None or text_embedding is not None:
                raise ValueError(
                    "text_mode 'joint' needs `text` (int leaves) and no `text_embedding`"
                )
            check_tokens("text", text, cfg.vocab, cfg.n_leaves)
            check_batch("text", text, z.shape[0])
            text_tokens = self.text_tok_emb(text)
        else:
            if text_embedding is None or text is not None:
                raise ValueError(
                    "text_mode 'sequential' needs `text_embedding` (frozen CLIP text embedding) and no `text`"
                )
            check_embedding("text_embedding", text_embedding, z.shape[0], cfg.embed_dim)
            padded = F.pad(text_embedding.to(z.dtype), (0, cfg.d_model - cfg.embed_dim))
            text_tokens = padded.unsqueeze(1)
        text_tokens = text_tokens + self.text_pos_emb
        image_tokens = evidence_features(z, cfg.vocab, cfg.d_model, cfg.sigma) + self.image_pos_emb
        return torch.cat([text_tokens, image_tokens], dim=1)

    def forward(
        self,
        z: Tensor,
        text: Tensor | None = None,
        *,
        text_embedding: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """z: float [B, n_leaves] noisy image leaves; text: int [B, n_leaves] (joint) or
        text_embedding: float [B, embed_dim] (sequential). Returns predicted clean image
        leaves [B, n_leaves], and with return_hidden the per-layer residual streams
        (list of [B, T, d]; image tokens at `image_slice`)."""
        x = self.input_tokens(z, text, text_embedding)
        h, hidden = self.transformer(x, return_hidden=True)
        prediction = self.head(h[:, self.image_slice]).squeeze(-1)
        return (prediction, hidden) if return_hidden else prediction
