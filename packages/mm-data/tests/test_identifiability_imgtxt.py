"""Tests for the Multimodal3DIdent generator, loader and caption vocabulary."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mm_data.identifiability import (
    COLOR_NAMES,
    COLOR_PALETTES,
    IMAGE_LATENTS,
    SHAPES,
    TEXT_LATENTS,
    Multimodal3DIdent,
    Vocabulary,
    caption_length,
    image_name_width,
    nearest_color,
    object_mask,
    one_hot,
    render_image,
    tokenize,
    write_multimodal3dident,
)
from mm_data.identifiability.imgtxt import XPOS_WORDS, YPOS_WORDS

SIZES = {"train": 24, "val": 10, "test": 5}
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("m3di")
    write_multimodal3dident(path, SIZES["train"], SIZES["val"], SIZES["test"], IMAGE_SIZE, seed=3)
    return path


@pytest.fixture
def copy(root, tmp_path):
    return shutil.copytree(root, tmp_path / "m3di")


def _csv(path):
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.mark.parametrize(
    ("n", "width"),
    [(1, 1), (9, 1), (10, 1), (11, 2), (100, 2), (101, 3), (10_000, 4), (125_000, 6)],
)
def test_image_name_width_is_ceil_log10(n, width):
    assert image_name_width(n) == width


@pytest.mark.parametrize("split", list(SIZES))
def test_generated_layout(root, split):
    n, d = SIZES[split], root / split
    width = image_name_width(n)
    names = sorted(p.name for p in (d / "images").iterdir())
    assert names == [f"{i:0{width}d}.png" for i in range(n)]
    with Image.open(d / "images" / names[0]) as img:
        assert img.size == (IMAGE_SIZE, IMAGE_SIZE) and img.mode == "RGB"
    captions = (d / "text" / "text_raw.txt").read_text().splitlines()
    assert len(captions) == n and all(captions)
    header, rows = _csv(d / "latents_image.csv")
    assert tuple(header) == IMAGE_LATENTS and len(rows) == n
    header, rows = _csv(d / "latents_text.csv")
    assert tuple(header) == TEXT_LATENTS and len(rows) == n


def test_factor_roles(root):
    ds = Multimodal3DIdent(root, "train")
    zi, zt = ds.latents_image, ds.latents_text
    for shared in ("object_shape", "object_xpos", "object_ypos", "object_zpos"):
        np.testing.assert_array_equal(zi[shared], zt[shared])
    assert set(zi["object_shape"]) <= set(range(7)) and set(zi["object_xpos"]) <= {0, 1, 2}
    assert np.all(zi["object_zpos"] == 0) and set(zt["text_phrasing"]) <= set(range(5))
    for name in ("object_alpharot", "object_betarot", "object_gammarot", "background_color"):
        assert np.all((zi[name] >= 0) & (zi[name] < 1))
    for hue, name, index in zip(
        zi["object_color"], zt["object_color_name"], zt["object_color_index"]
    ):
        assert name in {nearest_color(hue, p) for p in COLOR_PALETTES}
        assert COLOR_NAMES[index] == name


def test_nearest_palette_colour_naming():
    assert nearest_color(0.5, "basic") == "cyan"
    assert nearest_color(0.97, "basic") == "red"  # hue is circular
    assert nearest_color(0.02, "wheel") == "red"
    # One hue, three names: the caption colour is not a function of the palette-free hue.
    assert {nearest_color(0.05, p) for p in COLOR_PALETTES} == {"red", "orange", "scarlet"}
    assert nearest_color(0.05, 1) == nearest_color(0.05, "wheel")
    assert len(set(COLOR_NAMES)) == len(COLOR_NAMES)


def test_generation_is_deterministic(tmp_path):
    a = write_multimodal3dident(tmp_path / "a", 3, 2, 2, image_size=16, seed=7)
    b = write_multimodal3dident(tmp_path / "b", 3, 2, 2, image_size=16, seed=7)
    c = write_multimodal3dident(tmp_path / "c", 3, 2, 2, image_size=16, seed=8)
    for rel in ("train/latents_image.csv", "val/text/text_raw.txt", "test/images/0.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / "train/latents_image.csv").read_bytes() != (
        c / "train/latents_image.csv"
    ).read_bytes()


def test_loader_round_trip(root):
    ds = Multimodal3DIdent(root, "train")
    assert len(ds) == SIZES["train"]
    assert ds.max_len == 1 + max(len(tokenize(c)) for c in ds.captions)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert item["image"].dtype == torch.float32
        expected = render_image(item["z_image"], IMAGE_SIZE)
        assert torch.equal(item["image"], torch.from_numpy(expected).permute(2, 0, 1) / 255.0)
        zt = item["z_text"]
        words = ds.vocab.decode(item["text"]).split()
        assert words == tokenize(ds.captions[i])
        assert SHAPES[zt["object_shape"]] in words
        assert XPOS_WORDS[zt["object_xpos"]] in words and YPOS_WORDS[zt["object_ypos"]] in words
        assert zt["object_color_name"] in words
        assert item["text"].shape == (ds.max_len,) and item["text"][len(words)] == 1
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["text"].shape == (4, ds.max_len) and batch["z_image"]["object_shape"].shape == (4,)


def test_loader_resize_and_transform(root):
    ds = Multimodal3DIdent(root, "test", image_size=16, transform=lambda x: x * 2 - 1)
    image = ds[0]["image"]
    assert image.shape == (3, 16, 16) and image.min() >= -1 and image.max() <= 1


def test_channel_stats_are_the_pixel_mean_and_std(root):
    data = Multimodal3DIdent(root, "train", image_size=16)
    mean, std = data.channel_stats(max_images=5)
    pixels = torch.stack([data.load_image(i) for i in range(5)]).double()  # [5, 3, 16, 16]
    per_channel = pixels.permute(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(mean, per_channel.mean(1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(std, per_channel.std(1, unbiased=False).numpy(), rtol=1e-8)
    assert data.channel_stats(max_images=10_000) == data.channel_stats(max_images=len(data))
    with pytest.raises(ValueError, match="max_images"):
        data.channel_stats(max_images=0)


def test_val_split_shares_train_vocabulary_and_length(root, tmp_path):
    train, val = Multimodal3DIdent(root, "train"), Multimodal3DIdent(root, "val")
    assert val.vocab == train.vocab and val.max_len == train.max_len
    path = train.vocab.save(tmp_path / "vocab.json")
    test = Multimodal3DIdent(root, "test", vocab=path, max_len=train.max_len + 3)
    assert test.vocab == train.vocab and test.tokens.shape == (SIZES["test"], train.max_len + 3)


POSE = {"object_xpos": 1, "object_ypos": 1, "object_alpharot": 0.0, "object_betarot": 1.0}
POSE["object_gammarot"] = 0.5  # no shear


def test_shapes_stay_distinct_at_32px_under_any_rotation():
    # Brute force over rotations: no shape is (nearly) a rotated copy of another at 32 px,
    # so shape is a learnable factor even at the CPU preset's resolution.
    masks = {k: object_mask({**POSE, "object_shape": k}, 32) for k in range(len(SHAPES))}
    for i in range(len(SHAPES)):
        for j in range(len(SHAPES)):
            if i == j:
                continue
            dist = min(
                np.abs(
                    masks[i] - object_mask({**POSE, "object_shape": j, "object_alpharot": a}, 32)
                ).sum()
                / masks[i].sum()
                for a in np.arange(72) / 72
            )
            assert dist > 0.15, (SHAPES[i], SHAPES[j], dist)


def test_object_mask_geometry():
    ring, crescent = SHAPES.index("ring"), SHAPES.index("crescent")
    for k in range(len(SHAPES)):
        mask = object_mask({**POSE, "object_shape": k}, 64)
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        hole = k in (ring, crescent)
        assert mask[30:34, 30:34].mean() == (0.0 if hole else 1.0), SHAPES[k]
        # only the centre cell is covered, and the area scales with the radius squared
        assert mask[:, :18].sum() == mask[:, 46:].sum() == mask[:18].sum() == mask[46:].sum() == 0
        small = object_mask({**POSE, "object_shape": k}, 64, object_radius=0.075)
        assert mask.sum() / small.sum() == pytest.approx(4.0, rel=0.1), SHAPES[k]
        # squash (betarot 0) shrinks the object to 3/4 of its height
        flat = object_mask({**POSE, "object_shape": k, "object_betarot": 0.0}, 64)
        assert flat.sum() / mask.sum() == pytest.approx(0.75, abs=0.06), SHAPES[k]
    moved = object_mask({**POSE, "object_shape": 0, "object_xpos": 0, "object_ypos": 2}, 63)
    rows, cols = np.nonzero(moved)
    assert cols.max() < 21 and rows.min() >= 42


def test_images_differ_with_background_color(root):
    z = Multimodal3DIdent(root, "val")[0]["z_image"]
    base = render_image(z, 32).astype(float)
    assert np.array_equal(render_image(z, 32), render_image(dict(z), 32))
    other = render_image({**z, "background_color": (z["background_color"] + 0.5) % 1}, 32)
    assert np.abs(base - other).mean() > 10
    moved = render_image({**z, "object_xpos": (z["object_xpos"] + 1) % 3}, 32)
    assert np.abs(base - moved).mean() > 1


def test_vocabulary_unknown_words_map_to_unk(tmp_path):
    vocab = Vocabulary.build(["A red circle.", "A blue square."])
    assert vocab.words[:3] == ["{pad}", "{eos}", "{unk}"]
    ids = vocab.encode("A purple circle!", max_len=7)
    a, circle = vocab.index("a"), vocab.index("circle")
    assert ids == [a, 2, circle, 2, 1, 0, 0]
    assert vocab.index("purple") == 2 and isinstance(vocab.index("purple"), int)
    loaded = Vocabulary.load(vocab.save(tmp_path / "v.json"))
    assert loaded == vocab and loaded.encode("A purple circle!", 7) == ids
    payload = json.loads((tmp_path / "v.json").read_text())
    assert payload["w2i"]["{unk}"] == 2 and payload["i2w"]["0"] == "{pad}"


def test_vocabulary_long_caption_error_and_truncation():
    vocab = Vocabulary.build(["one two three four"])
    with pytest.raises(ValueError, match=r"caption row 7 has 4 tokens.*max_len is 4"):
        vocab.encode("one two three four", max_len=4, row=7)
    with pytest.raises(ValueError, match="caption row 1"):
        vocab.encode_batch(["one", "one two three four"], max_len=4)
    ids = vocab.encode("one two three four", max_len=4, truncate=True)
    assert ids == [vocab.index("one"), vocab.index("two"), vocab.index("three"), 1]
    assert caption_length(["one two", "one two three four"]) == 5


def test_loader_rejects_long_caption_naming_row(root):
    ds = Multimodal3DIdent(root, "val")
    row = int(np.argmax([len(tokenize(c)) for c in ds.captions]))
    with pytest.raises(ValueError, match=f"caption row {row} "):
        Multimodal3DIdent(root, "val", max_len=len(tokenize(ds.captions[row])))
    short = Multimodal3DIdent(root, "val", max_len=6, truncate=True)
    assert short.tokens.shape == (SIZES["val"], 6)


def test_one_hot():
    x = one_hot(torch.tensor([[3, 1, 0]]), 5)
    assert x.shape == (1, 3, 5) and x.dtype == torch.float32
    assert torch.equal(x.argmax(-1), torch.tensor([[3, 1, 0]]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        one_hot(torch.tensor([5]), 5)


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("val/text/text_raw.txt", "text_raw.txt does not exist"),
        ("val/latents_image.csv", "latents_image.csv does not exist"),
        ("val/latents_text.csv", "latents_text.csv does not exist"),
        ("val/images", "images does not exist"),
        ("val/images/3.png", "images has 9 PNG files"),
    ],
)
def test_loader_rejects_missing_file(copy, remove, message):
    path = copy / remove
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(ValueError, match=message):
        Multimodal3DIdent(copy, "val")


@pytest.mark.parametrize("name", ["latents_image.csv", "latents_text.csv"])
def test_loader_rejects_csv_with_dropped_row(copy, name):
    path = copy / "val" / name
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4] + lines[5:]))
    with pytest.raises(ValueError, match=rf"{name} has 9 rows.*text_raw.txt has 10 captions"):
        Multimodal3DIdent(copy, "val")


def test_loader_rejects_dropped_caption_gap_and_bad_csv(copy):
    text = copy / "val" / "text" / "text_raw.txt"
    text.write_text("\n".join(text.read_text().splitlines()[:-1]))
    with pytest.raises(ValueError, match=r"text_raw\.txt has 9 captions"):
        Multimodal3DIdent(copy, "val")
    (copy / "test" / "images" / "2.png").rename(copy / "test" / "images" / "7.png")
    with pytest.raises(ValueError, match=r"2\.png is missing"):
        Multimodal3DIdent(copy, "test")
    path = copy / "train" / "latents_text.csv"
    path.write_text(path.read_text().replace("text_phrasing", "phrasing", 1))
    with pytest.raises(
        ValueError, match=r"latents_text.csv lacks the column\(s\) \['text_phrasing'\]"
    ):
        Multimodal3DIdent(copy, "train")


def test_loader_reads_archive_style_files(tmp_path):
    """Six-digit names, a pandas index column, float-coded factors, no final newline."""
    split = tmp_path / "m3di" / "train"
    (split / "images").mkdir(parents=True)
    (split / "text").mkdir()
    rng = np.random.default_rng(0)
    image_rows, text_rows, captions = [], [], []
    for i in range(3):
        z = {c: float(rng.random()) for c in IMAGE_LATENTS}
        z.update(object_shape=float(i), object_xpos=1.0, object_ypos=2.0, object_zpos=0.0)
        Image.fromarray(render_image(z, 8)).save(split / "images" / f"{i:06d}.png")
        image_rows.append([str(i)] + [str(z[c]) for c in IMAGE_LATENTS])
        text_rows.append([str(i), f"{i}.0", "1.0", "2.0", "0.0", "dark red", "3.0", "1.0"])
        captions.append(f'A "dark red" teapot is at the bottom-center of the image ({i}).')
    for name, columns, rows in [
        ("latents_image.csv", IMAGE_LATENTS, image_rows),
        ("latents_text.csv", TEXT_LATENTS, text_rows),
    ]:
        with (split / name).open("w", newline="") as f:
            csv.writer(f).writerows([["Unnamed: 0", *columns], *rows])
    (split / "text" / "text_raw.txt").write_text("\n".join(captions))
    ds = Multimodal3DIdent(tmp_path / "m3di", "train")
    assert len(ds) == 3 and ds.latents_image["object_shape"].dtype == np.int64
    item = ds[2]
    assert item["z_text"]["object_color_name"] == "dark red" and item["z_text"]["object_shape"] == 2
    assert ds.vocab.decode(item["text"]).startswith('a " dark red " teapot')
    assert item["image"].shape == (3, 8, 8)
