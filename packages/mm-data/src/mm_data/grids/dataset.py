"""Grid data sets on disk: JSONL records per split, PNG grid pictures, and a meta.json.

Layout under root::

    meta.json                  the arguments (config, source, class names, sizes, seed, ...)
    train.jsonl, val.jsonl, test.jsonl    one JSON record per sample, per line
    images/<split>/<g>.png     the picture of grid g of the split (image data sets only)

``n_train`` (etc.) counts multi-instruction samples of ``num_questions`` Q/A pairs. With
``distinct_image_ratio`` 1/3, grid g serves samples 3g, 3g+1, 3g+2 (the last grid fewer
when n is not a multiple of 3). With ``format="single"``, each sample is written as
``num_questions`` records of one Q/A pair, so the Q/A count stays the same. All records of
one grid share its picture.

Grid g of a split is drawn from ``numpy.random.default_rng([seed, split, g, 1])`` (split
0/1/2 for train/val/test) and its pictures from ``[seed, split, g, 2]``. So a split does
not depend on the other splits' sizes, and an image data set and a text one (``images=
False``) with equal arguments hold the same grids and questions.
"""

from __future__ import annotations

import json
import math
import operator
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mm_data.grids.generator import (
    Grid,
    GridConfig,
    check_class_names,
    grid_rows_text,
    sample_grid_group,
    sample_texts,
    single_question_grids,
)
from mm_data.grids.pictures import SPLITS, PictureSource, check_grid_fits, render_grid

__all__ = [
    "META_FILE",
    "GridCorpus",
    "GridDataset",
    "read_grid_split",
    "write_grid_dataset",
]

PathLike = str | os.PathLike[str]
Transform = Callable[[Image.Image], Any]

META_FILE = "meta.json"
FORMAT_VERSION = 1
_SPLIT_CODES = {split: i for i, split in enumerate(SPLITS)}


@dataclass(frozen=True)
class GridCorpus:
    """Paths and sizes of a grid data set written by write_grid_dataset."""

    root: Path
    meta_file: Path
    split_files: dict[str, Path]  # split -> root / "<split>.jsonl"
    image_root: Path | None  # root / "images" for image data sets, else None
    num_samples: dict[str, int]  # multi-instruction samples per split (the n_* arguments)
    num_records: dict[str, int]  # JSONL lines per split
    num_grids: dict[str, int]  # distinct grids (pictures) per split
    config: GridConfig
    class_names: list[str]
    meta: dict[str, Any]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys ("config.rows")."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _counts(cfg: GridConfig, n: int) -> tuple[int, int]:
    """(grids, records) of a split of n multi-instruction samples."""
    grids = math.ceil(n / cfg.samples_per_grid)
    records = n * (cfg.num_questions if cfg.format == "single" else 1)
    return grids, records


def _corpus(root: Path, meta: dict[str, Any]) -> GridCorpus:
    """The GridCorpus described by meta."""
    cfg = GridConfig(**meta["config"])
    sizes = {s: int(meta["sizes"][s]) for s in SPLITS}
    return GridCorpus(
        root=root,
        meta_file=root / META_FILE,
        split_files={s: root / f"{s}.jsonl" for s in SPLITS},
        image_root=root / "images" if meta["images"] else None,
        num_samples=sizes,
        num_records={s: _counts(cfg, n)[1] for s, n in sizes.items()},
        num_grids={s: _counts(cfg, n)[0] for s, n in sizes.items()},
        config=cfg,
        class_names=list(meta["class_names"]),
        meta=meta,
    )


def _split_records(
    cfg: GridConfig,
    class_names: list[str],
    split: str,
    n: int,
    seed: int,
    source: PictureSource | None,
    image_dir: Path | None,
    render: dict[str, int],
) -> Iterator[dict[str, Any]]:
    """The records of a split, writing each grid's picture to image_dir when there is one."""
    code = _SPLIT_CODES[split]
    image = source is not None
    index = 0
    for g in range(_counts(cfg, n)[0]):
        group = sample_grid_group(cfg, class_names, np.random.default_rng([seed, code, g, 1]))
        group = group[: n - g * cfg.samples_per_grid]
        extra: dict[str, Any] = {}
        if source is not None and image_dir is not None:
            picture, ids = render_grid(
                group[0], source, split, np.random.default_rng([seed, code, g, 2]), **render
            )
            picture.save(image_dir / f"{g}.png", format="PNG", compress_level=1)
            extra = {"image_file": f"images/{split}/{g}.png", "picture_ids": list(ids)}
        for j, unit in enumerate(group):
            sample = g * cfg.samples_per_grid + j
            parts = single_question_grids(unit) if cfg.format == "single" else [unit]
            for grid in parts:
                texts = sample_texts(
                    grid, class_names, image, task=cfg.task, object_order=cfg.object_order
                )
                yield {
                    "index": index,
                    "sample": sample,
                    "grid_index": g,
                    **grid.to_dict(),
                    "text_cells": list(grid.text_cells),
                    "form": "image" if image else "text",
                    "rows_text": grid_rows_text(grid, class_names),
                    "prompt_text": texts["prompt"],
                    "qa": [list(pair) for pair in texts["qa"]],
                    "full_text": texts["full_text"],
                    **extra,
                }
                index += 1


