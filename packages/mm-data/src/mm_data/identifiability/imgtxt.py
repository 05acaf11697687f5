"""Multimodal3DIdent image/text pairs: the on-disk layout, its factors, and the loader
(of the real archive and of the procedural stand-in written by `imgtxt_render`).

Daunhawer et al., "Identifiability Results for Multimodal Contrastive Learning", ICLR 2023,
section 5.2. The real data set is rendered with Blender (one object in front of a coloured
background under a coloured spotlight); `imgtxt_render` draws a 2D stand-in with the same
factor structure and writes it in the same on-disk layout, per split and aligned by index:

    <root>/<split>/images/<i>.png      i zero-padded to max(1, ceil(log10 N)) digits
    <root>/<split>/text/text_raw.txt   one caption per line
    <root>/<split>/latents_image.csv   IMAGE_LATENTS columns
    <root>/<split>/latents_text.csv    TEXT_LATENTS columns

Factor roles: shape and x/y position (a 3x3 grid) are shared by both modalities; the object
colour is dependent but not one-to-one (the caption names the nearest colour of a randomly
chosen palette); rotations, spotlight and background are image-specific; the phrasing (one of
five templates) is text-specific.

    write_multimodal3dident("data/m3di", 10_000, 1_000, 1_000, image_size=64, seed=0)
    train = Multimodal3DIdent("data/m3di", "train")
    val = Multimodal3DIdent("data/m3di", "val", vocab=train.vocab, max_len=train.max_len)
"""

from __future__ import annotations

import collections
import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mm_data.identifiability.tokenizer import Vocabulary, caption_length, tokenize

__all__ = [
    "COLOR_NAMES",
    "COLOR_PALETTES",
    "FACTORS",
    "IMAGE_LATENTS",
    "SHAPES",
    "SPLITS",
    "TEMPLATES",
    "TEXT_LATENTS",
    "XPOS_WORDS",
    "YPOS_WORDS",
    "Multimodal3DIdent",
    "image_name_width",
    "read_captions",
    "read_latents",
]

SPLITS = ("train", "val", "test")
SHAPES = ("circle", "square", "triangle", "ring", "cross", "tee", "crescent")
XPOS_WORDS = ("left", "center", "right")
YPOS_WORDS = ("top", "mid", "bottom")

# Palettes of named hues (hue in [0, 1)) at three granularities.
COLOR_PALETTES: dict[str, dict[str, float]] = {
    "basic": {
        "red": 0.0,
        "yellow": 1 / 6,
        "green": 2 / 6,
        "cyan": 3 / 6,
        "blue": 4 / 6,
        "magenta": 5 / 6,
    },
    "wheel": {
        "red": 0.0,
        "orange": 1 / 12,
        "yellow": 2 / 12,
        "lime": 3 / 12,
        "green": 4 / 12,
        "jade": 5 / 12,
        "cyan": 6 / 12,
        "azure": 7 / 12,
        "blue": 8 / 12,
        "violet": 9 / 12,
        "magenta": 10 / 12,
        "rose": 11 / 12,
    },
    "artist": {
        "scarlet": 0.02,
        "amber": 0.11,
        "chartreuse": 0.25,
        "emerald": 0.38,
        "teal": 0.5,
        "cobalt": 0.6,
        "indigo": 0.72,
        "purple": 0.8,
        "fuchsia": 0.88,
    },
}
# object_color_index indexes this tuple: every palette's names, first occurrence first.
COLOR_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(n for palette in COLOR_PALETTES.values() for n in palette)
)

TEMPLATES = (
    "One {COLOR} {SHAPE} is shown at the {YPOS} {XPOS} of the image.",
    "There is a {SHAPE} of {COLOR} color in the {YPOS}-{XPOS} area.",
    "In the {YPOS}-{XPOS} region of the picture, you can see one {COLOR} {SHAPE}.",
    "The {SHAPE} placed {YPOS} {XPOS} has a {COLOR} color.",
    "Located at {YPOS} {XPOS}, a {SHAPE} painted {COLOR} stands out.",
)

