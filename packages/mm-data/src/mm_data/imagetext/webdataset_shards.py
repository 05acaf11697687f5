"""Image-caption WebDataset shards in the img2dataset layout that open_clip reads.

Each sample of a shard is three tar members sharing a key (the 0-based position of the
entry in the annotation list, zero-padded to 9 digits):

    000000042.png    the image file's bytes, copied unchanged (its own extension; jpg,
                     jpeg, png and webp are kept, anything else is re-encoded as png)
    000000042.txt    the raw caption (preprocessed when read, like ImageCaptionDataset)
    000000042.json   {"key", "index" (= 42, the dataset index), "image_index",
                     "image_id", "image", "caption"}

Shards are ``shard-000000.tar``, ``shard-000001.tar``, ... next to a ``sizes.json``
({shard file name: number of samples}, which open_clip uses for the epoch length).
``webdataset_pipeline`` yields the dict of ``ImageCaptionDataset`` (image, caption,
image_index, index) so per-sample loss state stays keyed by the dataset index.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from mm_data.imagetext.captions import preprocess_caption
from mm_data.imagetext.formats import ImageCaptionDataset, load_image

__all__ = ["IMAGE_EXTENSIONS", "shard_name", "webdataset_pipeline", "write_webdataset_shards"]

PathLike = str | os.PathLike[str]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # the image keys open_clip looks up
KEY_WIDTH = 9


class _GlobalRandom:
    """The rng argument of wds.shuffle, drawing from Python's global generator (picklable)."""

    def randint(self, a: int, b: int) -> int:
        """random.randint(a, b)."""
        return random.randint(a, b)


_GLOBAL_RANDOM = _GlobalRandom()


def shard_name(number: int) -> str:
    """'shard-000042.tar'."""
    return f"shard-{number:06d}.tar"


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one file with fixed metadata, so equal inputs give byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _image_member(path: Path, verify: bool) -> tuple[str, bytes]:
    """The extension and bytes stored for one image file."""
    ext = path.suffix.lower().lstrip(".")
    if ext in IMAGE_EXTENSIONS:
        if verify:
            load_image(path)  # ValueError naming the file when it cannot be decoded
        return ext, path.read_bytes()
    buffer = io.BytesIO()
    load_image(path).save(buffer, format="PNG")
    return "png", buffer.getvalue()


def write_webdataset_shards(
    ann_file: PathLike | Sequence[PathLike],
    image_root: PathLike,
    out_dir: PathLike,
    *,
    samples_per_shard: int = 1000,
    verify_images: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Write the training-format annotations as tar shards; return the shard paths in order.

    The annotations are validated like ``ImageCaptionDataset``'s; with ``verify_images`` every
    image is decoded once, so a corrupt file fails here (ValueError naming it), not in training.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    dataset = ImageCaptionDataset(ann_file, image_root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob("shard-*.tar"))
    if stale and not overwrite:
        raise FileExistsError(f"{out} already holds shards ({stale[0].name}); pass overwrite=True")
    for path in stale:
        path.unlink()

    paths: list[Path] = []
    sizes: dict[str, int] = {}
    for start in range(0, len(dataset), samples_per_shard):
        path = out / shard_name(len(paths))
        partial = path.with_name(path.name + ".partial")
        stop = min(start + samples_per_shard, len(dataset))
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(start, stop):
                key = f"{index:0{KEY_WIDTH}d}"
                entry = dataset.annotations[index]
                ext, data = _image_member(dataset.image_path(index), verify_images)
                meta = {
                    "key": key,
                    "index": index,
                    "image_index": dataset.image_indices[index],
                    "image_id": dataset.image_ids[dataset.image_indices[index]],
                    "image": entry["image"],
                    "caption": entry["caption"],
                }
                _add_member(tar, f"{key}.{ext}", data)
                _add_member(tar, f"{key}.txt", entry["caption"].encode("utf-8"))
                _add_member(tar, f"{key}.json", json.dumps(meta).encode("utf-8"))
        partial.replace(path)
        paths.append(path)
        sizes[path.name] = stop - start
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1), encoding="utf-8")
    return paths


