"""MM-IMDb (movie posters + plots, 23 genres, multi-label) in its released on-disk layout.

The release unpacks to::

    ROOT/split.json              {"train": [ids], "dev": [ids], "test": [ids]}
    ROOT/dataset/<id>.json       {"plot": ["paragraph", ...], "genres": ["Drama", ...], ...}
    ROOT/dataset/<id>.jpeg       the poster

`MMIMDb(root, split)` reads one split: the caption of a movie is the first plot
paragraph of more than one word (movies without one are skipped and counted), the labels
a 23-dim multi-hot over `GENRES`; ``ids`` restricts (and orders) it to an id list, e.g.
the 1,024 sampled ids per split of the alignment study. `write_miniature` writes a small
generated copy in the same layout, for tests and the CPU demo.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["GENRES", "SPLITS", "MMIMDb", "first_paragraph", "write_miniature"]

# the 23 genres of MM-IMDb, in the dataset's order (index 19 is Western)
GENRES = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
)  # fmt: skip
SPLITS = ("train", "dev", "test")


def first_paragraph(plot: Any) -> str | None:
    """The first plot paragraph of more than one word (None when there is none)."""
    paragraphs = [plot] if isinstance(plot, str) else list(plot or [])
    for paragraph in paragraphs:
        if isinstance(paragraph, str) and len(paragraph.split()) > 1:
            return paragraph.strip()
    return None


class MMIMDb(Dataset):
    """One split: items ``{"id", "image", "caption", "labels" (float [23]), "index"}``.

    ``transform`` maps the PIL poster to a tensor (the image is returned as PIL without
    one); ``load_images=False`` leaves images out (captions and labels only).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        ids: Sequence[str] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        load_images: bool = True,
    ) -> None:
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        split_file = root / "split.json"
        if not split_file.is_file():
            raise FileNotFoundError(f"MM-IMDb root {root} has no split.json")
        splits = json.loads(split_file.read_text(encoding="utf-8"))
        if split not in splits:
            raise ValueError(f"{split_file} has no {split!r} split (has {sorted(splits)})")
        available = [str(i) for i in splits[split]]
        if ids is not None:
            known = set(available)
            missing = [i for i in ids if str(i) not in known]
            if missing:
                raise ValueError(
                    f"{len(missing)} requested ids are not in the {split} split, e.g. {missing[:3]}"
                )
            available = [str(i) for i in ids]
        self.root, self.split, self.transform = root, split, transform
        self.load_images = load_images
        self.ids: list[str] = []
        self.captions: list[str] = []
        labels = []
        self.skipped = 0
        for movie in available:
            meta_file = root / "dataset" / f"{movie}.json"
            if not meta_file.is_file():
                raise FileNotFoundError(f"MM-IMDb: {meta_file} is missing (id {movie} of {split})")
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            caption = first_paragraph(meta.get("plot"))
            if caption is None:
                self.skipped += 1
                continue
            unknown = [g for g in meta.get("genres", []) if g not in GENRES]
            if unknown:
                raise ValueError(f"{meta_file}: unknown genres {unknown}")
            self.ids.append(movie)
            self.captions.append(caption)
            labels.append([float(g in meta.get("genres", [])) for g in GENRES])
        self.labels = torch.tensor(labels, dtype=torch.float32).view(-1, len(GENRES))

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> MMIMDb:
        """The first ``n`` movies of this split, without reading any file again."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        first = copy.copy(self)
        first.ids, first.captions, first.labels = self.ids[:n], self.captions[:n], self.labels[:n]
        return first

    def image(self, i: int) -> Image.Image:
        path = self.root / "dataset" / f"{self.ids[i]}.jpeg"
        if not path.is_file():
            raise FileNotFoundError(f"MM-IMDb: poster {path} is missing")
        with Image.open(path) as image:
            return image.convert("RGB")

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} movies")
        i %= len(self)
        item = {"id": self.ids[i], "caption": self.captions[i], "labels": self.labels[i],
                "index": i}  # fmt: skip
        if self.load_images:
            image = self.image(i)
            item["image"] = self.transform(image) if self.transform else image
        return item


# words that make a genre's plots recognisable in the miniature
_GENRE_WORDS = {
    "Drama": "family loss grief", "Comedy": "funny prank wedding", "Romance": "love kiss heart",
    "Thriller": "chase danger secret", "Crime": "detective murder gang",
    "Action": "explosion fight mission", "Adventure": "journey treasure island",
    "Horror": "ghost blood curse", "Documentary": "interview history facts",
    "Mystery": "clue puzzle disappearance", "Sci-Fi": "spaceship robot planet",
    "Fantasy": "dragon magic kingdom", "Family": "children dog holiday",
    "Biography": "life story famous", "War": "soldier battle army", "History": "empire king war",
    "Music": "band concert song", "Animation": "cartoon animal talking",
    "Musical": "dance stage singing", "Western": "cowboy sheriff desert",
    "Sport": "team coach championship", "Short": "brief moment minutes",
    "Film-Noir": "shadow femme fatale",
}  # fmt: skip
_FILLER = ("a", "the", "of", "and", "in", "to", "with", "who", "must", "find", "when", "their",
           "after")  # fmt: skip


def write_miniature(root: str | Path, per_split: int = 40, seed: int = 0, size: int = 48) -> Path:
    """A generated MM-IMDb in the release layout: plots and poster colours follow the genres.

    Each movie gets 1-3 genres; its plot mixes genre words with filler (one one-word
    paragraph first, which the reader must skip), its poster is a colour field whose hue
    is a function of the first genre plus noise. A few movies have no usable plot.
    """
    root = Path(root)
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[str]] = {}
    movie = 0
    for split in SPLITS:
        splits[split] = []
        for _ in range(per_split):
            movie += 1
            movie_id = f"{movie:07d}"
            genres = list(rng.choice(len(GENRES), size=rng.integers(1, 4), replace=False))
            words = [w for g in genres for w in _GENRE_WORDS[GENRES[g]].split()]
            text = " ".join(rng.choice(words + list(_FILLER), size=rng.integers(8, 20)))
            plot = ["Untitled", text.capitalize() + "."] if movie % 9 else ["Unknown"]
            meta = {"title": f"Movie {movie}", "plot": plot,
                    "genres": [GENRES[g] for g in genres]}  # fmt: skip
            (root / "dataset" / f"{movie_id}.json").write_text(json.dumps(meta), encoding="utf-8")
            hue = np.array([(genres[0] * 37) % 256, (genres[0] * 91) % 256, (genres[0] * 53) % 256])
            pixels = np.clip(hue + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "dataset" / f"{movie_id}.jpeg", quality=90)
            splits[split].append(movie_id)
    (root / "split.json").write_text(json.dumps(splits), encoding="utf-8")
    return root
