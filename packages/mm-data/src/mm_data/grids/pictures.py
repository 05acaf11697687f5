"""Object-picture sources with disjoint train / val / test pools, and grid rendering.

A source has ``class_names``, ``num_classes``, ``pool_size(class_index, split)`` and
``picture(class_index, split, k)`` -> RGB ``PIL.Image`` (``0 <= k < pool_size``). The pools
of one class never share a picture across the splits ``"train"``, ``"val"``, ``"test"``.

- ``DigitsSource``: scikit-learn's bundled handwritten digits (1,797 8x8 images; offline).
- ``SpriteSource``: procedural coloured shapes, each picture drawn from its own seed.
- ``Cifar10Source(root)``: the CIFAR-10 python batches in a local directory.

``render_grid`` pastes one picture per cell onto a black canvas.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mm_data.grids.generator import Grid

__all__ = [
    "CIFAR10_POOLS",
    "DIGIT_NAMES",
    "SOURCES",
    "SPLITS",
    "SPRITE_NAMES",
    "Cifar10Source",
    "DigitsSource",
    "PictureSource",
    "SpriteSource",
    "check_grid_fits",
    "make_source",
    "render_grid",
]

PathLike = str | os.PathLike[str]

SPLITS = ("train", "val", "test")
SOURCES = ("digits", "sprites", "cifar10")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPRITE_NAMES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "ring",
    "hexagon",
    "heart",
    "moon",
)
# Per-class ranks (start, stop) within the CIFAR-10 training batches, per split.
CIFAR10_POOLS: dict[str, tuple[int, int]] = {
    "train": (0, 1000),
    "val": (2000, 3000),
    "test": (4000, 5000),
}
_SPLIT_CODES = {split: i for i, split in enumerate(SPLITS)}


def _check_split(split: str) -> None:
    """ValueError unless split is train, val or test."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class PictureSource(ABC):
    """Pictures of object classes, in a disjoint pool per split."""

    name: str = ""

    def __init__(self, class_names: Sequence[str]):
        self.class_names: list[str] = list(class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def _check_class(self, class_index: int) -> None:
        """ValueError unless class_index is in 0..num_classes-1."""
        if not 0 <= class_index < self.num_classes:
            raise ValueError(
                f"class_index {class_index} is outside 0..{self.num_classes - 1} of {self.name}"
            )

    def pool_size(self, class_index: int, split: str) -> int:
        """Number of pictures of the class in the split's pool."""
        self._check_class(class_index)
        _check_split(split)
        return self._pool_size(class_index, split)

    def picture(self, class_index: int, split: str, k: int) -> Image.Image:
        """Picture k of the class's pool in the split, as an RGB image."""
        size = self.pool_size(class_index, split)
        if not 0 <= k < size:
            raise ValueError(
                f"picture k={k} is outside the {split} pool 0..{size - 1} of class "
                f"{class_index} ({self.class_names[class_index]!r}) of {self.name}"
            )
        return self._picture(class_index, split, int(k))

    def spec(self) -> dict[str, Any]:
        """What determines the pictures, JSON-ready (recorded in a dataset's meta.json)."""
        return {"name": self.name}

    @abstractmethod
    def _pool_size(self, class_index: int, split: str) -> int:
        """pool_size after the checks."""

    @abstractmethod
    def _picture(self, class_index: int, split: str, k: int) -> Image.Image:
        """picture after the checks."""


class _IndexedSource(PictureSource):
    """A source whose pools are index arrays into one [N, H, W, 3] uint8 picture array."""

    def __init__(self, class_names: Sequence[str]):
        super().__init__(class_names)
        self._pixels = np.zeros((0, 1, 1, 3), np.uint8)
        self._pools: dict[tuple[int, str], np.ndarray] = {}

    def pool_indices(self, class_index: int, split: str) -> np.ndarray:
        """Indices (into the source's picture order) of the class's pool in the split."""
        self._check_class(class_index)
        _check_split(split)
        return self._pools[class_index, split].copy()

    def _pool_size(self, class_index: int, split: str) -> int:
        return len(self._pools[class_index, split])

    def _picture(self, class_index: int, split: str, k: int) -> Image.Image:
        return Image.fromarray(self._pixels[self._pools[class_index, split][k]], "RGB")


class DigitsSource(_IndexedSource):
    """scikit-learn's 8x8 handwritten digits, white on black, upscaled to size x size.

    Per class, the digits in the data set's order: the first 60% form the train pool, the
    next 20% val, the rest test (cuts at round(0.6 n) and round(0.8 n)). Upscaling is
    nearest-neighbour; grey levels 0..16 map to 0..255.
    """

    name = "digits"

    def __init__(self, size: int = 32):
        if size < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        from sklearn.datasets import load_digits  # heavy import, only when used

        super().__init__(DIGIT_NAMES)
        self.size = size
        digits = load_digits()
        grey = np.round(np.asarray(digits.images) * (255 / 16)).clip(0, 255).astype(np.uint8)
        self._grey = grey  # [1797, 8, 8]
        labels = np.asarray(digits.target)
        for c in range(10):
            members = np.flatnonzero(labels == c)
            n = len(members)
            cuts = (round(0.6 * n), round(0.8 * n))
            self._pools[c, "train"] = members[: cuts[0]]
            self._pools[c, "val"] = members[cuts[0] : cuts[1]]
            self._pools[c, "test"] = members[cuts[1] :]

    def _picture(self, class_index: int, split: str, k: int) -> Image.Image:
        grey = Image.fromarray(self._grey[self._pools[class_index, split][k]], "L")
        return grey.resize((self.size, self.size), Image.Resampling.NEAREST).convert("RGB")

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size}


