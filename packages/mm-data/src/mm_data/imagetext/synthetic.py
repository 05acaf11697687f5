"""Synthetic image-caption corpus of coloured shapes, written in the real on-disk formats.

A scene holds 1-3 objects on a plain or textured grey background; each object has a shape
(``SHAPES``), a colour (``COLORS``), a size (small / large) and a position (left, right, top,
bottom, center; one object per position). Captions are compositional ("a large red circle
to the left of a small blue square", "two objects: a green star at the top and ..."), drawn
from several templates with synonyms, so text and image have to be matched by content. Hard
negatives: a share of the scenes is the previous scene with two colours or two positions
swapped (or, with one object, its colour or position changed), same shapes and background.

    corpus = write_synthetic_corpus("data/shapes", n_train=20_000, n_eval=1_000)
    train = ImageCaptionDataset(corpus.train_file, corpus.image_root)
    test = RetrievalEvalDataset(corpus.eval_file, corpus.image_root)
    zs = ZeroShotFolder(corpus.zeroshot_root)  # label = shape of the (largest) object

Layout under root: ``images/train/<i>.png``, ``images/eval/<i>.png``, ``train.json`` and
``eval.json`` (5 captions per image; "image" paths relative to ``images/``, the image root),
``zeroshot/<shape>/<j>.png``, ``zeroshot/classnames.txt`` and ``scenes.json`` (the drawn
attributes of every image, its path relative to root).
Every scene comes from its own generator seeded by (seed, split, number), so the corpus is
a deterministic function of its arguments.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mm_data.imagetext.formats import CLASSNAMES_FILE

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneObject",
    "SyntheticCorpus",
    "caption_scene",
    "hard_negative",
    "render_scene",
    "sample_scene",
    "scene_captions",
    "write_synthetic_corpus",
]

PathLike = str | os.PathLike[str]

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 50),
    "cyan": (30, 200, 210),
    "blue": (35, 70, 225),
    "purple": (140, 50, 200),
    "pink": (245, 120, 190),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
BACKGROUNDS = ("plain", "gradient", "striped", "checkered", "noisy")

# Object centre (fractions of the image side) and circumradius range per size.
_ANCHORS = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "center": (0.5, 0.5),
}
_JITTER = 0.03
_RADIUS = {"small": (0.085, 0.105), "large": (0.16, 0.19)}
_GAP = 0.015  # minimum free space between the circumcircles of two objects
_COLOR_JITTER = 15

_SPLIT_CODES = {"train": 0, "eval": 1, "zeroshot": 2}

# Caption vocabulary: synonyms for sizes and positions; shapes and colours keep their names.
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_POSITION_PHRASES = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle"),
}
_ROW = ("left", "center", "right")  # same horizontal line
_COLUMN = ("top", "center", "bottom")  # same vertical line
_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its attributes and geometry (fractions of the image side)."""

    shape: str
    color: str
    size: str
    position: str
    x: float
    y: float
    radius: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """Objects on a background; rendering is a deterministic function of these fields."""

    objects: tuple[SceneObject, ...]
    background: str
    levels: tuple[int, int]  # the two grey levels of the background
    period: float = 0.125  # stripe / checker period (fraction of the side)
    orientation: int = 0  # 0 horizontal, 1 vertical, 2 diagonal (gradient, stripes)
    noise_seed: int = 0
    twin_of: int | None = field(default=None, compare=False)  # hard negative of scene #

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (objects as a list of dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """The inverse of to_dict."""
        objects = tuple(SceneObject(**{**o, "rgb": tuple(o["rgb"])}) for o in data["objects"])
        return cls(
            objects=objects,
            background=data["background"],
            levels=tuple(data["levels"]),
            period=data["period"],
            orientation=data["orientation"],
            noise_seed=data["noise_seed"],
            twin_of=data.get("twin_of"),
        )


@dataclass(frozen=True)
class SyntheticCorpus:
    """Paths written by write_synthetic_corpus and the scene of every image."""

    root: Path
    image_root: Path  # root / "images": the "image" paths of both JSON files start here
    train_file: Path
    eval_file: Path
    zeroshot_root: Path
    scenes_file: Path
    train_scenes: list[Scene]
    eval_scenes: list[Scene]
    zeroshot_scenes: list[Scene]
    class_names: list[str]


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One element of options, uniformly."""
    return options[int(rng.integers(len(options)))]


def _jittered_rgb(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    """The named colour with each channel moved by up to +-_COLOR_JITTER."""
    jitter = rng.integers(-_COLOR_JITTER, _COLOR_JITTER + 1, size=3)
    r, g, b = (int(v) for v in np.clip(np.array(COLORS[color]) + jitter, 0, 255))
    return r, g, b


def _make_object(
    rng: np.random.Generator, shape: str, color: str, size: str, position: str
) -> SceneObject:
    """An object at its position's anchor with jittered centre, radius and colour."""
    ax, ay = _ANCHORS[position]
    lo, hi = _RADIUS[size]
    rgb = _jittered_rgb(rng, color)
    return SceneObject(
        shape=shape,
        color=color,
        size=size,
        position=position,
        x=float(ax + rng.uniform(-_JITTER, _JITTER)),
        y=float(ay + rng.uniform(-_JITTER, _JITTER)),
        radius=float(rng.uniform(lo, hi)),
        rgb=rgb,
    )


def _overlap(objects: Sequence[SceneObject]) -> bool:
    """Whether two objects come closer than their radii plus a gap."""
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            if math.hypot(a.x - b.x, a.y - b.y) < a.radius + b.radius + _GAP:
                return True
    return False


def _sample_background(rng: np.random.Generator) -> dict[str, Any]:
    """Background kind, grey levels and texture parameters."""
    kind = _pick(rng, BACKGROUNDS)
    base = int(rng.integers(70, 171))
    other = int(np.clip(base + rng.choice([-1, 1]) * rng.integers(20, 41), 40, 210))
    return {
        "background": kind,
        "levels": (base, other),
        "period": float(rng.uniform(0.08, 0.2)),
        "orientation": int(rng.integers(3)),
        "noise_seed": int(rng.integers(2**31)),
    }


def sample_scene(
    rng: np.random.Generator,
    n_objects: int | None = None,
    *,
    main_shape: str | None = None,
) -> Scene:
    """A random scene of n_objects (1-3, uniform if None) without overlapping objects.

    With ``main_shape`` (zero-shot scenes) the first object is a large ``main_shape`` and the
    others are small objects of other shapes, so the shape of the largest object is the label.
    """
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    if not 1 <= n <= 3:
        raise ValueError(f"n_objects must be 1, 2 or 3, got {n}")
    if main_shape is not None and main_shape not in SHAPES:
        raise ValueError(f"main_shape must be one of {SHAPES}, got {main_shape!r}")
    for _ in range(1000):
        positions = [POSITIONS[i] for i in rng.permutation(len(POSITIONS))[:n]]
        objects = []
        for j, position in enumerate(positions):
            if main_shape is None:
                shape, size = _pick(rng, SHAPES), _pick(rng, SIZES)
            elif j == 0:
                shape, size = main_shape, "large"
            else:
                shape, size = _pick(rng, [s for s in SHAPES if s != main_shape]), "small"
            objects.append(_make_object(rng, shape, _pick(rng, tuple(COLORS)), size, position))
        if not _overlap(objects):
            return Scene(objects=tuple(objects), **_sample_background(rng))
    raise RuntimeError("could not place the objects without overlap")  # pragma: no cover


def hard_negative(scene: Scene, rng: np.random.Generator) -> Scene | None:
    """The scene with two colours or two positions swapped (one object: recoloured or moved).

    Shapes and background stay; None when no swap changes the scene (e.g. two objects of one
    colour whose swapped positions would overlap).
    """
    objects = list(scene.objects)
    edits: list[Callable[[], list[SceneObject] | None]] = []

    def swap_colors(i: int, j: int) -> list[SceneObject] | None:
        a, b = objects[i], objects[j]
        if a.color == b.color:
            return None
        out = list(objects)
        out[i], out[j] = replace(a, color=b.color, rgb=b.rgb), replace(b, color=a.color, rgb=a.rgb)
        return out

    def swap_positions(i: int, j: int) -> list[SceneObject] | None:
        a, b = objects[i], objects[j]
        if (a.shape, a.color, a.size) == (b.shape, b.color, b.size):
            return None
        out = list(objects)
        out[i] = replace(a, position=b.position, x=b.x, y=b.y)
        out[j] = replace(b, position=a.position, x=a.x, y=a.y)
        return None if _overlap(out) else out

    def recolor() -> list[SceneObject]:
        a = objects[0]
        color = _pick(rng, [c for c in COLORS if c != a.color])
        return [replace(a, color=color, rgb=_jittered_rgb(rng, color))]

    def move() -> list[SceneObject]:
        a = objects[0]
        position = _pick(rng, [p for p in POSITIONS if p != a.position])
        (ax, ay), (bx, by) = _ANCHORS[position], _ANCHORS[a.position]
        return [replace(a, position=position, x=ax + a.x - bx, y=ay + a.y - by)]

    if len(objects) == 1:
        edits = [recolor, move]
    else:
        pairs = [(i, j) for i in range(len(objects)) for j in range(i + 1, len(objects))]
        for i, j in pairs:
            edits.append(lambda i=i, j=j: swap_colors(i, j))
            edits.append(lambda i=i, j=j: swap_positions(i, j))
    for k in rng.permutation(len(edits)):
        edited = edits[int(k)]()
        if edited is not None:
            return replace(scene, objects=tuple(edited))
    return None


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape of circumradius about r centred at (cx, cy)."""
    if shape == "square":
        h = 0.75 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.72 * r, cy), (cx, cy + r), (cx - 0.72 * r, cy)]
    if shape == "triangle":
        cy += 0.12 * r  # centre the bounding box rather than the centroid
        return [
            (cx + r * math.cos(a), cy + r * math.sin(a))
            for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    if shape == "star":
        points = []
        for k in range(10):
            rk = r if k % 2 == 0 else 0.42 * r
            a = -math.pi / 2 + k * math.pi / 5
            points.append((cx + rk * math.cos(a), cy + 0.05 * r + rk * math.sin(a)))
        return points
    if shape == "cross":
        w = 0.32 * r
        return [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
            (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
            (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    if shape == "heart":
        scale = r / 16.5
        points = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            hx = 16 * math.sin(t) ** 3
            hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((cx + scale * hx, cy - scale * (hy + 2.5)))
        return points
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float) -> None:
    """Draw the shape's silhouette with value 255 on an L mask."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        inner = 0.55 * r
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, r), fill=255)


