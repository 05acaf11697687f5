"""An offline, BERT-style lowercase WordPiece tokenizer for captions.

Built with the `tokenizers` library on the captions at hand (nothing is downloaded) and
wrapped in `transformers.PreTrainedTokenizerFast`, so the usual call works. The vocabulary
is chosen deterministically: the special tokens, every character seen (as a word start
and as a `##` continuation, so every word encodes), then the most frequent whole words,
ties broken alphabetically. (The `tokenizers` WordPiece trainer gives a different
vocabulary from run to run on the same texts, even on one thread, which would make two
runs with the same seed train different models.)

    tok = train_wordpiece_tokenizer(captions, vocab_size=8000)
    batch = tok(captions[:8], padding="max_length", truncation=True, max_length=30,
                return_tensors="pt")                      # input_ids, attention_mask [8, 30]
    tok.save_pretrained("runs/tok")
    tok = load_or_train_tokenizer("runs/tok", None)       # the same tokenizer, from disk
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "load_or_train_tokenizer", "train_wordpiece_tokenizer"]

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in this order

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def _checked_texts(texts: Iterable[str], counter: list[int]) -> Iterator[str]:
    """Yield the texts one by one, raising ValueError on a non-string; count them in counter."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] must be a str, got {type(text).__name__}")
        counter[0] += 1
        yield text


def _deterministic_vocab(
    words: Counter[str], vocab_size: int, min_frequency: int
) -> dict[str, int]:
    """Special tokens, characters (start and ##continuation), then frequent words."""
    chars = sorted({c for word in words for c in word})
    ordered = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    frequent = sorted(
        (w for w, n in words.items() if n >= min_frequency and len(w) > 1),
        key=lambda w: (-words[w], w),
    )
    ordered += frequent
    return {token: i for i, token in enumerate(dict.fromkeys(ordered[:vocab_size]))}


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 8000,
    min_frequency: int = 1,
    lowercase: bool = True,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a BERT-style WordPiece tokenizer on texts; `[CLS] text [SEP]`, [PAD] is id 0."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if isinstance(texts, str | bytes):
        raise ValueError("texts must be an iterable of strings, not a single string")
    for name, value, low in (
        ("vocab_size", vocab_size, len(SPECIAL_TOKENS) + 1),
        ("min_frequency", min_frequency, 1),
        ("model_max_length", model_max_length, 3),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    count = [0]
    for text in _checked_texts(texts, count):
        pieces = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        words.update(word for word, _ in pieces)
    if count[0] == 0:
        raise ValueError("texts is empty: the tokenizer needs at least one training text")
    vocab = _deterministic_vocab(words, vocab_size, min_frequency)
    tokenizer = Tokenizer(
        models.WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix="##")
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")

    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        model_max_length=model_max_length,
    )


def load_or_train_tokenizer(
    path: str | Path | None, texts: Iterable[str] | None = None, **train_kwargs: Any
) -> PreTrainedTokenizerFast:
    """Load the tokenizer saved in the local directory path, or train one on texts if path is None."""
    if path is None:
        if texts is None:
            raise ValueError(
                "load_or_train_tokenizer: give a tokenizer directory or texts to train on"
            )
        return train_wordpiece_tokenizer(texts, **train_kwargs)
    directory = Path(path)
    if not directory.exists():
        raise ValueError(f"tokenizer path {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise ValueError(f"tokenizer path {str(directory)!r} is not a directory")
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise ValueError(
            f"tokenizer path {str(directory)!r} is not a tokenizer directory: it has none of "
            f"{', '.join(_TOKENIZER_FILES)} (save one with tokenizer.save_pretrained)"
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
