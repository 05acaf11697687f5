"""Tests for mm_data.imagetext: formats, captions, transforms, templates, synthetic corpus, shards."""

from __future__ import annotations

import io
import json
import random
import re
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mm_data.imagetext import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IMAGENET_TEMPLATES,
    SHAPES,
    SIMPLE_TEMPLATES,
    ImageCaptionDataset,
    RetrievalEvalDataset,
    Scene,
    ZeroShotFolder,
    class_prompts,
    eval_transform,
    hard_negative,
    preprocess_caption,
    render_scene,
    sample_scene,
    scene_captions,
    train_transform,
    webdataset_pipeline,
    write_synthetic_corpus,
    write_webdataset_shards,
    zeroshot_transform,
)

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
POSITION_WORDS = {
    "left": ("left",),
    "right": ("right",),
    "top": ("top", "upper"),
    "bottom": ("bottom", "lower"),
    "center": ("center", "middle"),
}
RELATIONS = ("to the left of", "to the right of", "above", "below")


def _png(path, color=(200, 30, 30), size=(8, 6)):
    """Write a small solid PNG and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return write_synthetic_corpus(
        root, n_train=40, n_eval=12, n_zeroshot_per_class=3, image_size=32, seed=5
    )


# --------------------------------------------------------------------------- captions


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A Dog, running!", "a dog running"),
        ('It\'s "great" (really)?*#:;~.', "its great really"),
        ("<person> rides a bike", "person rides a bike"),
        ("a well-known red/blue sign", "a well known red blue sign"),
        ("  two   spaces\tand\nnewline  ", "two spaces and newline"),
        ("--dash-- at ends", "dash at ends"),
        ("?!.,", ""),
    ],
)
def test_preprocess_caption_cases(raw, expected):
    assert preprocess_caption(raw) == expected


def test_preprocess_caption_truncates_to_max_words():
    text = " ".join(f"w{i}" for i in range(40))
    assert preprocess_caption(text) == " ".join(f"w{i}" for i in range(30))
    assert preprocess_caption(text, max_words=3) == "w0 w1 w2"
    assert preprocess_caption("a-b-c-d", max_words=2) == "a b"  # split words count
    assert len(preprocess_caption(text, max_words=None).split()) == 40
    with pytest.raises(ValueError, match="max_words"):
        preprocess_caption("x", max_words=0)
    with pytest.raises(TypeError):
        preprocess_caption(["not", "a", "string"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- formats


def test_image_caption_dataset_items_and_indices(tmp_path):
    for name, color in (("a.png", (255, 0, 0)), ("sub/b.png", (0, 255, 0)), ("c.png", (0, 0, 255))):
        _png(tmp_path / "img" / name, color)
    ann = [
        {"image": "sub/b.png", "caption": "The GREEN one.", "image_id": "b"},
        {"image": "a.png", "caption": "red, red!", "image_id": "a"},
        {"image": "sub/b.png", "caption": "green again", "image_id": "b"},
        {"image": "c.png", "caption": "a blue-ish patch", "image_id": 7},
        {"image": "a.png", "caption": "red once more", "image_id": "a"},
        {"image": "c.png", "caption": "no id, keyed by path"},
    ]
    ds = ImageCaptionDataset(_write_json(tmp_path / "train.json", ann), tmp_path / "img")
    assert len(ds) == 6
    assert ds.image_indices == [0, 1, 0, 2, 1, 3]
    assert ds.num_images == 4 and ds.image_ids == ["b", "a", 7, "c.png"]
    assert ds.captions[:2] == ["the green one", "red red"]
    item = ds[3]
    assert set(item) == {"image", "caption", "image_index", "index"}
    assert item["caption"] == "a blue ish patch"
    assert (item["image_index"], item["index"]) == (2, 3)
    assert isinstance(item["image"], Image.Image) and item["image"].mode == "RGB"
    assert item["image"].getpixel((0, 0)) == (0, 0, 255)
    assert ds[-1]["index"] == 5
    with pytest.raises(IndexError):
        ds[6]

    ds_t = ImageCaptionDataset(
        tmp_path / "train.json", tmp_path / "img", eval_transform(16), max_words=2
    )
    item = ds_t[0]
    assert item["image"].shape == (3, 16, 16) and item["caption"] == "the green"
    loader = torch.utils.data.DataLoader(ds_t, batch_size=4)
    batch = next(iter(loader))
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["image_index"].tolist() == [0, 1, 0, 2]

    # Several annotation files are concatenated (ALBEF configs list them); indices continue.
    both = ImageCaptionDataset([tmp_path / "train.json", tmp_path / "train.json"], tmp_path / "img")
    assert len(both) == 12 and both.num_images == 4 and both[7]["index"] == 7


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"caption": "a cat"}, "missing key 'image'"),
        ({"image": "ok.png"}, "missing key 'caption'"),
        ({"image": "ok.png", "caption": " ?!. "}, "empty after preprocessing"),
        ({"image": "ok.png", "caption": 3}, "must be a string"),
        ({"image": "ok.png", "caption": "x", "image_id": [1]}, "'image_id'"),
        (["ok.png", "a cat"], "expected an object"),
    ],
)
def test_training_annotation_errors_name_file_and_entry(tmp_path, entry, problem):
    _png(tmp_path / "ok.png")
    ann = [{"image": "ok.png", "caption": "fine", "image_id": 0}] * 2 + [entry]
    ann_file = _write_json(tmp_path / "bad.json", ann)
    with pytest.raises(ValueError, match=re.escape(problem)) as info:
        ImageCaptionDataset(ann_file, tmp_path)
    assert str(ann_file) in str(info.value) and "entry 2" in str(info.value)


def test_missing_image_file_error_names_full_path(tmp_path):
    _png(tmp_path / "ok.png")
    ann = [
        {"image": "ok.png", "caption": "a", "image_id": 0},
        {"image": "gone/x.png", "caption": "b"},
    ]
    ann_file = _write_json(tmp_path / "train.json", ann)
    with pytest.raises(ValueError, match="image file not found") as info:
        ImageCaptionDataset(ann_file, tmp_path)
    message = str(info.value)
    assert str(ann_file) in message and "entry 1" in message
    assert str(tmp_path / "gone" / "x.png") in message
    assert len(ImageCaptionDataset(ann_file, tmp_path, check_files=False)) == 2


def test_annotation_file_must_hold_a_list(tmp_path):
    with pytest.raises(ValueError, match="expected a JSON list") as info:
        ImageCaptionDataset(_write_json(tmp_path / "d.json", {"image": "x"}), tmp_path)
    assert "d.json" in str(info.value)
    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid JSON"):
        ImageCaptionDataset(tmp_path / "broken.json", tmp_path)
    with pytest.raises(FileNotFoundError):
        ImageCaptionDataset(tmp_path / "absent.json", tmp_path)


def test_corrupt_image_raises_value_error_naming_it(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[:60])
    ann = [
        {"image": "ok.png", "caption": "fine"},
        {"image": "corrupt.png", "caption": "bad bytes"},
        {"image": "truncated.png", "caption": "cut short"},
    ]
    ds = ImageCaptionDataset(_write_json(tmp_path / "t.json", ann), tmp_path)
    ds[0]
    for k, name in ((1, "corrupt.png"), (2, "truncated.png")):
        with pytest.raises(ValueError, match="cannot read image") as info:
            ds[k]
        assert str(tmp_path / name) in str(info.value)


def test_retrieval_eval_structures(tmp_path):
    for k in range(3):
        _png(tmp_path / f"{k}.png", (k * 50, 0, 0))
    ann = [
        {"image": "0.png", "caption": ["First, one.", "first two"]},
        {"image": "1.png", "caption": ["second"]},
        {"image": "2.png", "caption": ["third a", "third b", "Third-C!"]},
    ]
    ds = RetrievalEvalDataset(_write_json(tmp_path / "eval.json", ann), tmp_path, eval_transform(8))
    assert len(ds) == ds.num_images == 3 and ds.num_texts == 6
    assert ds.texts == ["first one", "first two", "second", "third a", "third b", "third c"]
    assert ds.text_to_image.dtype == torch.int64
    assert ds.text_to_image.tolist() == [0, 0, 1, 2, 2, 2]
    assert ds.image_to_texts == [[0, 1], [2], [3, 4, 5]]
    for i, texts in enumerate(ds.image_to_texts):
        assert all(ds.text_to_image[t] == i for t in texts)
    image, index = ds[2]
    assert index == 2 and image.shape == (3, 8, 8)
    images, indices = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert images.shape == (3, 3, 8, 8) and indices.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"image": "0.png", "caption": "a single string"}, "must be a list of strings"),
        ({"image": "0.png", "caption": []}, "empty list"),
        ({"image": "0.png", "caption": ["ok", "..."]}, "caption 1 is empty after preprocessing"),
        ({"image": "0.png", "caption": ["ok", None]}, "caption 1 must be a string"),
        ({"image": "nope.png", "caption": ["ok"]}, "image file not found"),
        ({"caption": ["ok"]}, "missing key 'image'"),
    ],
)
def test_retrieval_eval_errors(tmp_path, entry, problem):
    _png(tmp_path / "0.png")
    ann_file = _write_json(tmp_path / "eval.json", [{"image": "0.png", "caption": ["fine"]}, entry])
    with pytest.raises(ValueError, match=re.escape(problem)) as info:
        RetrievalEvalDataset(ann_file, tmp_path)
    assert str(ann_file) in str(info.value) and "entry 1" in str(info.value)


def test_zero_shot_folder_classes_labels_and_names(tmp_path):
    for folder, n in (("n02_golden_retriever", 2), ("n01_tabby_cat", 1), ("n03_go_kart", 3)):
        for j in range(n):
            _png(tmp_path / folder / f"{j}.png")
    ds = ZeroShotFolder(tmp_path)
    assert ds.classes == ["n01_tabby_cat", "n02_golden_retriever", "n03_go_kart"]
    assert ds.class_names == ["n01 tabby cat", "n02 golden retriever", "n03 go kart"]
    assert ds.targets == [0, 1, 1, 2, 2, 2] and len(ds) == 6
    image, label = ds[3]
    assert isinstance(image, Image.Image) and label == 2

    (tmp_path / "classnames.txt").write_text("tabby cat\ngolden retriever\ngo-kart\n\n")
    ds = ZeroShotFolder(tmp_path, transform=zeroshot_transform(8))
    assert ds.class_names == ["tabby cat", "golden retriever", "go-kart"]
    image, label = ds[0]
    assert image.shape == (3, 8, 8) and label == 0
    assert ZeroShotFolder(tmp_path, class_names=["a", "b", "c"]).class_names == ["a", "b", "c"]

    (tmp_path / "classnames.txt").write_text("only\ntwo\n")
    with pytest.raises(ValueError, match="2 class names for 3 class folders") as info:
        ZeroShotFolder(tmp_path)
    assert "classnames.txt" in str(info.value)


# --------------------------------------------------------------------------- templates


def test_templates():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 and t.format("x") != t for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and "itap of a {}." in IMAGENET_TEMPLATES
    assert SIMPLE_TEMPLATES == ("a photo of a {}.",)
    assert class_prompts(["cat", "dog"], SIMPLE_TEMPLATES) == [
        ["a photo of a cat."],
        ["a photo of a dog."],
    ]


# --------------------------------------------------------------------------- transforms


def test_transform_shapes_dtype_and_normalisation():
    mean_rgb = tuple(round(255 * m) for m in CLIP_MEAN)
    image = Image.new("RGB", (40, 30), mean_rgb)
    for transform in (
        train_transform(24),
        train_transform(24, randaugment=False),
        eval_transform(24),
    ):
        out = transform(image.copy())
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    assert eval_transform(24)(image).abs().max() < 0.01  # the CLIP mean maps to 0
    white = eval_transform(8)(Image.new("RGB", (10, 10), (255, 255, 255)))
    expected = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(white[:, 0, 0], expected)
    out = zeroshot_transform(16)(Image.new("RGB", (32, 20), (255, 255, 255)))
    assert out.shape == (3, 16, 16)
    torch.testing.assert_close(
        out[:, 8, 8], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    )
    assert not any(
        "RandAugment" in repr(t) for t in train_transform(24, randaugment=False).transforms
    )
    with pytest.raises(ValueError):
        train_transform(0)


def test_train_transform_reproducible_under_seeding():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    transform = train_transform(32)

    def augmented(seed):
        torch.manual_seed(seed)
        random.seed(seed)
        return transform(image)

    first = augmented(11)
    torch.testing.assert_close(augmented(11), first, rtol=0, atol=0)
    assert any(not torch.equal(augmented(s), first) for s in (12, 13, 14))


# --------------------------------------------------------------------------- synthetic


def test_synthetic_corpus_files_parse(corpus):
    root = corpus.root
    for rel in ("train.json", "eval.json", "scenes.json", "zeroshot/classnames.txt"):
        assert (root / rel).is_file()
    train = ImageCaptionDataset(corpus.train_file, corpus.image_root)
    assert len(train) == 40 and train.num_images == 40
    assert train[0]["image"].size == (32, 32)
    raw = json.loads(corpus.train_file.read_text())
    assert set(raw[0]) == {"image", "caption", "image_id"}
    assert raw[0]["image"].startswith("train/") and corpus.image_root == root / "images"

    test = RetrievalEvalDataset(corpus.eval_file, corpus.image_root)
    assert len(test) == 12 and test.num_texts == 60
    for texts in test.image_to_texts:
        assert len(texts) == 5 and len({test.texts[t] for t in texts}) == 5

    zs = ZeroShotFolder(corpus.zeroshot_root)
    assert zs.classes == sorted(SHAPES) and zs.class_names == sorted(SHAPES)
    assert len(zs) == 3 * len(SHAPES)
    assert (corpus.zeroshot_root / "classnames.txt").read_text().split() == sorted(SHAPES)
    records = json.loads(corpus.scenes_file.read_text())["zeroshot"]
    for (path, label), record in zip(zs.samples, records):
        assert path.endswith(record["image"]) and label == record["label"]
        largest = max(record["objects"], key=lambda o: o["radius"])
        assert largest["shape"] == zs.classes[label] and largest["size"] == "large"


def _mentions(caption, obj):
    words = caption.split()
    return (
        obj["shape"] in words
        and obj["color"] in words
        and any(w in words for w in SIZE_WORDS[obj["size"]])
    )


def test_synthetic_captions_mention_drawn_attributes(corpus):
    metadata = json.loads(corpus.scenes_file.read_text())
    train = ImageCaptionDataset(corpus.train_file, corpus.image_root)
    test = RetrievalEvalDataset(corpus.eval_file, corpus.image_root)
    captions = [[c] for c in train.captions] + [
        [test.texts[t] for t in ts] for ts in test.image_to_texts
    ]
    records = metadata["train"] + metadata["eval"]
    assert len(captions) == len(records)
    for texts, record in zip(captions, records):
        objects = record["objects"]
        for caption in texts:
            assert len(caption.split()) <= 30  # nothing is lost to truncation
            relation = any(r in caption for r in RELATIONS)
            for obj in objects:
                assert _mentions(caption, obj), (caption, obj)
                if not relation:  # every position is named outright
                    assert any(p in caption for p in POSITION_WORDS[obj["position"]])
            if record["background"] in caption.split():
                assert f"{record['background']} background" in caption
    # the object's colour is drawn at its centre (rings have a hole there)
    for record in metadata["train"][:10]:
        image = np.asarray(Image.open(corpus.root / record["image"]), dtype=np.int64)
        for obj in record["objects"]:
            if obj["shape"] != "ring":
                x, y = round(obj["x"] * 32 - 0.5), round(obj["y"] * 32 - 0.5)
                assert np.abs(image[y, x] - np.array(obj["rgb"])).max() <= 2


def test_synthetic_scenes_hard_negatives_and_captions():
    rng = np.random.default_rng(0)
    n_twins = 0
    for _ in range(200):
        scene = sample_scene(rng)
        assert 1 <= len(scene.objects) <= 3
        assert len({o.position for o in scene.objects}) == len(scene.objects)
        assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene
        twin = hard_negative(scene, rng)
        if twin is None:
            continue
        n_twins += 1
        assert twin != scene
        assert sorted(o.shape for o in twin.objects) == sorted(o.shape for o in scene.objects)
        assert twin.background == scene.background and twin.levels == scene.levels
        assert not np.array_equal(
            np.asarray(render_scene(twin, 32)), np.asarray(render_scene(scene, 32))
        )
        captions = scene_captions(scene, rng, 5)
        assert len(set(captions)) == 5
    assert n_twins > 150


def test_synthetic_relations_follow_positions():
    rng = np.random.default_rng(1)
    base = sample_scene(rng, 2)
    left, center = (
        replace(o, position=p, x=x, y=0.5, size="small", radius=0.09)
        for o, p, x in zip(base.objects, ("left", "center"), (0.2, 0.5))
    )
    left, center = (
        replace(left, shape="circle", color="red"),
        replace(center, shape="square", color="blue"),
    )
    scene = replace(base, objects=(left, center))
    captions = [preprocess_caption(c) for c in scene_captions(scene, rng, 7)]
    relations = [c for c in captions if any(r in c for r in RELATIONS)]
    assert relations
    for caption in relations:
        circle_first = caption.index("circle") < caption.index("square")
        assert ("to the left of" if circle_first else "to the right of") in caption, caption


def test_synthetic_corpus_hard_negatives_present(corpus):
    twins = [
        (i, s)
        for i, s in enumerate(corpus.train_scenes + corpus.eval_scenes)
        if s.twin_of is not None
    ]
    assert twins
    scenes = corpus.train_scenes
    for i, scene in ((i, s) for i, s in enumerate(scenes) if s.twin_of is not None):
        original = scenes[scene.twin_of]
        assert scene.twin_of == i - 1 and original.twin_of is None
        assert [o.shape for o in scene.objects] == [o.shape for o in original.objects]


def test_synthetic_corpus_deterministic(tmp_path):
    kwargs = {"n_train": 12, "n_eval": 4, "n_zeroshot_per_class": 1, "image_size": 24}
    a = write_synthetic_corpus(tmp_path / "a", seed=1, **kwargs)
    b = write_synthetic_corpus(tmp_path / "b", seed=1, **kwargs)
    c = write_synthetic_corpus(tmp_path / "c", seed=2, **kwargs)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    for rel in files:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    assert a.train_file.read_text() != c.train_file.read_text()
    with pytest.raises(FileExistsError):
        write_synthetic_corpus(tmp_path / "a", seed=1, **kwargs)
    again = write_synthetic_corpus(tmp_path / "a", seed=2, overwrite=True, **kwargs)
    assert again.train_file.read_text() == c.train_file.read_text()


# --------------------------------------------------------------------------- webdataset


def _images_equal(a, b, atol=0):
    diff = np.abs(np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64))
    return diff.max() <= atol


@pytest.mark.parametrize("image_format", ["png", "jpg"])
def test_webdataset_round_trip(tmp_path, image_format):
    corpus = write_synthetic_corpus(
        tmp_path / "c", n_train=25, n_eval=2, n_zeroshot_per_class=0, image_size=24,
        image_format=image_format, captions_per_train_image=2,
    )  # fmt: skip
    ds = ImageCaptionDataset(corpus.train_file, corpus.image_root)
    shards = write_webdataset_shards(
        corpus.train_file, corpus.image_root, tmp_path / "wds", samples_per_shard=16
    )
    assert len(ds) == 50
    assert [p.name for p in shards] == [f"shard-00000{k}.tar" for k in range(4)]
    sizes = json.loads((tmp_path / "wds" / "sizes.json").read_text())
    assert sizes == {p.name: n for p, n in zip(shards, (16, 16, 16, 2))}
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("000000001.json").read())
        assert tar.extractfile("000000001.txt").read().decode() == ds.annotations[1]["caption"]
    assert names[:3] == [f"000000000.{image_format}", "000000000.txt", "000000000.json"]
    assert meta["index"] == 1 and meta["image_id"] == 0 and meta["image_index"] == 0
    assert meta["caption"] == ds.annotations[1]["caption"]

    items = list(webdataset_pipeline(shards))
    assert [it["index"] for it in items] == list(range(len(ds)))
    for item in items:
        reference = ds[item["index"]]
        assert set(item) == set(reference)
        assert item["caption"] == reference["caption"]
        assert item["image_index"] == reference["image_index"]
        assert _images_equal(item["image"], reference["image"])
        scene = corpus.train_scenes[reference["image_index"]]
        drawn = np.asarray(render_scene(scene, 24), dtype=np.float64)
        error = np.abs(np.asarray(item["image"], dtype=np.float64) - drawn).mean()
        assert error == 0 if image_format == "png" else error < 4

    with pytest.raises(FileExistsError):
        write_webdataset_shards(corpus.train_file, corpus.image_root, tmp_path / "wds")
    again = write_webdataset_shards(
        corpus.train_file, corpus.image_root, tmp_path / "wds", overwrite=True
    )
    assert len(again) == 1 and not (tmp_path / "wds" / "shard-000001.tar").exists()


def test_webdataset_pipeline_workers_shuffle_and_transform(tmp_path, corpus):
    shards = write_webdataset_shards(
        corpus.train_file, corpus.image_root, tmp_path / "wds", samples_per_shard=10
    )
    urls = str(tmp_path / "wds" / "shard-{000000..000003}.tar")

    pipe = webdataset_pipeline(urls, eval_transform(16), max_words=4)
    loader = torch.utils.data.DataLoader(pipe, batch_size=8, num_workers=2)
    batches = list(loader)
    indices = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(indices) == list(range(40))  # each sample once over the two workers
    assert batches[0]["image"].shape == (8, 3, 16, 16)
    assert all(len(c.split()) <= 4 for b in batches for c in b["caption"])

    def order(seed):
        random.seed(seed)
        return [it["index"] for it in webdataset_pipeline(shards, shuffle=16)]

    assert order(3) == order(3) and sorted(order(3)) == list(range(40))
    assert order(3) != list(range(40)) and order(3) != order(4)


def test_webdataset_errors(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    ann = _write_json(
        tmp_path / "t.json",
        [{"image": "ok.png", "caption": "a"}, {"image": "bad.png", "caption": "b"}],
    )
    with pytest.raises(ValueError, match="cannot read image") as info:
        write_webdataset_shards(ann, tmp_path, tmp_path / "wds")
    assert str(tmp_path / "bad.png") in str(info.value)

    # Shards from elsewhere without the .json index are refused, naming the sample.
    with tarfile.open(tmp_path / "foreign.tar", "w") as tar:
        for name, data in (("k1.png", (tmp_path / "ok.png").read_bytes()), ("k1.txt", b"a cap")):
            info_ = tarfile.TarInfo(name)
            info_.size = len(data)
            tar.addfile(info_, io.BytesIO(data))
    with pytest.raises(ValueError, match="'index'") as info:
        list(webdataset_pipeline(tmp_path / "foreign.tar"))
    assert "k1" in str(info.value)
