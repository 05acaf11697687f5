"""The procedural 2D stand-in for Multimodal3DIdent: latents, pictures, captions, and the
writer of the on-disk layout that `mm_data.identifiability.imgtxt.Multimodal3DIdent` reads.

In 2D, alpharot rotates the shape, betarot squashes it, gammarot shears it, and the
spotlight is a lighting gradient from the direction spotlight_pos; the caption names the
nearest colour of a randomly chosen palette (dependent, not one-to-one).

    write_multimodal3dident("data/m3di", 10_000, 1_000, 1_000, image_size=64, seed=0)
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mm_data.identifiability.imgtxt import (
    _INTEGER_COLUMNS,
    COLOR_NAMES,
    COLOR_PALETTES,
    IMAGE_LATENTS,
    SHAPES,
    SPLITS,
    TEMPLATES,
    TEXT_LATENTS,
    XPOS_WORDS,
    YPOS_WORDS,
    image_name_width,
)

__all__ = [
    "make_caption",
    "nearest_color",
    "object_mask",
    "render_image",
    "sample_latents",
    "write_multimodal3dident",
    "write_split",
]


def nearest_color(hue: float, palette: str | int) -> str:
    """Name of the palette colour whose hue is circularly nearest to hue (in [0, 1))."""
    if isinstance(palette, int):
        palette = list(COLOR_PALETTES)[palette]
    anchors = COLOR_PALETTES[palette]
    names = list(anchors)
    diff = np.abs(np.array([anchors[n] for n in names]) - (hue % 1.0))
    return names[int(np.argmin(np.minimum(diff, 1.0 - diff)))]


def make_caption(shape: int, xpos: int, ypos: int, color_name: str, phrasing: int) -> str:
    """Caption from the text latents: template `phrasing` filled with the factor words."""
    return TEMPLATES[phrasing].format(
        SHAPE=SHAPES[shape], XPOS=XPOS_WORDS[xpos], YPOS=YPOS_WORDS[ypos], COLOR=color_name
    )


def sample_latents(
    n: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Independent image and text latents of n pairs (columns IMAGE_LATENTS, TEXT_LATENTS)."""
    shape = rng.integers(0, len(SHAPES), n)
    xpos = rng.integers(0, 3, n)
    ypos = rng.integers(0, 3, n)
    rot = rng.random((3, n))
    hues = rng.random((4, n))  # object colour, spotlight position, spotlight colour, background
    palette = rng.integers(0, len(COLOR_PALETTES), n)
    phrasing = rng.integers(0, len(TEMPLATES), n)
    zpos = np.zeros(n, dtype=np.int64)
    z_image = {
        "object_shape": shape,
        "object_xpos": xpos,
        "object_ypos": ypos,
        "object_zpos": zpos,
        "object_alpharot": rot[0],
        "object_betarot": rot[1],
        "object_gammarot": rot[2],
        "object_color": hues[0],
        "spotlight_pos": hues[1],
        "spotlight_color": hues[2],
        "background_color": hues[3],
    }
    names = np.array([nearest_color(h, int(p)) for h, p in zip(hues[0], palette)], dtype=object)
    z_text = {
        "object_shape": shape,
        "object_xpos": xpos,
        "object_ypos": ypos,
        "object_zpos": zpos,
        "object_color_name": names,
        "object_color_index": np.array([COLOR_NAMES.index(c) for c in names], dtype=np.int64),
        "text_phrasing": phrasing,
    }
    return z_image, z_text