# Sprite colours (RGB), one per class.
_SPRITE_COLORS = (
    (230, 40, 40),
    (40, 90, 230),
    (40, 190, 60),
    (240, 220, 40),
    (250, 140, 20),
    (40, 210, 220),
    (200, 60, 210),
    (235, 235, 235),
    (250, 130, 190),
    (160, 120, 60),
)


def _regular_polygon(
    cx: float, cy: float, r: float, n: int, angle: float
) -> list[tuple[float, float]]:
    """Vertices of a regular n-gon of circumradius r, first vertex at angle (radians)."""
    return [
        (
            cx + r * math.cos(angle + 2 * math.pi * i / n),
            cy + r * math.sin(angle + 2 * math.pi * i / n),
        )
        for i in range(n)
    ]


def _rotate(
    points: Sequence[tuple[float, float]], cx: float, cy: float, angle: float
) -> list[tuple[float, float]]:
    """points rotated by angle (radians) about (cx, cy)."""
    cos, sin = math.cos(angle), math.sin(angle)
    return [
        (cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos)
        for x, y in points
    ]


def _draw_sprite(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float, fill: Any
) -> None:
    """Draw one sprite shape of radius about r centred at (cx, cy), rotated by angle."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        inner = 0.55 * r
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=(0, 0, 0))
    elif shape == "moon":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        ox, oy = cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle)
        draw.ellipse((ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r), fill=(0, 0, 0))
    elif shape == "square":
        draw.polygon(_regular_polygon(cx, cy, r, 4, angle + math.pi / 4), fill=fill)
    elif shape == "diamond":
        points = [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]
        draw.polygon(_rotate(points, cx, cy, angle), fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular_polygon(cx, cy, r, 3, angle), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_regular_polygon(cx, cy, r, 6, angle), fill=fill)
    elif shape == "star":
        points = [
            (
                cx + (r if i % 2 == 0 else 0.45 * r) * math.cos(angle + math.pi * i / 5),
                cy + (r if i % 2 == 0 else 0.45 * r) * math.sin(angle + math.pi * i / 5),
            )
            for i in range(10)
        ]
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        w = 0.3 * r
        arm = [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
            (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
            (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
        draw.polygon(_rotate(arm, cx, cy, angle), fill=fill)
    elif shape == "heart":
        points = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            hx = 16 * math.sin(t) ** 3
            hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((cx + r * hx / 17, cy - r * (hy + 2) / 17))
        draw.polygon(_rotate(points, cx, cy, angle / 4), fill=fill)
    else:
        raise ValueError(f"unknown sprite shape {shape!r}")


class SpriteSource(PictureSource):
    """Procedural sprites: one shape and base colour per class, jittered per picture.

    Picture k of (class, split) is drawn from a generator seeded by (seed, class, split, k):
    rotation, radius (30-45% of the side), centre offset (up to 10%), and colour shade
    (scaled by 0.7-1.0, then each channel moved by up to 20), on black, drawn at 4x and
    box-downsampled. Distinct seeds make the pools disjoint. pool_sizes gives each split's
    pool size (the same for every class).
    """

    name = "sprites"

    def __init__(
        self,
        size: int = 32,
        seed: int = 0,
        pool_sizes: Mapping[str, int] | None = None,
    ):
        super().__init__(SPRITE_NAMES)
        if size < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        sizes = (
            dict(pool_sizes) if pool_sizes is not None else {"train": 1000, "val": 200, "test": 200}
        )
        if set(sizes) != set(SPLITS):
            raise ValueError(f"pool_sizes must have the keys {SPLITS}, got {sorted(sizes)}")
        for split, n in sizes.items():
            if n < 1:
                raise ValueError(f"pool_sizes[{split!r}] must be >= 1, got {n}")
        self.size = size
        self.seed = seed
        self.pool_sizes = sizes

    def _pool_size(self, class_index: int, split: str) -> int:
        return self.pool_sizes[split]

    def _picture(self, class_index: int, split: str, k: int) -> Image.Image:
        rng = np.random.default_rng([self.seed, class_index, _SPLIT_CODES[split], k])
        big = 4 * self.size
        angle = float(rng.uniform(0, 2 * math.pi))
        r = float(rng.uniform(0.30, 0.45)) * big
        cx, cy = (0.5 + rng.uniform(-0.1, 0.1, size=2)) * big
        shade = rng.uniform(0.7, 1.0) * np.array(_SPRITE_COLORS[class_index])
        rgb = np.clip(shade + rng.integers(-20, 21, size=3), 0, 255).astype(int)
        image = Image.new("RGB", (big, big), (0, 0, 0))
        fill = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
        _draw_sprite(ImageDraw.Draw(image), SPRITE_NAMES[class_index], cx, cy, r, angle, fill)
        return image.resize((self.size, self.size), Image.Resampling.BOX)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "seed": self.seed,
            "pool_sizes": self.pool_sizes,
        }


def _unpickle(path: Path) -> dict[bytes, Any]:
    """A CIFAR python batch (pickled dict with bytes keys); errors name the file.

    Unpickling runs code from the file: point this only at trusted CIFAR-10 copies.
    """
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}")
    try:
        with path.open("rb") as f:
            data = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(data).__name__}")
    return data


class Cifar10Source(_IndexedSource):
    """CIFAR-10 from its python batches in root (``data_batch_1`` .. ``_5``, ``batches.meta``).

    Pools come from the training batches only (``test_batch`` is not read). A class's
    pictures are ranked in batch order (data_batch_1 first); the split's pool holds the
    ranks [start, stop) of ``pools[split]`` (default ``CIFAR10_POOLS``: train 0-999, val
    2000-2999, test 4000-4999), cut at the class's count. Pictures are 32x32 RGB.
    """

    name = "cifar10"
    BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
    META = "batches.meta"

    def __init__(self, root: PathLike, pools: Mapping[str, tuple[int, int]] | None = None):
        ranges = {s: (int(a), int(b)) for s, (a, b) in (pools or CIFAR10_POOLS).items()}
        if set(ranges) != set(SPLITS):
            raise ValueError(f"pools must have the keys {SPLITS}, got {sorted(ranges)}")
        for split, (start, stop) in ranges.items():
            if not 0 <= start < stop:
                raise ValueError(
                    f"pools[{split!r}] must be (start, stop) with 0 <= start < stop, got {(start, stop)}"
                )
        spans = sorted(ranges.values())
        for (_, a1), (b0, _) in itertools.pairwise(spans):
            if b0 < a1:
                raise ValueError(f"pools must not overlap, got {ranges}")
        self.root = Path(root)
        self.pools = ranges
        meta_file = self.root / self.META
        meta = _unpickle(meta_file)
        if b"label_names" not in meta:
            raise ValueError(f"{meta_file}: missing key b'label_names'")
        super().__init__(
            [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
        )
        data_parts, label_parts = [], []
        for name in self.BATCHES:
            path = self.root / name
            batch = _unpickle(path)
            for key in (b"data", b"labels"):
                if key not in batch:
                    raise ValueError(f"{path}: missing key {key!r}")
            data = np.asarray(batch[b"data"])
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise ValueError(
                    f"{path}: b'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}"
                )
            if len(labels) != len(data):
                raise ValueError(f"{path}: {len(labels)} labels for {len(data)} pictures")
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"{path}: labels outside 0..{self.num_classes - 1}")
            data_parts.append(data)
            label_parts.append(labels)
        data = np.concatenate(data_parts)
        labels = np.concatenate(label_parts)
        chosen: list[np.ndarray] = []
        offset = 0
        for c in range(self.num_classes):
            members = np.flatnonzero(labels == c)
            for split in SPLITS:
                start, stop = ranges[split]
                pool = members[start:stop]
                if len(pool) == 0:
                    raise ValueError(
                        f"{self.root}: class {c} ({self.class_names[c]!r}) has {len(members)} "
                        f"pictures in the training batches, none at ranks {start}..{stop - 1} "
                        f"for the {split} pool"
                    )
                chosen.append(pool)
                self._pools[c, split] = np.arange(offset, offset + len(pool))
                offset += len(pool)
        self._order = np.concatenate(chosen)  # position in the training batches, per picture
        self._pixels = data[self._order].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()

    def pool_indices(self, class_index: int, split: str) -> np.ndarray:
        """Positions in the concatenated training batches of the class's pool in the split."""
        return self._order[super().pool_indices(class_index, split)]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "pools": {s: list(r) for s, r in self.pools.items()}}