IMAGE_LATENTS = (
    "object_shape",
    "object_xpos",
    "object_ypos",
    "object_zpos",
    "object_alpharot",
    "object_betarot",
    "object_gammarot",
    "object_color",
    "spotlight_pos",
    "spotlight_color",
    "background_color",
)
TEXT_LATENTS = (
    "object_shape",
    "object_xpos",
    "object_ypos",
    "object_zpos",
    "object_color_name",
    "object_color_index",
    "text_phrasing",
)
# Factors to evaluate per modality and their type (object_zpos is constant, the colour
# name duplicates object_color_index).
FACTORS: dict[str, dict[str, str]] = {
    "image": {
        "object_shape": "discrete",
        "object_xpos": "discrete",
        "object_ypos": "discrete",
        "object_alpharot": "continuous",
        "object_betarot": "continuous",
        "object_gammarot": "continuous",
        "object_color": "continuous",
        "spotlight_pos": "continuous",
        "spotlight_color": "continuous",
        "background_color": "continuous",
    },
    "text": {
        "object_shape": "discrete",
        "object_xpos": "discrete",
        "object_ypos": "discrete",
        "object_color_index": "discrete",
        "text_phrasing": "discrete",
    },
}
_INTEGER_COLUMNS = {"object_shape", "object_xpos", "object_ypos", "object_zpos"} | {
    "object_color_index",
    "text_phrasing",
}


def image_name_width(n: int) -> int:
    """Digits of the zero-padded image names of an n-sample split: max(1, ceil(log10 n))."""
    return len(str(max(n - 1, 0)))