def _background(scene: Scene, side: int) -> np.ndarray:
    """The [side, side, 3] uint8 background of the scene."""
    lo, hi = scene.levels
    coords = np.arange(side, dtype=np.float64) / side
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    along = (yy, xx, (xx + yy) / 2)[scene.orientation]
    if scene.background == "plain":
        grey = np.full((side, side), float(lo))
    elif scene.background == "gradient":
        grey = lo + (hi - lo) * along
    elif scene.background == "striped":
        grey = np.where(np.floor(along / (scene.period / 2)) % 2 == 0, lo, hi).astype(np.float64)
    elif scene.background == "checkered":
        cells = np.floor(xx / scene.period) + np.floor(yy / scene.period)
        grey = np.where(cells % 2 == 0, lo, hi).astype(np.float64)
    elif scene.background == "noisy":
        noise = np.random.default_rng(scene.noise_seed).normal(0.0, 14.0, size=(side, side))
        grey = lo + noise
    else:
        raise ValueError(f"unknown background {scene.background!r}")
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def render_scene(scene: Scene, image_size: int = 64, *, supersample: int = 2) -> Image.Image:
    """Draw the scene as an RGB image (anti-aliased by drawing at supersample x the size)."""
    side = image_size * supersample
    image = Image.fromarray(_background(scene, side), "RGB")
    for obj in scene.objects:
        mask = Image.new("L", (side, side), 0)
        _draw_shape(ImageDraw.Draw(mask), obj.shape, obj.x * side, obj.y * side, obj.radius * side)
        image.paste(obj.rgb, (0, 0, side, side), mask)
    if supersample > 1:
        image = image.resize((image_size, image_size), Image.Resampling.BOX)
    return image


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------