def _sample_to_item(
    sample: dict[str, Any], transform: Callable[[Image.Image], Any] | None, max_words: int
) -> dict[str, Any]:
    """A decoded webdataset sample -> dict(image, caption, image_index, index)."""
    where = f"{sample.get('__url__')}: sample {sample.get('__key__')}"
    image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    if image is None:
        raise ValueError(f"{where}: no image member (one of {', '.join(IMAGE_EXTENSIONS)})")
    meta = sample.get("json")
    if not isinstance(meta, dict) or "index" not in meta:
        raise ValueError(f"{where}: no .json member with an 'index' (the dataset index)")
    caption = sample.get("txt", meta.get("caption"))
    if not isinstance(caption, str):
        raise ValueError(f"{where}: no caption (.txt member or 'caption' in the .json)")
    image = image.convert("RGB")
    if transform is not None:
        image = transform(image)
    return {
        "image": image,
        "caption": preprocess_caption(caption, max_words),
        "image_index": int(meta.get("image_index", -1)),
        "index": int(meta["index"]),
    }


def _to_items(
    samples: Iterable[dict[str, Any]],
    transform: Callable[[Image.Image], Any] | None,
    max_words: int,
) -> Iterable[dict[str, Any]]:
    """Pipeline stage mapping decoded samples to items (wds.map would add '__key__')."""
    for sample in samples:
        yield _sample_to_item(sample, transform, max_words)


def webdataset_pipeline(
    urls: str | PathLike | Iterable[str | PathLike],
    transform: Callable[[Image.Image], Any] | None = None,
    *,
    shuffle: int = 0,
    max_words: int = 30,
    split_by_node: bool = True,
    split_by_worker: bool = True,
) -> Any:
    """A webdataset DataPipeline (an IterableDataset) of ImageCaptionDataset-style dicts.

    ``urls``: brace notation ("out/shard-{000000..000009}.tar"), one path or a list. Shards
    are split by rank (``wds.split_by_node``) and then by DataLoader worker
    (``wds.split_by_worker``) before anything is shuffled, so every sample is read once per
    epoch over all ranks and workers (``split_by_node=False`` / ``split_by_worker=False`` make
    every rank / worker read every shard). ``shuffle > 0`` shuffles this worker's shards, then
    its samples in a buffer of that many, drawing from Python's global ``random`` (which the
    DataLoader seeds per worker), so a seeded run repeats its order.
    """
    import webdataset as wds

    if isinstance(urls, str | os.PathLike):
        shard_list: str | list[str] = os.fspath(urls)
    else:
        shard_list = [os.fspath(u) for u in urls]
        if not shard_list:
            raise ValueError("urls: no shard given")
    if shuffle < 0:
        raise ValueError(f"shuffle must be >= 0, got {shuffle}")
    stages: list[Any] = [wds.SimpleShardList(shard_list)]
    if split_by_node:
        stages.append(wds.split_by_node)
    if split_by_worker:
        stages.append(wds.split_by_worker)
    if shuffle:
        stages.append(wds.shuffle(10**9, initial=10**9, rng=_GLOBAL_RANDOM))  # every shard
    stages.append(wds.tarfile_to_samples())
    if shuffle:
        stages.append(wds.shuffle(shuffle, initial=shuffle, rng=_GLOBAL_RANDOM))
    stages += [
        wds.decode("pil"),
        functools.partial(_to_items, transform=transform, max_words=max_words),
    ]
    return wds.DataPipeline(*stages)


def webdataset_captions(
    urls: str | PathLike | Iterable[str | PathLike], *, max_words: int = 30
) -> list[str]:
    """Every caption of the shards, preprocessed, in shard order (images are not decoded):
    what an offline tokenizer trains on when the training set is sharded."""
    import webdataset as wds

    if isinstance(urls, str | os.PathLike):
        shard_list: str | list[str] = os.fspath(urls)
    else:
        shard_list = [os.fspath(u) for u in urls]
    pipeline = wds.DataPipeline(wds.SimpleShardList(shard_list), wds.tarfile_to_samples())
    return [preprocess_caption(sample["txt"].decode("utf-8"), max_words) for sample in pipeline]