def read_captions(path: str | Path) -> list[str]:
    """Captions of a text_raw.txt file, one per line (a final newline is optional)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"caption file {path} does not exist")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    captions = [line.rstrip("\r") for line in lines]
    for row, caption in enumerate(captions):
        if not caption.strip():
            raise ValueError(f"{path}: caption row {row} is empty")
    return captions


def read_latents(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Columns of a latents csv as arrays (int64, float64, or str for text columns)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"latents file {path} does not exist")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty (no header row)")
    header, body = rows[0], [r for r in rows[1:] if r]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; it has {header}")
    for number, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(
                f"{path}: data row {number} has {len(row)} fields but the header has {len(header)}"
            )
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        if not name or name.startswith("Unnamed:"):
            continue  # a pandas index column
        cells = [r[j] for r in body]
        try:
            values = np.array([float(v) for v in cells], dtype=np.float64)
        except ValueError:
            columns[name] = np.array(cells, dtype=object)
            continue
        if name in _INTEGER_COLUMNS:
            if not np.all(values == np.round(values)):
                raise ValueError(f"{path}: column {name} must hold integers")
            values = values.astype(np.int64)
        columns[name] = values
    return columns


def _item_value(value):
    return value.item() if isinstance(value, np.generic) else value


class Multimodal3DIdent(torch.utils.data.Dataset):
    """Image/caption pairs and their latents, from the generated layout or the real archive."""

    # Items are dicts: "image" float [3, H, W] in [0, 1] (resized to image_size, then
    # transform), "text" int64 [max_len] ids (words, {eos}, {pad}), "z_image" / "z_text"
    # (latent name -> value) and "index"; whole-split latents are in latents_image /
    # latents_text (name -> array). Without vocab, the vocabulary is built from the
    # <root>/train captions; without max_len, it fits the longest caption of every split
    # under root, so that all splits agree.

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        vocab: Vocabulary | str | Path | None = None,
        max_len: int | None = None,
        truncate: bool = False,
        image_size: int | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / split
        self.image_size = image_size
        self.transform = transform
        if not self.split_dir.is_dir():
            raise ValueError(f"split directory {self.split_dir} does not exist")
        image_dir = self.split_dir / "images"
        text_path = self.split_dir / "text" / "text_raw.txt"
        image_csv = self.split_dir / "latents_image.csv"
        text_csv = self.split_dir / "latents_text.csv"
        if not image_dir.is_dir():
            raise ValueError(f"image directory {image_dir} does not exist")

        self.captions = read_captions(text_path)
        self.latents_image = read_latents(image_csv, IMAGE_LATENTS)
        self.latents_text = read_latents(text_csv, TEXT_LATENTS)
        self.image_paths = self._image_paths(
            image_dir,
            {
                text_path: ("captions", len(self.captions)),
                image_csv: ("rows", len(self.latents_image["object_shape"])),
                text_csv: ("rows", len(self.latents_text["object_shape"])),
            },
        )

        if vocab is None:
            vocab = Vocabulary.build(self._split_captions("train", required=True))
        elif not isinstance(vocab, Vocabulary):
            vocab = Vocabulary.load(vocab)
        self.vocab = vocab
        if max_len is None:
            max_len = max(
                caption_length(self.captions),
                *(caption_length(self._split_captions(s)) for s in SPLITS if s != split),
            )
        self.max_len = int(max_len)
        self.tokens = self.vocab.encode_batch(self.captions, self.max_len, truncate=truncate)

    def _split_captions(self, split: str, *, required: bool = False) -> list[str]:
        if split == self.split:
            return self.captions
        path = self.root / split / "text" / "text_raw.txt"
        if required and not path.is_file():
            raise ValueError(f"cannot build the vocabulary: {path} does not exist; pass vocab=")
        return read_captions(path) if path.is_file() else []

    @staticmethod
    def _image_paths(image_dir: Path, others: dict[Path, tuple[str, int]]) -> list[Path]:
        by_index = {}
        for path in image_dir.iterdir():
            if path.suffix.lower() == ".png" and path.stem.isdigit():
                by_index[int(path.stem)] = path
        counts = {image_dir: ("PNG files", len(by_index)), **others}
        common = collections.Counter(n for _, n in counts.values()).most_common(1)[0][0]
        if any(n != common for _, n in counts.values()):
            odd = sorted(counts, key=lambda p: counts[p][1] == common)
            parts = [f"{p} has {counts[p][1]} {counts[p][0]}" for p in odd]
            raise ValueError("split files disagree in length: " + ", ".join(parts))
        n = len(by_index)
        if n == 0:
            raise ValueError(f"{image_dir} holds no images")
        missing = [i for i in range(n) if i not in by_index]
        if missing:
            width = image_name_width(n)
            raise ValueError(
                f"{image_dir / f'{missing[0]:0{width}d}.png'} is missing "
                f"({len(missing)} of indices 0..{n - 1} have no image)"
            )
        return [by_index[i] for i in range(n)]

    @property
    def vocab_size(self) -> int:
        """Number of words in the vocabulary, special tokens included."""
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.captions)

    def load_image(self, index: int) -> torch.Tensor:
        """Float image [3, H, W] in [0, 1], resized to image_size if one was given."""
        with Image.open(self.image_paths[index]) as img:
            img = img.convert("RGB")
            if self.image_size is not None and img.size != (self.image_size, self.image_size):
                img = img.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)

    def channel_stats(self, max_images: int = 2000) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the pixel values (in [0, 1], after the
        resize) over the first `max_images` images: what image normalisation divides by."""
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be a positive int, got {max_images!r}")
        total = torch.zeros(3, dtype=torch.float64)
        total_sq = torch.zeros(3, dtype=torch.float64)
        pixels = 0
        for index in range(min(max_images, len(self))):
            image = self.load_image(index).double()
            total += image.sum(dim=(1, 2))
            total_sq += image.square().sum(dim=(1, 2))
            pixels += image.shape[1] * image.shape[2]
        mean = total / pixels
        std = (total_sq / pixels - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
        return mean.tolist(), std.tolist()

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "text": self.tokens[index],
            "z_image": {k: _item_value(v[index]) for k, v in self.latents_image.items()},
            "z_text": {k: _item_value(v[index]) for k, v in self.latents_text.items()},
            "index": index,
        }

    def caption_tokens(self, index: int) -> list[str]:
        """Lowercase word tokens of one caption."""
        return tokenize(self.captions[index])