def make_source(name: str, root: PathLike | None = None, **kwargs: Any) -> PictureSource:
    """The source called name ("digits", "sprites" or "cifar10"; cifar10 needs root)."""
    if name == "digits":
        return DigitsSource(**kwargs)
    if name == "sprites":
        return SpriteSource(**kwargs)
    if name == "cifar10":
        if root is None:
            raise ValueError("source 'cifar10' needs root, the directory of the python batches")
        return Cifar10Source(root, **kwargs)
    raise ValueError(f"unknown picture source {name!r}; known: {SOURCES}")


def check_grid_fits(rows: int, cols: int, cell_px: int, gap_px: int, canvas_px: int) -> None:
    """ValueError unless rows x cols cells of cell_px with gap_px gaps fit in canvas_px."""
    if cell_px < 1 or gap_px < 0 or canvas_px < 1:
        raise ValueError(
            f"need cell_px >= 1, gap_px >= 0, canvas_px >= 1; got cell_px={cell_px}, "
            f"gap_px={gap_px}, canvas_px={canvas_px}"
        )
    need_w = cols * cell_px + (cols - 1) * gap_px
    need_h = rows * cell_px + (rows - 1) * gap_px
    if max(need_w, need_h) > canvas_px:
        raise ValueError(
            f"a grid of rows={rows} x cols={cols} cells with cell_px={cell_px} and "
            f"gap_px={gap_px} needs {need_w} x {need_h} px; it does not fit canvas_px={canvas_px}"
        )