def _write(
    tmp: Path,
    meta: dict[str, Any],
    cfg: GridConfig,
    class_names: list[str],
    seed: int,
    source: PictureSource | None,
    render: dict[str, int],
) -> None:
    """Write the whole data set into the empty directory tmp, meta.json last."""
    for split in SPLITS:
        image_dir = None
        if source is not None:
            image_dir = tmp / "images" / split
            image_dir.mkdir(parents=True)
        n = int(meta["sizes"][split])
        with (tmp / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for record in _split_records(
                cfg, class_names, split, n, seed, source, image_dir, render
            ):
                f.write(json.dumps(record) + "\n")
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _check_meta(root: Path, meta: dict[str, Any]) -> GridCorpus:
    """The corpus at root if its meta.json equals meta; else ValueError naming the keys."""
    meta_file = root / META_FILE
    try:
        existing = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_file}: not a valid JSON file ({error})") from error
    if existing != meta:
        old, new = _flatten(existing), _flatten(meta)
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        details = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} asked" for k in keys)
        raise ValueError(
            f"{meta_file} was written with other arguments; differing keys: {keys} ({details})"
        )
    return _corpus(root, meta)


def write_grid_dataset(
    root: PathLike,
    cfg: GridConfig,
    vocabulary: PictureSource | Sequence[str],
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    *,
    images: bool = True,
    cell_px: int = 81,
    gap_px: int = 6,
    canvas_px: int = 256,
) -> GridCorpus:
    """Write a grid data set under root once (see the module docstring); return its corpus.

    ``vocabulary`` is a picture source (its class names; needed when images) or a list of
    class names. If root/meta.json exists with the same arguments, nothing is rewritten;
    with other arguments, ValueError naming the differing keys. The data set is written
    into a temporary sibling directory and renamed to root when complete.
    """
    root = Path(root)
    source = vocabulary if isinstance(vocabulary, PictureSource) else None
    if source is None and isinstance(vocabulary, str | bytes):
        raise ValueError(
            f"vocabulary must be a PictureSource or a list of class names, got the string "
            f"{vocabulary!r} (use make_source for a source by name)"
        )
    if images and source is None:
        raise ValueError("images=True needs a PictureSource as vocabulary, not class names")
    class_names = list(source.class_names if source is not None else vocabulary)
    check_class_names(cfg, class_names)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n_{split} must be an integer >= 0, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    render = {"cell_px": cell_px, "gap_px": gap_px, "canvas_px": canvas_px}
    if images:
        check_grid_fits(cfg.rows, cfg.cols, cell_px, gap_px, canvas_px)
    meta: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "source": source.spec() if images and source is not None else None,
        "class_names": class_names,
        "sizes": sizes,
        "seed": seed,
        "images": bool(images),
        "render": render if images else None,
    }
    meta = json.loads(json.dumps(meta))  # as it reads back from meta.json
    if (root / META_FILE).is_file():
        return _check_meta(root, meta)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and holds no {META_FILE}; give an empty or new root")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        _write(tmp, meta, cfg, class_names, seed, source if images else None, render)
        try:
            os.rename(tmp, root)  # replaces root only if it is absent or an empty directory
        except OSError:
            if (root / META_FILE).is_file():  # another writer finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return _check_meta(root, meta)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _corpus(root, meta)


def read_grid_split(root: PathLike, split: str) -> list[dict[str, Any]]:
    """The records of root/<split>.jsonl; ValueError naming the file and line if malformed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(root) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"grid split file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number}: not valid JSON ({error})") from error
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}: line {number}: expected a JSON object, got {type(record).__name__}"
                )
            records.append(record)
    return records


def _load_image(path: Path) -> Image.Image:
    """An image file fully decoded as RGB; ValueError naming the file when unreadable."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image file {path}: {error}") from error


class GridDataset(Sequence):
    """One split of a grid data set: item i -> its record, plus "image" when it has one.

    The image is the grid's PIL RGB picture, or transform(picture) when a transform is
    given. Building the data set reads every record and checks each image file exists.
    """

    def __init__(self, root: PathLike, split: str, transform: Transform | None = None):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.records = read_grid_split(self.root, split)
        self.file = self.root / f"{split}.jsonl"
        meta_file = self.root / META_FILE
        self.meta: dict[str, Any] | None = (
            json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else None
        )
        seen: set[str] = set()
        for number, record in enumerate(self.records, start=1):
            image_file = record.get("image_file")
            if image_file is None:
                continue
            if not isinstance(image_file, str) or not image_file:
                raise ValueError(
                    f"{self.file}: line {number}: 'image_file' must be a path string, got "
                    f"{image_file!r}"
                )
            if image_file in seen:
                continue
            if not (self.root / image_file).is_file():
                raise FileNotFoundError(
                    f"{self.file}: line {number}: image file not found: {self.root / image_file}"
                )
            seen.add(image_file)

    @property
    def class_names(self) -> list[str] | None:
        """The class names from meta.json (None without one)."""
        return None if self.meta is None else list(self.meta["class_names"])

    def grid(self, index: int) -> Grid:
        """The Grid of record index."""
        return Grid.from_dict(self.records[index])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} records")
        item = dict(self.records[index])
        image_file = item.get("image_file")
        if image_file is not None:
            image: Any = _load_image(self.root / image_file)
            item["image"] = self.transform(image) if self.transform is not None else image
        return item
