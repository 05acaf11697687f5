"""Tests for mm_data.alignment.mmimdb on a generated copy in the release layout."""

from __future__ import annotations

import json

import pytest
import torch

from mm_data.alignment import GENRES, MMIMDb, first_paragraph, write_miniature


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_miniature(tmp_path_factory.mktemp("mmimdb"), per_split=20, seed=1)


def test_first_paragraph_skips_one_word_paragraphs():
    assert first_paragraph(["Untitled", " A long plot. ", "x y"]) == "A long plot."
    assert first_paragraph(["Unknown"]) is None and first_paragraph(None) is None
    assert first_paragraph("two words") == "two words"


def test_reader_follows_the_release_files(root):
    assert len(GENRES) == 23 and GENRES[19] == "Western"
    data = MMIMDb(root, "dev", load_images=False)
    splits = json.loads((root / "split.json").read_text())
    assert len(data) + data.skipped == len(splits["dev"]) and data.skipped > 0
    for i, movie in enumerate(data.ids):
        meta = json.loads((root / "dataset" / f"{movie}.json").read_text())
        assert data.captions[i] == first_paragraph(meta["plot"])
        want = torch.tensor([float(g in meta["genres"]) for g in GENRES])
        assert torch.equal(data.labels[i], want)
    item = MMIMDb(root, "dev", transform=lambda im: torch.tensor(im.size))[0]
    assert item["image"].tolist() == [48, 48] and item["id"] == data.ids[0]


def test_an_id_list_restricts_and_orders_the_split(root):
    full = MMIMDb(root, "train", load_images=False)
    chosen = full.ids[::-1][:5]
    data = MMIMDb(root, "train", ids=chosen, load_images=False)
    assert data.ids == chosen
    with pytest.raises(ValueError, match="not in the train split"):
        MMIMDb(root, "train", ids=["9999999"], load_images=False)


def test_head_is_the_first_movies_without_a_second_read(root):
    full = MMIMDb(root, "test", transform=lambda im: torch.tensor(im.size))
    first = full.head(5)
    want = MMIMDb(root, "test", ids=full.ids[:5], transform=full.transform)
    assert first.ids == want.ids and first.captions == want.captions
    assert torch.equal(first.labels, want.labels) and len(full) > 5
    assert torch.equal(first[4]["image"], want[4]["image"])
    with pytest.raises(IndexError):
        first[5]


def test_bad_roots_and_files_are_named(root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no split\.json"):
        MMIMDb(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        MMIMDb(root, "val")
    (tmp_path / "dataset").mkdir()
    (tmp_path / "split.json").write_text(json.dumps({"train": ["1"], "dev": [], "test": []}))
    (tmp_path / "dataset" / "1.json").write_text(json.dumps({"plot": ["a b"], "genres": ["Opera"]}))
    with pytest.raises(ValueError, match="unknown genres"):
        MMIMDb(tmp_path, "train")
