"""Loaders for the on-disk image-caption formats of ALBEF-style CLIP code bases.

Training annotations: a JSON list of ``{"image": <path relative to image_root>, "caption":
<str>, "image_id": <str or number>}``, one entry per caption (an image with five captions
appears five times with one ``image_id``). Retrieval evaluation (COCO style): a JSON list of
``{"image": <path>, "caption": [<str>, ...]}``, one entry per image. Zero-shot: an
ImageFolder tree ``root/<class folder>/<image>``, classes in sorted folder order, with an
optional ``root/classnames.txt`` (one readable name per line, in that order).

Entries are validated when a dataset is built; problems raise ``ValueError`` naming the
annotation file and the entry number (0-based position in the JSON list).
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from mm_data.imagetext.captions import preprocess_caption

__all__ = [
    "CLASSNAMES_FILE",
    "ImageCaptionDataset",
    "RetrievalEvalDataset",
    "ZeroShotFolder",
    "load_image",
    "read_annotations",
]

PathLike = str | os.PathLike[str]
Transform = Callable[[Image.Image], Any]

CLASSNAMES_FILE = "classnames.txt"


def load_image(path: PathLike) -> Image.Image:
    """Open an image file fully decoded as RGB; ValueError naming the file when unreadable."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image file {path}: {error}") from error


def read_annotations(ann_file: PathLike) -> list[Any]:
    """Parse a JSON annotation file that must hold a list; ValueError naming the file if not."""
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a valid JSON file ({error})") from error
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _as_paths(ann_file: PathLike | Sequence[PathLike]) -> list[Path]:
    """One annotation file or several (concatenated in order, as ALBEF configs allow)."""
    if isinstance(ann_file, str | os.PathLike):
        return [Path(ann_file)]
    paths = [Path(p) for p in ann_file]
    if not paths:
        raise ValueError("ann_file: no annotation file given")
    return paths


class _Validator:
    """Checks one annotation entry at a time and names the file and entry on failure."""

    def __init__(self, ann_file: Path, image_root: Path, max_words: int, check_files: bool):
        self.ann_file = ann_file
        self.image_root = image_root
        self.max_words = max_words
        self.check_files = check_files
        self._seen_files: set[str] = set()

    def error(self, k: int, problem: str) -> ValueError:
        """A ValueError for entry k of this file."""
        return ValueError(f"{self.ann_file}: entry {k}: {problem}")

    def entry(self, k: int, entry: Any) -> str:
        """Check the entry is an object with an existing image; return its relative path."""
        if not isinstance(entry, dict):
            raise self.error(k, f"expected an object with 'image' and 'caption', got {entry!r}")
        for key in ("image", "caption"):
            if key not in entry:
                raise self.error(k, f"missing key {key!r}")
        image = entry["image"]
        if not isinstance(image, str) or not image:
            raise self.error(k, f"'image' must be a non-empty path string, got {image!r}")
        if self.check_files and image not in self._seen_files:
            full = self.image_root / image
            if not full.is_file():
                raise self.error(k, f"image file not found: {full}")
            self._seen_files.add(image)
        return image

    def caption(self, k: int, raw: Any, what: str = "'caption'") -> str:
        """Check a caption is a string that survives preprocessing; return it preprocessed."""
        if not isinstance(raw, str):
            raise self.error(k, f"{what} must be a string, got {type(raw).__name__} {raw!r}")
        text = preprocess_caption(raw, self.max_words)
        if not text:
            raise self.error(k, f"{what} is empty after preprocessing (raw {raw!r})")
        return text

    def image_id(self, k: int, entry: dict[str, Any]) -> Hashable:
        """The entry's image_id, or its image path when it has none."""
        image_id = entry.get("image_id", entry["image"])
        if not isinstance(image_id, Hashable):
            raise self.error(k, f"'image_id' must be a string or a number, got {image_id!r}")
        return image_id


def _check_index(index: int, length: int) -> int:
    """A non-negative in-range index (negative ones count from the end)."""
    index = operator.index(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length}")
    return index