def _regular_polygon(k: int, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(k) / k
    return np.stack([np.sin(angles), -np.cos(angles)], axis=1)


def _cross(w: float = 0.3) -> np.ndarray:
    quarter = np.array([[-w, -1.0], [w, -1.0], [w, -w]])  # one arm; rotate it four times
    turn = np.array([[0.0, 1.0], [-1.0, 0.0]])
    return np.concatenate([quarter @ np.linalg.matrix_power(turn, k) for k in range(4)])


def _tee() -> np.ndarray:
    return np.array(
        [
            [-1.0, -0.9],
            [1.0, -0.9],
            [1.0, -0.3],
            [0.3, -0.3],
            [0.3, 1.0],
            [-0.3, 1.0],
            [-0.3, -0.3],
            [-1.0, -0.3],
        ]
    )


# Unit shapes (radius about 1, y pointing down), in the order of SHAPES: each is a list of
# (outline, fill) polygons drawn in order, fill 1 adding to the object and 0 cutting it away.
# The seven silhouettes stay distinct at ~10 px (a hole, a bite, arms, corners, curvature).
_OUTLINES: tuple[tuple[tuple[np.ndarray, int], ...], ...] = (
    ((_regular_polygon(48), 1),),
    ((_regular_polygon(4, math.pi / 4) * 1.1, 1),),
    ((_regular_polygon(3) * 1.15, 1),),
    ((_regular_polygon(48) * 1.05, 1), (_regular_polygon(48) * 0.55, 0)),
    ((_cross() * 1.05, 1),),
    ((_tee() * 0.85, 1),),
    ((_regular_polygon(48) * 1.05, 1), (_regular_polygon(48) * 0.85 + [0.5, -0.15], 0)),
)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


@functools.lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = np.meshgrid(centres, centres)
    return xx, yy


def _cell_centre(z: Mapping[str, float]) -> tuple[float, float]:
    """Centre (x, y), as fractions of the image side, of the object's cell of the 3x3 grid."""
    return (int(z["object_xpos"]) + 0.5) / 3, (int(z["object_ypos"]) + 0.5) / 3


def object_mask(
    z: Mapping[str, float], image_size: int = 64, object_radius: float = 0.15
) -> np.ndarray:
    """Anti-aliased coverage [S, S] in [0, 1] of the object of one row of image latents.

    The shape's polygons are squashed (betarot), sheared (gammarot), rotated (alpharot),
    scaled to `object_radius` (a fraction of the image side; grid cells are 1/3) and placed
    at the centre of the (xpos, ypos) cell of the 3x3 grid.
    """
    size = int(image_size)
    radius = float(object_radius)
    cx, cy = _cell_centre(z)
    squash = [1.0, 0.75 + 0.25 * float(z["object_betarot"])]
    shear = 0.3 * (float(z["object_gammarot"]) - 0.5)
    angle = 2 * math.pi * float(z["object_alpharot"])
    c, s = math.cos(angle), math.sin(angle)
    rotate = np.array([[c, s], [-s, c]])
    # Draw supersampled, then box-downsample.
    ss = max(1, min(4, 256 // size))
    mask_img = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(mask_img)
    for outline, fill in _OUTLINES[int(z["object_shape"])]:
        pts = outline * squash
        pts = pts + pts[:, 1:] * [shear, 0.0]
        pts = (pts @ rotate * radius + [cx, cy]) * size * ss
        draw.polygon([tuple(p) for p in pts], fill=255 * fill)
    if ss > 1:
        mask_img = mask_img.reduce(ss)
    return np.asarray(mask_img, dtype=np.float32) / 255.0


def render_image(
    z: Mapping[str, float], image_size: int = 64, object_radius: float = 0.15
) -> np.ndarray:
    """Uint8 RGB image [S, S, 3] of one row of image latents (IMAGE_LATENTS keys)."""
    size = int(image_size)
    radius = float(object_radius)
    cx, cy = _cell_centre(z)
    mask = object_mask(z, size, radius)[..., None]
    # Spotlight: light from direction spotlight_pos (an angle); a gentle gradient over the
    # background, stronger shading across the object, tinted by the spotlight's hue.
    theta = 2 * math.pi * float(z["spotlight_pos"])
    dx, dy = math.cos(theta), math.sin(theta)
    xx, yy = _pixel_grid(size)
    bg_light = 0.8 + 0.2 * ((xx - 0.5) * dx + (yy - 0.5) * dy) / math.sqrt(0.5)
    obj_light = 0.65 + 0.35 * np.clip(((xx - cx) * dx + (yy - cy) * dy) / radius, -1.0, 1.0)
    tint = (0.6 + 0.4 * _hsv_to_rgb(float(z["spotlight_color"]), 0.6, 1.0)).astype(np.float32)
    obj_rgb = _hsv_to_rgb(float(z["object_color"]), 0.9, 1.0).astype(np.float32)
    bg_rgb = _hsv_to_rgb(float(z["background_color"]), 0.5, 0.75).astype(np.float32)
    image = mask * obj_light[..., None] * obj_rgb + (1.0 - mask) * bg_light[..., None] * bg_rgb
    return np.clip(image * tint * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _write_csv(path: Path, columns: tuple[str, ...], latents: Mapping[str, np.ndarray]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        cells = []
        for name in columns:
            values = latents[name]
            if name in _INTEGER_COLUMNS:
                cells.append([str(int(v)) for v in values])
            elif values.dtype == object:
                cells.append([str(v) for v in values])
            else:
                cells.append([repr(float(v)) for v in values])
        writer.writerows(zip(*cells))


def write_split(split_dir: str | Path, n: int, image_size: int, rng: np.random.Generator) -> Path:
    """Write one split (images, captions, both latent csvs) of n pairs into split_dir."""
    if n < 1:
        raise ValueError(f"a split needs at least one sample, got n={n}")
    split_dir = Path(split_dir)
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "text").mkdir(parents=True, exist_ok=True)
    z_image, z_text = sample_latents(n, rng)
    _write_csv(split_dir / "latents_image.csv", IMAGE_LATENTS, z_image)
    _write_csv(split_dir / "latents_text.csv", TEXT_LATENTS, z_text)
    captions = [
        make_caption(
            int(z_text["object_shape"][i]),
            int(z_text["object_xpos"][i]),
            int(z_text["object_ypos"][i]),
            str(z_text["object_color_name"][i]),
            int(z_text["text_phrasing"][i]),
        )
        for i in range(n)
    ]
    (split_dir / "text" / "text_raw.txt").write_text("\n".join(captions) + "\n")
    width = image_name_width(n)
    for i in range(n):
        row = {k: v[i] for k, v in z_image.items()}
        image = Image.fromarray(render_image(row, image_size))
        image.save(split_dir / "images" / f"{i:0{width}d}.png", compress_level=1)
    return split_dir


def write_multimodal3dident(
    root: str | Path,
    n_train: int,
    n_val: int,
    n_test: int,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Generate train/val/test splits under root; each split has its own seeded stream."""
    root = Path(root)
    for number, (split, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test))):
        rng = np.random.default_rng(np.random.SeedSequence([seed, number]))
        write_split(root / split, n, image_size, rng)
    return root
