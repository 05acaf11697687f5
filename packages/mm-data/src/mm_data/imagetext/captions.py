"""Caption preprocessing of the ALBEF family of CLIP code bases (``pre_caption``)."""

from __future__ import annotations

import re

__all__ = ["preprocess_caption"]

# Characters deleted outright; '-' and '/' become spaces instead.
_DELETED = re.compile(r"[,.'!?\"()*#:;~]")


def preprocess_caption(text: str, max_words: int | None = 30) -> str:
    """Lowercase, drop ,.'!?"()*#:;~, map -,/ to spaces and <person> to person, keep max_words."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be a string, got {type(text).__name__}")
    if max_words is not None and max_words < 1:
        raise ValueError(f"max_words must be >= 1 or None, got {max_words}")
    text = _DELETED.sub("", text.lower())
    text = text.replace("-", " ").replace("/", " ").replace("<person>", "person")
    words = text.split()  # collapses every run of whitespace and strips both ends
    if max_words is not None:
        words = words[:max_words]
    return " ".join(words)