class _ImageFiles(Dataset):
    """What both annotation data sets share: image files under a root, loaded and transformed."""

    def __init__(
        self,
        ann_file: PathLike | Sequence[PathLike],
        image_root: PathLike,
        transform: Transform | None = None,
        max_words: int = 30,
        *,
        check_files: bool = True,
    ):
        self.ann_files = _as_paths(ann_file)
        self.image_root = Path(image_root)
        self.transform = transform
        self.max_words = max_words
        self.check_files = check_files
        self.images: list[str] = []  # image path relative to image_root, per entry
        self._read()

    def _read(self) -> None:
        """Read and validate every annotation file (each data set fills its own lists)."""
        raise NotImplementedError

    def _entries(self) -> Iterator[tuple[_Validator, int, dict[str, Any], str]]:
        """(validator, entry number, entry, checked image path) of every annotation entry."""
        for path in self.ann_files:
            check = _Validator(path, self.image_root, self.max_words, self.check_files)
            for k, entry in enumerate(read_annotations(path)):
                yield check, k, entry, check.entry(k, entry)

    def image_path(self, index: int) -> Path:
        """Full path of the image of entry ``index``."""
        return self.image_root / self.images[_check_index(index, len(self))]

    def _image(self, index: int) -> Any:
        """The transformed image of entry ``index`` (the index already checked)."""
        image: Any = load_image(self.image_root / self.images[index])
        return self.transform(image) if self.transform is not None else image


class ImageCaptionDataset(_ImageFiles):
    """Training pairs: item k -> dict(image, caption, image_index, index=k)."""

    def _read(self) -> None:
        self.annotations: list[dict[str, Any]] = []  # the validated JSON entries, as read
        self.captions: list[str] = []  # preprocessed caption, per entry
        self.image_indices: list[int] = []  # contiguous image index, per entry
        self.image_ids: list[Hashable] = []  # distinct image_ids in order of first appearance
        id_to_index: dict[Hashable, int] = {}
        for check, k, entry, image in self._entries():
            caption = check.caption(k, entry["caption"])
            image_id = check.image_id(k, entry)
            if image_id not in id_to_index:
                id_to_index[image_id] = len(self.image_ids)
                self.image_ids.append(image_id)
            self.annotations.append(entry)
            self.images.append(image)
            self.captions.append(caption)
            self.image_indices.append(id_to_index[image_id])

    @property
    def num_images(self) -> int:
        """Number of distinct image_ids."""
        return len(self.image_ids)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = _check_index(index, len(self))
        return {
            "image": self._image(index),
            "caption": self.captions[index],
            "image_index": self.image_indices[index],
            "index": index,
        }


class RetrievalEvalDataset(_ImageFiles):
    """COCO-style retrieval set: item i -> (image, i), as ALBEF's; the texts are attributes."""

    def _read(self) -> None:
        self.texts: list[str] = []  # every caption, preprocessed, image by image
        self.image_to_texts: list[list[int]] = []  # indices into texts, per image
        text_to_image: list[int] = []
        for check, k, entry, image in self._entries():
            captions = entry["caption"]
            if not isinstance(captions, list):
                raise check.error(
                    k, f"'caption' must be a list of strings (COCO style), got {captions!r}"
                )
            if not captions:
                raise check.error(k, "'caption' is an empty list")
            texts = [check.caption(k, c, f"caption {j}") for j, c in enumerate(captions)]
            image_index = len(self.images)
            self.images.append(image)
            self.image_to_texts.append(list(range(len(self.texts), len(self.texts) + len(texts))))
            self.texts.extend(texts)
            text_to_image.extend([image_index] * len(texts))
        self.text_to_image = torch.tensor(text_to_image, dtype=torch.int64)  # [T]

    @property
    def num_images(self) -> int:
        """Number of images (entries)."""
        return len(self.images)

    @property
    def num_texts(self) -> int:
        """Number of captions over all images."""
        return len(self.texts)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        index = _check_index(index, len(self))
        return self._image(index), index


class ZeroShotFolder(ImageFolder):
    """ImageFolder of one folder per class; item -> (image, label); readable class_names."""

    def __init__(
        self,
        root: PathLike,
        transform: Transform | None = None,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__(os.fspath(root), transform=transform, loader=load_image)
        names_file = Path(root) / CLASSNAMES_FILE
        if class_names is not None:
            names = [str(name) for name in class_names]
            source = "class_names"
        elif names_file.is_file():
            lines = names_file.read_text(encoding="utf-8").splitlines()
            names = [line.strip() for line in lines if line.strip()]
            source = str(names_file)
        else:
            names = [folder.replace("_", " ") for folder in self.classes]
            source = "folder names"
        if len(names) != len(self.classes):
            raise ValueError(
                f"{source}: {len(names)} class names for {len(self.classes)} class folders "
                f"in {root}"
            )
        self.class_names: list[str] = names
