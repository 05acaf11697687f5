"""Byte-level BPE tokenizer for the grid texts, trained offline with `tokenizers`.

GPT-2's scheme: text is split with the GPT-2 pattern, every byte is one of 256 base
symbols (so any string encodes and decodes back exactly, newlines and "|" included), and
frequent symbol pairs are merged up to ``vocab_size`` entries. One special token,
``<|endoftext|>`` (id 0), is the bos, eos and pad token. By default encoding adds no
special tokens (as GPT-2); with ``add_bos=True`` the tokenizer starts every encoded text
with ``<|endoftext|>`` (when ``add_special_tokens`` is on, as in ``tokenizer(text)``), a
fixed first position that a rotary LM can anchor its attention on. Either way, append
``tokenizer.eos_token`` yourself where a sequence should end.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["ENDOFTEXT", "train_bpe_tokenizer"]

ENDOFTEXT = "<|endoftext|>"
_N_BYTES = 256


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    model_max_length: int = 1024,
    add_bos: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on texts; saved with save_pretrained(out_dir) when given.

    The result is deterministic: the same texts (in any order) give the same vocabulary and
    merges (checked across processes; the trainer breaks ties by pair, not by hash order).
    ``vocab_size`` counts the 256 bytes and ``<|endoftext|>``; a small corpus can run out of
    pairs to merge first, so size the LM with ``len(tokenizer)``, not ``vocab_size``.
    ``add_bos`` makes ``encode(text)`` / ``tokenizer(text)`` prepend ``<|endoftext|>``
    (``add_special_tokens=False`` still gives the bare text); the saved tokenizer keeps it.
    Reload with ``AutoTokenizer.from_pretrained(out_dir)`` (or ``PreTrainedTokenizerFast``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if isinstance(texts, str | bytes):
        raise ValueError("texts must be an iterable of strings, not a single string")
    low = _N_BYTES + 1
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < low:
        raise ValueError(
            f"vocab_size must be an int >= {low} (256 bytes + {ENDOFTEXT}), got {vocab_size!r}"
        )
    if (
        isinstance(model_max_length, bool)
        or not isinstance(model_max_length, int)
        or model_max_length < 1
    ):
        raise ValueError(f"model_max_length must be a positive int, got {model_max_length!r}")
    if not isinstance(add_bos, bool):
        raise ValueError(f"add_bos must be a bool, got {add_bos!r}")
    corpus = list(texts)
    for i, text in enumerate(corpus):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] must be a str, got {type(text).__name__}")
    if not corpus:
        raise ValueError("texts is empty: the tokenizer needs at least one training text")

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[ENDOFTEXT],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, always
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    if add_bos:
        bos_id = tokenizer.token_to_id(ENDOFTEXT)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{ENDOFTEXT} $A",
            pair=f"{ENDOFTEXT} $A $B",
            special_tokens=[(ENDOFTEXT, bos_id)],
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # decode(encode(text)) == text
    )
    if out_dir is not None:
        wrapped.save_pretrained(os.fspath(out_dir))
    return wrapped
