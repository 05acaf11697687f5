"""A small GPT-2 language model built from a config (random weights, nothing downloaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mm_models.gridvlm._checks import check_int

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

__all__ = ["LMConfig", "build_lm"]


@dataclass
class LMConfig:
    """Size of a GPT-2 (`GPT2LMHeadModel`); JSON-serialisable.

    ``n_positions`` is the longest sequence the model can read; for the VLM it must hold the
    image tokens, the prompt and the generated answer. ``dropout`` sets GPT-2's three dropout
    rates (embeddings, attention, residual). ``eos_token_id`` is also the bos id;
    ``pad_token_id`` defaults to it (pad = eos, as `train_bpe_tokenizer` makes them).
    """

    vocab_size: int
    n_positions: int
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    dropout: float = 0.0
    eos_token_id: int = 0  # <|endoftext|> of train_bpe_tokenizer
    pad_token_id: int | None = None  # None: eos_token_id

    def __post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size)
        check_int("n_positions", self.n_positions)
        check_int("n_embd", self.n_embd)
        check_int("n_layer", self.n_layer)
        check_int("n_head", self.n_head)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, int | float)
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"dropout must be a float in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id
        for name in ("eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            check_int(name, value, low=0)
            if value >= self.vocab_size:
                raise ValueError(f"{name} ({value}) must be below vocab_size ({self.vocab_size})")

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, n_positions: int, **overrides: Any
    ) -> LMConfig:
        """vocab_size = len(tokenizer) and its eos/pad ids; other fields from overrides."""
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token (train_bpe_tokenizer sets one)")
        pad = tokenizer.pad_token_id
        return cls(
            vocab_size=len(tokenizer),
            n_positions=n_positions,
            eos_token_id=eos,
            pad_token_id=eos if pad is None else pad,
            **overrides,
        )

    def to_gpt2_config(self) -> GPT2Config:
        """The Hugging Face config of this model."""
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=self.vocab_size,
            n_positions=self.n_positions,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            resid_pdrop=self.dropout,
            embd_pdrop=self.dropout,
            attn_pdrop=self.dropout,
            bos_token_id=self.eos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )


def build_lm(cfg: LMConfig) -> GPT2LMHeadModel:
    """A randomly initialised `GPT2LMHeadModel` (tied input/output embeddings) of cfg's size."""
    from transformers import GPT2LMHeadModel

    if not isinstance(cfg, LMConfig):
        raise ValueError(f"cfg must be an LMConfig, got {type(cfg).__name__}")
    return GPT2LMHeadModel(cfg.to_gpt2_config())
