"""Word-level caption vocabulary for the image/text experiment: {pad}=0, {eos}=1, {unk}=2.

Captions are split into lowercase word tokens (each punctuation mark is a token of its own).
The vocabulary is built from the training captions in order of first occurrence and saved
as JSON in the same shape as the authors' ``vocab.json`` (``{"w2i": ..., "i2w": ...}``).
Unlike the authors' lookup (which returned the string "{unk}" instead of its index), every
unknown word maps to index 2.

    vocab = Vocabulary.build(train_captions)
    ids = vocab.encode_batch(captions, max_len=caption_length(train_captions))
    x = one_hot(ids, len(vocab))  # [N, max_len, V] input of the text encoder
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = [
    "EOS",
    "EOS_INDEX",
    "PAD",
    "PAD_INDEX",
    "SPECIAL_TOKENS",
    "UNK",
    "UNK_INDEX",
    "Vocabulary",
    "caption_length",
    "one_hot",
    "tokenize",
]

PAD, EOS, UNK = "{pad}", "{eos}", "{unk}"
PAD_INDEX, EOS_INDEX, UNK_INDEX = 0, 1, 2
SPECIAL_TOKENS = (PAD, EOS, UNK)

_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokenize(caption: str) -> list[str]:
    """Lowercase word tokens of a caption; punctuation marks are separate tokens."""
    return _TOKEN.findall(caption.lower())


def caption_length(captions: Iterable[str]) -> int:
    """Smallest max_len that fits every caption plus its {eos} token."""
    return 1 + max((len(tokenize(c)) for c in captions), default=0)


def one_hot(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Float one-hot encoding [..., L, V] of token ids [..., L] for the text encoder."""
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"token ids must be an integer tensor, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]"
        )
    return torch.nn.functional.one_hot(ids.long(), vocab_size).float()


class Vocabulary:
    """Word <-> index map whose first three entries are {pad}, {eos}, {unk}."""

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if tuple(words[:3]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}, got {words[:3]}")
        repeated = [w for w, n in Counter(words).items() if n > 1]
        if repeated:
            raise ValueError(f"words occur more than once in the vocabulary: {repeated[:5]}")
        self.words = words
        self.w2i = {w: i for i, w in enumerate(words)}

    @classmethod
    def build(cls, captions: Iterable[str]) -> Vocabulary:
        """Vocabulary of every token in the captions, in order of first occurrence."""
        words = dict.fromkeys(SPECIAL_TOKENS)
        for caption in captions:
            words.update(dict.fromkeys(tokenize(caption)))
        return cls(list(words))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.w2i

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def index(self, word: str) -> int:
        """Index of a word; unknown words map to the {unk} index."""
        return self.w2i.get(word, UNK_INDEX)

    def encode(
        self, caption: str, max_len: int, *, truncate: bool = False, row: int | None = None
    ) -> list[int]:
        """Token ids of a caption, then {eos}, padded with {pad} to exactly max_len."""
        tokens = tokenize(caption)
        if len(tokens) + 1 > max_len:
            if not truncate:
                where = f"caption row {row}" if row is not None else "caption"
                raise ValueError(
                    f"{where} has {len(tokens)} tokens ({len(tokens) + 1} with {EOS}) but "
                    f"max_len is {max_len}; raise max_len or pass truncate=True: {caption!r}"
                )
            tokens = tokens[: max_len - 1]
        ids = [self.index(t) for t in tokens] + [EOS_INDEX]
        return ids + [PAD_INDEX] * (max_len - len(ids))

    def encode_batch(
        self, captions: Sequence[str], max_len: int, *, truncate: bool = False
    ) -> torch.Tensor:
        """Int64 tensor [N, max_len] of encoded captions; errors name the caption row."""
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1 (room for {EOS}), got {max_len}")
        rows = [self.encode(c, max_len, truncate=truncate, row=i) for i, c in enumerate(captions)]
        return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), max_len)

    def decode(self, ids: Iterable[int]) -> str:
        """Space-joined words up to the first {eos}, skipping {pad}."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS_INDEX:
                break
            if i != PAD_INDEX:
                words.append(self.words[i])
        return " ".join(words)

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON ``{"w2i": {word: i}, "i2w": {"i": word}}``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"w2i": self.w2i, "i2w": {str(i): w for i, w in enumerate(self.words)}}
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by save() (or the authors' vocab.json)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"vocabulary file {path} does not exist")
        payload = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(payload, dict) or "w2i" not in payload:
            raise ValueError(f"{path} is not a vocabulary file (no 'w2i' map)")
        w2i = payload["w2i"]
        words = sorted(w2i, key=w2i.__getitem__)
        if [w2i[w] for w in words] != list(range(len(words))):
            raise ValueError(f"{path}: word indices are not 0..{len(words) - 1} without gaps")
        try:
            return cls(words)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
