"""Captions made less faithful to their images, level by level: the uniqueness knob u.

A *rewriter* maps ``(captions, level)`` to new captions, ``level`` in [0, 1] (the
fraction of the caption changed). Built in, offline:

- `RuleRewriter`: replaces ``round(level x n)`` of a caption's n content words (not in a
  stop-word list) by other content words drawn from the corpus; the sentence form stays,
  its meaning drifts with the level;
- `CharRewriter`: deletes, replaces or permutes (shuffles) that fraction of characters.

`read_rewritten` reads captions rewritten elsewhere (e.g. by an LLM service) from JSON,
and `load_rewriter` turns a name (``rule``, ``char:delete``, ``module:function`` or a
JSON file) into a rewriter, so the LLM rewriting step is pluggable.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["CharRewriter", "RuleRewriter", "load_rewriter", "read_rewritten", "word_similarity"]

Rewriter = Callable[[Sequence[str], float], list[str]]
_STOPWORD_TEXT = (
    "a an the and or but of in on at to for with by from into onto over under near behind "
    "above below beside between is are was were be been being it its this that these those "
    "there here he she they them his her their we you i me my our your as than then so "
    "very not no yes do does did has have had will would can could should may might must "
    "up down out off left right top bottom one two three four five some any each other"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[A-Za-z]+")


def _check_level(level: float) -> float:
    if not 0.0 <= float(level) <= 1.0:
        raise ValueError(f"level must be in [0, 1] (a fraction), got {level}")
    return float(level)


def _rng(seed: int, level: float, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, round(level * 10_000), index])


class RuleRewriter:
    """Replace a fraction ``level`` of each caption's content words by other corpus words."""

    def __init__(self, corpus: Sequence[str], seed: int = 0) -> None:
        vocab = sorted({w.lower() for text in corpus for w in _WORD.findall(text)} - STOPWORDS)
        if len(vocab) < 2:
            raise ValueError("the corpus needs at least 2 distinct content words to draw from")
        self.vocab, self.seed = vocab, seed

    def __call__(self, captions: Sequence[str], level: float) -> list[str]:
        level = _check_level(level)
        out = []
        for index, text in enumerate(captions):
            matches = [m for m in _WORD.finditer(text) if m.group().lower() not in STOPWORDS]
            count = round(level * len(matches))
            rng = _rng(self.seed, level, index)
            chosen = sorted(rng.choice(len(matches), size=count, replace=False)) if count else []
            pieces, last = [], 0
            for k in chosen:
                match = matches[k]
                word = match.group().lower()
                new = word
                while new == word:
                    new = self.vocab[int(rng.integers(len(self.vocab)))]
                pieces += [text[last : match.start()], new]
                last = match.end()
            out.append("".join(pieces) + text[last:])
        return out


class CharRewriter:
    """Delete, replace (by a random letter) or permute a fraction ``level`` of characters."""

    OPS = ("delete", "replace", "permute")

    def __init__(self, op: str = "replace", seed: int = 0) -> None:
        if op not in self.OPS:
            raise ValueError(f"op must be one of {self.OPS}, got {op!r}")
        self.op, self.seed = op, seed

    def __call__(self, captions: Sequence[str], level: float) -> list[str]:
        level = _check_level(level)
        out = []
        for index, text in enumerate(captions):
            rng = _rng(self.seed, level, index)
            chars = list(text)
            count = round(level * len(chars))
            where = sorted(rng.choice(len(chars), size=count, replace=False)) if count else []
            if self.op == "delete":
                drop = set(where)
                chars = [c for k, c in enumerate(chars) if k not in drop]
            elif self.op == "replace":
                for k in where:
                    chars[k] = chr(ord("a") + int(rng.integers(26)))
            else:
                moved = [chars[k] for k in where]
                for k, c in zip(where, rng.permutation(moved)):
                    chars[k] = c
            out.append("".join(chars))
        return out


def read_rewritten(path: str | Path) -> dict[int, list[str]]:
    """Captions rewritten elsewhere: ``{percent: [captions]}``.

    Accepted JSON: ``{"10": [...], "20": [...]}``, or a list of per-caption records
    ``{"10": "...", "20": "..."}`` (other keys such as "original" ignored), or a list of
    per-caption lists (levels 10, 20, ... in order).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"rewritten captions {path}: {error}") from error
    levels: dict[int, list[str]] = {}
    if isinstance(data, dict):
        levels = {int(k): list(v) for k, v in data.items() if str(k).isdigit()}
    elif data and all(isinstance(r, dict) for r in data):
        keys = sorted({int(k) for r in data for k in r if str(k).isdigit()})
        levels = {k: [r[str(k)] for r in data] for k in keys}
    elif data and all(isinstance(r, list) for r in data):
        levels = {10 * (j + 1): [r[j] for r in data] for j in range(len(data[0]))}
    if not levels or len({len(v) for v in levels.values()}) != 1:
        raise ValueError(f"rewritten captions {path}: no levels, or levels of unequal length")
    return levels


def load_rewriter(spec: str, corpus: Sequence[str], seed: int = 0) -> Rewriter:
    """``rule`` | ``char:<op>`` | ``<module>:<callable>`` | a JSON file of rewritten captions."""
    if spec == "rule":
        return RuleRewriter(corpus, seed)
    if spec.startswith("char:"):
        return CharRewriter(spec.split(":", 1)[1], seed)
    if spec.endswith(".json"):
        levels = read_rewritten(spec)

        def from_file(captions: Sequence[str], level: float) -> list[str]:
            percent = round(_check_level(level) * 100)
            if percent not in levels:
                raise ValueError(f"{spec} has no level {percent} (has {sorted(levels)})")
            if len(levels[percent]) != len(captions):
                raise ValueError(
                    f"{spec} holds {len(levels[percent])} captions per level, not {len(captions)}"
                )
            return levels[percent]

        return from_file
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(
            f"rewriter {spec!r}: use rule, char:<op>, <module>:<callable> or a .json file"
        )
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"rewriter {spec!r}: {error}") from error


def word_similarity(original: Sequence[str], rewritten: Sequence[str]) -> float:
    """Mean normalised word-level similarity (1 - Levenshtein over words / length)."""
    from rapidfuzz.distance import Levenshtein

    if len(original) != len(rewritten):
        raise ValueError(f"{len(original)} originals vs {len(rewritten)} rewritten captions")
    scores = [Levenshtein.normalized_similarity(a.split(), b.split())
              for a, b in zip(original, rewritten)]  # fmt: skip
    return float(np.mean(scores)) if scores else 1.0