def _article(word: str) -> str:
    """'an' before a vowel sound, else 'a'."""
    return "an" if word[0] in "aeiou" else "a"


def _describe(obj: SceneObject, rng: np.random.Generator) -> str:
    """'a large red circle' (size synonyms drawn from rng)."""
    size = _pick(rng, _SIZE_WORDS[obj.size])
    return f"{_article(size)} {size} {obj.color} {obj.shape}"


def _where(obj: SceneObject, rng: np.random.Generator) -> str:
    """'on the left' (position synonyms drawn from rng)."""
    return _pick(rng, _POSITION_PHRASES[obj.position])


def _relation(a: SceneObject, b: SceneObject) -> str | None:
    """'to the left of' / 'to the right of' / 'above' / 'below' when a and b share a line."""
    for line, before, after in (
        (_ROW, "to the left of", "to the right of"),
        (_COLUMN, "above", "below"),
    ):
        if a.position in line and b.position in line:
            return before if line.index(a.position) < line.index(b.position) else after
    return None


# A template turns (objects in caption order, scene, rng) into a caption, or None when it
# does not apply (a relation between objects that share no line).
_Template = Callable[[Sequence[SceneObject], Scene, np.random.Generator], "str | None"]


def _t1_plain(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """a large red circle on the left"""
    return f"{_describe(o[0], g)} {_where(o[0], g)}"


def _t1_there_is(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """on the left, there is a large red circle"""
    return f"{_where(o[0], g)}, there is {_describe(o[0], g)}"


def _t1_background(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """a large red circle on the left on a striped background"""
    return f"{_describe(o[0], g)} {_where(o[0], g)} on a {s.background} background"


def _t1_count(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """one object: a large red circle on the left"""
    return f"one object: {_describe(o[0], g)} {_where(o[0], g)}"


def _t1_single(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """a single red circle, large, on the left"""
    size = _pick(g, _SIZE_WORDS[o[0].size])
    return f"a single {o[0].color} {o[0].shape}, {size}, {_where(o[0], g)}"


def _t1_picture(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """the picture shows a large red circle on the left on a plain background"""
    return (
        f"the picture shows {_describe(o[0], g)} {_where(o[0], g)} on a {s.background} background"
    )


def _t2_relation(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """a large red circle to the left of a small blue square"""
    rel = _relation(o[0], o[1])
    return None if rel is None else f"{_describe(o[0], g)} {rel} {_describe(o[1], g)}"


def _t2_relation_background(
    o: Sequence[SceneObject], s: Scene, g: np.random.Generator
) -> str | None:
    """a large red circle is above a small blue square on a noisy background"""
    rel = _relation(o[0], o[1])
    if rel is None:
        return None
    return f"{_describe(o[0], g)} is {rel} {_describe(o[1], g)} on a {s.background} background"


def _t2_count(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """two objects: a large red circle on the left and a small blue square at the top"""
    return f"two objects: {_describe(o[0], g)} {_where(o[0], g)} and {_describe(o[1], g)} {_where(o[1], g)}"


def _t2_and(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """a large red circle on the left and a small blue square at the top"""
    return f"{_describe(o[0], g)} {_where(o[0], g)} and {_describe(o[1], g)} {_where(o[1], g)}"


def _t2_there_is(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """on the left there is a ..., and at the top there is a ..."""
    first = f"{_where(o[0], g)} there is {_describe(o[0], g)}"
    return f"{first}, and {_where(o[1], g)} there is {_describe(o[1], g)}"


def _t2_background(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """two shapes on a plain background: a ... on the left, a ... at the top"""
    objs = f"{_describe(o[0], g)} {_where(o[0], g)}, {_describe(o[1], g)} {_where(o[1], g)}"
    return f"two shapes on a {s.background} background: {objs}"


def _t2_image_of(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """an image of a ... on the left next to a ... at the top"""
    return f"an image of {_describe(o[0], g)} {_where(o[0], g)} next to {_describe(o[1], g)} {_where(o[1], g)}"


def _t3_count(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """three objects: a ... on the left, a ... at the top and a ... in the middle"""
    d = [f"{_describe(x, g)} {_where(x, g)}" for x in o]
    return f"three objects: {d[0]}, {d[1]} and {d[2]}"


def _t3_list(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """a ... on the left, a ... at the top, a ... in the middle"""
    return ", ".join(f"{_describe(x, g)} {_where(x, g)}" for x in o)


def _t3_where_first(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """on the left a ..., at the top a ... and in the middle a ..."""
    d = [f"{_where(x, g)} {_describe(x, g)}" for x in o]
    return f"{d[0]}, {d[1]} and {d[2]}"


def _t3_respectively(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """a ..., a ... and a ..., on the left, at the top and in the middle respectively"""
    d = [_describe(x, g) for x in o]
    w = [_where(x, g) for x in o]
    return f"{d[0]}, {d[1]} and {d[2]}, {w[0]}, {w[1]} and {w[2]} respectively"


def _t3_image_of(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """an image of a ... on the left, a ... at the top and a ... in the middle"""
    d = [f"{_describe(x, g)} {_where(x, g)}" for x in o]
    return f"an image of {d[0]}, {d[1]} and {d[2]}"


def _t3_relation(o: Sequence[SceneObject], s: Scene, g: np.random.Generator) -> str | None:
    """a ... to the left of a ..., and a ... at the top"""
    rel = _relation(o[0], o[1])
    if rel is None:
        return None
    return f"{_describe(o[0], g)} {rel} {_describe(o[1], g)}, and {_describe(o[2], g)} {_where(o[2], g)}"


_TEMPLATES: dict[int, tuple[_Template, ...]] = {
    1: (_t1_plain, _t1_there_is, _t1_background, _t1_count, _t1_single, _t1_picture),
    2: (
        _t2_relation,
        _t2_relation_background,
        _t2_count,
        _t2_and,
        _t2_there_is,
        _t2_background,
        _t2_image_of,
    ),
    3: (_t3_count, _t3_list, _t3_where_first, _t3_respectively, _t3_image_of, _t3_relation),
}


def scene_captions(scene: Scene, rng: np.random.Generator, n: int = 1) -> list[str]:
    """n distinct captions of the scene, each from a different template (object order drawn)."""
    templates = _TEMPLATES[len(scene.objects)]
    captions: list[str] = []
    for t in rng.permutation(len(templates)):
        order = [scene.objects[int(i)] for i in rng.permutation(len(scene.objects))]
        caption = templates[int(t)](order, scene, rng)
        if caption is not None and caption not in captions:
            captions.append(caption)
            if len(captions) == n:
                return captions
    # More captions than applicable templates: repeat templates with new draws.
    for _ in range(100 * n):
        order = [scene.objects[int(i)] for i in rng.permutation(len(scene.objects))]
        caption = templates[int(rng.integers(len(templates)))](order, scene, rng)
        if caption is not None and caption not in captions:
            captions.append(caption)
            if len(captions) == n:
                return captions
    raise ValueError(f"could not phrase {n} distinct captions of a scene")


def caption_scene(scene: Scene, rng: np.random.Generator) -> str:
    """One caption of the scene."""
    return scene_captions(scene, rng, 1)[0]


# ---------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------


def _rng(seed: int, split: str, *numbers: int) -> np.random.Generator:
    """The generator of one scene: independent of every other scene's."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], *numbers])


def _split_scenes(
    n: int, seed: int, split: str, hard_negative_fraction: float
) -> list[tuple[Scene, np.random.Generator]]:
    """n scenes of a split (each with its generator, for its captions); twins follow originals."""
    scenes: list[tuple[Scene, np.random.Generator]] = []
    for i in range(n):
        rng = _rng(seed, split, i)
        scene = None
        previous = scenes[-1][0] if scenes else None
        if (
            previous is not None
            and previous.twin_of is None
            and rng.random() < hard_negative_fraction
        ):
            scene = hard_negative(previous, rng)
            if scene is not None:
                scene = replace(scene, twin_of=i - 1)
        if scene is None:
            scene = sample_scene(rng)
        scenes.append((scene, rng))
    return scenes


def _width(n: int) -> int:
    """Zero-padded width of file numbers 0..n-1 (at least 6)."""
    return max(6, len(str(max(n - 1, 0))))


def _save(image: Image.Image, path: Path, image_format: str) -> None:
    """Save as PNG (lossless) or JPEG (quality 95, no chroma subsampling)."""
    if image_format == "png":
        image.save(path, format="PNG", compress_level=1)
    else:
        image.save(path, format="JPEG", quality=95, subsampling=0)


def write_synthetic_corpus(
    root: PathLike,
    *,
    n_train: int = 20_000,
    n_eval: int = 1_000,
    n_zeroshot_per_class: int = 50,
    image_size: int = 64,
    seed: int = 0,
    captions_per_train_image: int = 1,
    captions_per_eval_image: int = 5,
    hard_negative_fraction: float = 0.25,
    image_format: str = "png",
    overwrite: bool = False,
) -> SyntheticCorpus:
    """Write images/, train.json, eval.json, zeroshot/ and scenes.json under root."""
    for name, value in (("n_train", n_train), ("n_eval", n_eval)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if n_zeroshot_per_class < 0:
        raise ValueError(f"n_zeroshot_per_class must be >= 0, got {n_zeroshot_per_class}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if captions_per_train_image < 1 or captions_per_eval_image < 1:
        raise ValueError("captions_per_train_image and captions_per_eval_image must be >= 1")
    if not 0.0 <= hard_negative_fraction <= 1.0:
        raise ValueError(f"hard_negative_fraction must be in [0, 1], got {hard_negative_fraction}")
    image_format = image_format.lower().lstrip(".")
    if image_format == "jpeg":
        image_format = "jpg"
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")

    root = Path(root)
    owned = [
        root / "images",
        root / "zeroshot",
        root / "train.json",
        root / "eval.json",
        root / "scenes.json",
    ]
    existing = [p for p in owned if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{root} already holds a corpus ({existing[0]}); pass overwrite=True")
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    metadata: dict[str, Any] = {"image_size": image_size, "seed": seed, "shapes": list(SHAPES)}
    split_scenes: dict[str, list[Scene]] = {}
    annotations: dict[str, list[dict[str, Any]]] = {}
    for split, n in (("train", n_train), ("eval", n_eval)):
        folder = root / "images" / split
        folder.mkdir(parents=True)
        width = _width(n)
        entries: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        scenes = _split_scenes(n, seed, split, hard_negative_fraction)
        for i, (scene, rng) in enumerate(scenes):
            rel = f"{split}/{i:0{width}d}.{image_format}"
            _save(
                render_scene(scene, image_size),
                folder / f"{i:0{width}d}.{image_format}",
                image_format,
            )
            if split == "train":
                for caption in scene_captions(scene, rng, captions_per_train_image):
                    entries.append({"image": rel, "caption": caption, "image_id": i})
            else:
                entries.append(
                    {"image": rel, "caption": scene_captions(scene, rng, captions_per_eval_image)}
                )
            records.append({"image": f"images/{rel}", "image_id": i, **scene.to_dict()})
        annotations[split] = entries
        split_scenes[split] = [s for s, _ in scenes]
        metadata[split] = records

    class_names = sorted(SHAPES)
    zeroshot_root = root / "zeroshot"
    zeroshot_root.mkdir(parents=True)
    width = _width(n_zeroshot_per_class)
    records = []
    zeroshot_scenes: list[Scene] = []
    for label, shape in enumerate(class_names):
        (zeroshot_root / shape).mkdir()
        for j in range(n_zeroshot_per_class):
            rng = _rng(seed, "zeroshot", label, j)
            n_objects = 1 if rng.random() < 0.5 else int(rng.integers(2, 4))
            scene = sample_scene(rng, n_objects, main_shape=shape)
            rel = f"zeroshot/{shape}/{j:0{width}d}.{image_format}"
            _save(render_scene(scene, image_size), root / rel, image_format)
            records.append({"image": rel, "label": label, "class_name": shape, **scene.to_dict()})
            zeroshot_scenes.append(scene)
    metadata["zeroshot"] = records
    (zeroshot_root / CLASSNAMES_FILE).write_text("\n".join(class_names) + "\n", encoding="utf-8")

    train_file, eval_file, scenes_file = (
        root / "train.json",
        root / "eval.json",
        root / "scenes.json",
    )
    train_file.write_text(json.dumps(annotations["train"]), encoding="utf-8")
    eval_file.write_text(json.dumps(annotations["eval"]), encoding="utf-8")
    scenes_file.write_text(json.dumps(metadata), encoding="utf-8")
    return SyntheticCorpus(
        root=root,
        image_root=root / "images",
        train_file=train_file,
        eval_file=eval_file,
        zeroshot_root=zeroshot_root,
        scenes_file=scenes_file,
        train_scenes=split_scenes["train"],
        eval_scenes=split_scenes["eval"],
        zeroshot_scenes=zeroshot_scenes,
        class_names=class_names,
    )