def render_grid(
    grid: Grid,
    source: PictureSource,
    split: str,
    rng: np.random.Generator | None = None,
    cell_px: int = 81,
    gap_px: int = 6,
    canvas_px: int = 256,
    *,
    picture_ids: Sequence[int] | None = None,
) -> tuple[Image.Image, tuple[int, ...]]:
    """The grid's true cells as a canvas_px square RGB image, and the picture id per cell.

    Canvas black; cell (row, col) holds picture k of its class's split pool, LANCZOS-resized
    to cell_px, at (col * (cell_px + gap_px), row * (cell_px + gap_px)). k is drawn from rng
    (uniform over the pool, row-major) unless picture_ids gives it per cell (row-major).
    """
    check_grid_fits(grid.rows, grid.cols, cell_px, gap_px, canvas_px)
    _check_split(split)
    needed = max(grid.cells) + 1
    if source.num_classes < needed:
        raise ValueError(
            f"source {source.name!r} has {source.num_classes} classes; the grid needs class "
            f"index {needed - 1}"
        )
    if picture_ids is None:
        if rng is None:
            raise ValueError("render_grid needs rng or picture_ids")
        ids = tuple(int(rng.integers(source.pool_size(k, split))) for k in grid.cells)
    else:
        ids = tuple(int(k) for k in picture_ids)
        if len(ids) != len(grid.cells):
            raise ValueError(f"picture_ids: expected {len(grid.cells)} ids, got {len(ids)}")
    canvas = Image.new("RGB", (canvas_px, canvas_px), (0, 0, 0))
    step = cell_px + gap_px
    for p, (k, pid) in enumerate(zip(grid.cells, ids)):
        picture = source.picture(k, split, pid).convert("RGB")
        picture = picture.resize((cell_px, cell_px), Image.Resampling.LANCZOS)
        row, col = divmod(p, grid.cols)
        canvas.paste(picture, (col * step, row * step))
    return canvas, ids
