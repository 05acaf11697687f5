"""Tests for mm_data.grids: configs, sampling, text form, picture sources, rendering, data sets."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from mm_data.grids import (
    GRID_CONFIGS,
    SPLITS,
    Cifar10Source,
    DigitsSource,
    Grid,
    GridConfig,
    GridDataset,
    PictureSource,
    SpriteSource,
    answer_text,
    grid_config,
    grid_objects,
    grid_rows_text,
    instruction_text,
    make_source,
    question_text,
    read_grid_split,
    render_grid,
    sample_grid,
    sample_grid_group,
    sample_texts,
    single_question_grids,
    write_grid_dataset,
)

CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
EXAMPLE = (
    "| bird | frog | frog |\n"
    "| cat | bird | bird |\n"
    "| horse | bird | bird |\n"
    "The grid above is size 3 by 3. Each cell contains an object from "
    "['horse', 'bird', 'cat', 'frog'].\n"
    "What object is in row 2, column 2? A: bird\n"
    "What object is in row 0, column 1? A: frog\n"
)


def _idx(*names):
    """CIFAR class indices of names."""
    return tuple(CIFAR_NAMES.index(n) for n in names)


def _example_grid(**kwargs):
    """The hand-built grid of the module docstring (subset horse, bird, cat, frog, deer)."""
    cells = _idx("bird", "frog", "frog", "cat", "bird", "bird", "horse", "bird", "bird")
    return Grid(
        rows=3,
        cols=3,
        cells=cells,
        subset=_idx("horse", "bird", "cat", "frog", "deer"),
        questions=((2, 2), (0, 1)),
        **kwargs,
    )


def _reference_rows(cells, cols, names):
    """Text rows built cell by cell."""
    out = ""
    for p, k in enumerate(cells):
        if p % cols == 0:
            out += "|"
        out += " " + names[k] + " |"
        if p % cols == cols - 1:
            out += "\n"
    return out


def _parse_rows(text):
    """The class names of text rows, row by row."""
    rows = []
    for line in text.splitlines():
        assert line.startswith("| ") and line.endswith(" |"), line
        rows.append(line[2:-2].split(" | "))
    return rows


# ---------------------------------------------------------------------------------------
# Text form
# ---------------------------------------------------------------------------------------


def test_text_form_matches_the_example_exactly():
    grid = _example_grid()
    texts = sample_texts(grid, CIFAR_NAMES, image=False)
    assert texts["full_text"] == EXAMPLE
    assert texts["prompt"] == EXAMPLE[: EXAMPLE.index("What")]
    assert texts["qa"] == [
        ("What object is in row 2, column 2? A:", " bird\n"),
        ("What object is in row 0, column 1? A:", " frog\n"),
    ]
    assert texts["prompt"] + "".join(p + a for p, a in texts["qa"]) == texts["full_text"]
    image = sample_texts(grid, CIFAR_NAMES, image=True)
    assert image["full_text"] == EXAMPLE[EXAMPLE.index("The grid") :]
    assert image["qa"] == texts["qa"]
    assert grid_rows_text(grid, CIFAR_NAMES) == EXAMPLE[: EXAMPLE.index("The grid")]
    assert question_text(2, 2) + answer_text("bird") + "\n" == EXAMPLE.splitlines(True)[4]
    assert instruction_text(grid, CIFAR_NAMES, object_order="appearance").endswith(
        "['bird', 'frog', 'cat', 'horse'].\n"
    )
    transcribe = sample_texts(grid, CIFAR_NAMES, image=True, task="transcribe")
    assert transcribe["qa"] == [("", EXAMPLE[: EXAMPLE.index("The grid")])]
    assert transcribe["prompt"] == image["prompt"]
    for line in texts["full_text"].splitlines(True):
        assert line.endswith("\n")


@pytest.mark.parametrize(
    "cfg",
    [
        GridConfig(),
        GRID_CONFIGS["v2"],
        GridConfig(rows=2, cols=4, subset_size=3, num_questions=5),
        GridConfig(rows=4, cols=2, subset_size=7, num_questions=8, object_order="appearance"),
    ],
)
def test_sampled_grids_against_references(cfg):
    rng = np.random.default_rng(7)
    n_cells = cfg.rows * cfg.cols
    for _ in range(150):
        grid = sample_grid(cfg, CIFAR_NAMES, rng)
        assert len(grid.cells) == n_cells
        assert len(grid.subset) == cfg.subset_size == len(set(grid.subset))
        assert all(0 <= k < len(CIFAR_NAMES) for k in grid.subset)
        assert all(k in grid.subset for k in grid.cells)
        assert len(grid.questions) == cfg.num_questions == len(set(grid.questions))
        assert all(0 <= r < cfg.rows and 0 <= c < cfg.cols for r, c in grid.questions)
        texts = sample_texts(grid, CIFAR_NAMES, image=False, object_order=cfg.object_order)
        lines = texts["full_text"].splitlines(True)
        rows = "".join(lines[: cfg.rows])
        assert rows == _reference_rows(grid.cells, cfg.cols, CIFAR_NAMES)
        assert _parse_rows(rows) == [
            [CIFAR_NAMES[grid.cells[r * cfg.cols + c]] for c in range(cfg.cols)]
            for r in range(cfg.rows)
        ]
        listed = grid_objects(grid, CIFAR_NAMES, object_order=cfg.object_order)
        present = {CIFAR_NAMES[k] for k in grid.cells}
        assert set(listed) == present and len(listed) == len(present)
        if cfg.object_order == "subset":
            expected = [CIFAR_NAMES[k] for k in grid.subset if CIFAR_NAMES[k] in present]
        else:
            expected = []
            for k in grid.cells:
                if CIFAR_NAMES[k] not in expected:
                    expected.append(CIFAR_NAMES[k])
        assert listed == expected
        assert lines[cfg.rows] == (
            f"The grid above is size {cfg.rows} by {cfg.cols}. Each cell contains an object "
            f"from {expected}.\n"
        )
        for (r, c), line, (prefix, answer) in zip(
            grid.questions, lines[cfg.rows + 1 :], texts["qa"]
        ):
            name = CIFAR_NAMES[grid.cells[r * cfg.cols + c]]
            assert line == f"What object is in row {r}, column {c}? A: {name}\n"
            assert (prefix, answer) == (line[: line.index("A:") + 2], f" {name}\n")
        assert len(lines) == cfg.rows + 1 + cfg.num_questions


def test_all_cells_asked_is_a_permutation_and_sampling_is_seeded():
    cfg = GridConfig(rows=3, cols=4, num_questions=12)
    grid = sample_grid(cfg, CIFAR_NAMES, np.random.default_rng(3))
    assert sorted(grid.questions) == [(r, c) for r in range(3) for c in range(4)]
    assert sample_grid(cfg, CIFAR_NAMES, np.random.default_rng(3)) == grid
    assert sample_grid(cfg, CIFAR_NAMES, np.random.default_rng(4)) != grid
    # A subset class may go undrawn: the object list then has fewer names.
    sizes = {
        len(
            grid_objects(
                sample_grid(GridConfig(), CIFAR_NAMES, np.random.default_rng(s)), CIFAR_NAMES
            )
        )
        for s in range(60)
    }
    assert max(sizes) == 5 and min(sizes) < 5


# ---------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------


def test_spurious_class_frequency_at_origin():
    cfg = GRID_CONFIGS["spurious"]
    cat = CIFAR_NAMES.index("cat")
    rng = np.random.default_rng(11)
    n = 2000
    grids = [sample_grid(cfg, CIFAR_NAMES, rng) for _ in range(n)]
    assert all(cat in g.subset and len(g.subset) == cfg.subset_size for g in grids)
    hits = sum(g.cells[0] == cat for g in grids)
    tolerance = 4 * math.sqrt(0.9 * 0.1 / n)
    assert abs(hits / n - 0.9) < tolerance
    # The class's position in the subset (and the object list) is random.
    assert len({g.subset.index(cat) for g in grids}) == cfg.subset_size
    # Other cells are uniform over the subset: cat elsewhere about 1 / 5 of the time.
    elsewhere = np.mean([g.cells[p] == cat for g in grids for p in range(1, 9)])
    assert abs(elsewhere - 0.2) < 4 * math.sqrt(0.2 * 0.8 / (8 * n)) + 0.01
    never = replace(cfg, spurious_prob=0.0)
    assert all(sample_grid(never, CIFAR_NAMES, rng).cells[0] != cat for _ in range(200))
    always = replace(cfg, spurious_prob=1.0)
    assert all(sample_grid(always, CIFAR_NAMES, rng).cells[0] == cat for _ in range(200))


@pytest.mark.parametrize("mismatch_questions", [False, True])
def test_mismatch_corrupts_exactly_k_text_cells(mismatch_questions):
    cfg = GridConfig(mismatch_cells=2, mismatch_questions=mismatch_questions)
    rng = np.random.default_rng(5)
    source = _PatternSource(len(CIFAR_NAMES))
    for _ in range(100):
        grid = sample_grid(cfg, CIFAR_NAMES, rng)
        changed = [p for p in range(9) if grid.text_cells[p] != grid.cells[p]]
        assert len(changed) == 2 == len(grid.text_overrides)
        assert all(0 <= grid.text_cells[p] < len(CIFAR_NAMES) for p in changed)
        assert all(k in grid.subset for k in grid.cells)  # the truth is untouched
        rows = _parse_rows(grid_rows_text(grid, CIFAR_NAMES))
        assert [CIFAR_NAMES.index(n) for row in rows for n in row] == list(grid.text_cells)
        listed = grid_objects(grid, CIFAR_NAMES)
        assert set(listed) == {CIFAR_NAMES[k] for k in grid.text_cells}
        image_listed = grid_objects(grid, CIFAR_NAMES, image=True)
        assert set(image_listed) == {CIFAR_NAMES[k] for k in grid.cells}
        qa = sample_texts(grid, CIFAR_NAMES, image=False)["qa"]
        answers = grid.text_cells if mismatch_questions else grid.cells
        for (r, c), (_, answer) in zip(grid.questions, qa):
            assert answer == f" {CIFAR_NAMES[answers[r * 3 + c]]}\n"
    # The picture shows the truth: the same as the grid without overrides.
    clean = replace(grid, text_overrides=())
    a, ids = render_grid(grid, source, "train", np.random.default_rng(0), 10, 2, 40)
    b, _ = render_grid(clean, source, "train", picture_ids=ids, cell_px=10, gap_px=2, canvas_px=40)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert source.calls[-9:] == list(grid.cells)


def test_single_and_multi_instruction_have_the_same_qa(tmp_path):
    multi = GridConfig(num_questions=4)
    single = replace(multi, format="single")
    a = write_grid_dataset(tmp_path / "m", multi, CIFAR_NAMES, 3, 0, 0, images=False)
    b = write_grid_dataset(tmp_path / "s", single, CIFAR_NAMES, 3, 0, 0, images=False)
    ra, rb = read_grid_split(a.root, "train"), read_grid_split(b.root, "train")
    assert len(ra) == 3 and len(rb) == 12 == b.num_records["train"]
    assert all(len(r["qa"]) == 1 for r in rb) and all(len(r["qa"]) == 4 for r in ra)
    qa_a = [(r["grid_index"], q, pair) for r in ra for q, pair in zip(r["questions"], r["qa"])]
    qa_b = [(r["grid_index"], r["questions"][0], r["qa"][0]) for r in rb]
    assert qa_a == qa_b
    for r in rb:  # the grid is repeated in every single-instruction sample
        assert r["prompt_text"] == ra[r["grid_index"]]["prompt_text"]
    grid = Grid.from_dict(ra[0])
    assert [g.questions for g in single_question_grids(grid)] == [(q,) for q in grid.questions]


def test_a_third_distinct_images(tmp_path):
    cfg = GRID_CONFIGS["images_third"]
    assert cfg.samples_per_grid == 3
    group = sample_grid_group(cfg, CIFAR_NAMES, np.random.default_rng(0))
    assert len(group) == 3 and len({g.cells for g in group}) == 1
    questions = [set(g.questions) for g in group]
    assert all(len(q) == cfg.num_questions for q in questions)
    assert not (
        questions[0] & questions[1] or questions[0] & questions[2] or questions[1] & questions[2]
    )
    corpus = write_grid_dataset(tmp_path / "t", cfg, CIFAR_NAMES, 6, 7, 0, images=False)
    assert corpus.num_grids == {"train": 2, "val": 3, "test": 0}
    train = read_grid_split(corpus.root, "train")
    assert [r["grid_index"] for r in train] == [0, 0, 0, 1, 1, 1]
    assert [r["grid_index"] for r in read_grid_split(corpus.root, "val")] == [0, 0, 0, 1, 1, 1, 2]
    for g in (0, 1):
        triple = [r for r in train if r["grid_index"] == g]
        assert len({tuple(r["cells"]) for r in triple}) == 1
        asked = [tuple(map(tuple, r["questions"])) for r in triple]
        assert len(set().union(*asked)) == 3 * cfg.num_questions
    with pytest.raises(ValueError, match=r"num_questions = 12.*rows \* cols = 9"):
        GridConfig(num_questions=4, distinct_image_ratio=1 / 3)
    # The grid (cells, subset) of a 1/3 group is the one sample_grid would draw.
    g = sample_grid(replace(cfg, distinct_image_ratio=1.0), CIFAR_NAMES, np.random.default_rng(0))
    assert (g.cells, g.subset) == (group[0].cells, group[0].subset)


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rows": 0}, "rows"),
        ({"cols": 2.5}, "cols"),
        ({"subset_size": 0}, "subset_size"),
        ({"num_questions": 10}, "num_questions"),
        ({"spurious_prob": 1.5}, "spurious_prob"),
        ({"spurious_class": "cat", "subset_size": 1}, "subset_size"),
        ({"spurious_class": ""}, "spurious_class"),
        ({"mismatch_cells": -1}, "mismatch_cells"),
        ({"mismatch_cells": 10}, "mismatch_cells"),
        ({"task": "caption"}, "task"),
        ({"format": "both"}, "format"),
        ({"distinct_image_ratio": 0.5}, "distinct_image_ratio"),
        ({"task": "transcribe", "format": "single"}, "format"),
        ({"task": "transcribe", "num_questions": 3, "distinct_image_ratio": 1 / 3}, "transcribe"),
        ({"object_order": "sorted"}, "object_order"),
    ],
)
def test_config_validation_names_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        GridConfig(**fields)


def test_named_configs():
    assert GRID_CONFIGS["v3"] == GridConfig(rows=3, cols=3, subset_size=5, num_questions=9)
    v2 = GRID_CONFIGS["v2"]
    assert (v2.rows, v2.cols, v2.subset_size, v2.num_questions) == (5, 5, 5, 10)
    assert set(GRID_CONFIGS) == {
        "v3", "v2", "spurious", "mismatch", "transcribe", "qa3", "qa6", "images_third",
        "single_instruction",
    }  # fmt: skip
    assert GRID_CONFIGS["qa3"].num_questions == 3 and GRID_CONFIGS["qa6"].num_questions == 6
    assert GRID_CONFIGS["single_instruction"].format == "single"
    assert GRID_CONFIGS["transcribe"].task == "transcribe"
    assert GRID_CONFIGS["mismatch"].mismatch_cells > 0
    assert grid_config("v3", rows=4).rows == 4
    with pytest.raises(ValueError, match="unknown grid config 'v9'"):
        grid_config("v9")
    for cfg in GRID_CONFIGS.values():  # every named config samples on the CIFAR-10 names
        assert len(sample_grid_group(cfg, CIFAR_NAMES, np.random.default_rng(0))) >= 1


def test_vocabulary_errors():
    with pytest.raises(ValueError, match=r"subset_size 5 needs at least 5 class names, got 4"):
        sample_grid(GridConfig(), CIFAR_NAMES[:4], np.random.default_rng(0))
    with pytest.raises(ValueError, match="spurious_class 'cat' is not in class_names"):
        sample_grid(GRID_CONFIGS["spurious"], ["a", "b", "c", "d", "e"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="distinct"):
        sample_grid(GridConfig(), ["a", "b", "c", "d", "a"], np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"class_names\[2\]"):
        sample_grid(GridConfig(), ["a", "b", "c|d", "e", "f"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="cells"):
        Grid(rows=2, cols=2, cells=(0, 1, 2), subset=(0, 1, 2), questions=())
    with pytest.raises(ValueError, match="not in the subset"):
        Grid(rows=1, cols=2, cells=(0, 3), subset=(0, 1), questions=())
    with pytest.raises(ValueError, match="outside"):
        Grid(rows=1, cols=2, cells=(0, 1), subset=(0, 1), questions=((1, 0),))
    with pytest.raises(ValueError, match="override must change"):
        Grid(rows=1, cols=2, cells=(0, 1), subset=(0, 1), questions=(), text_overrides=((1, 1),))


# ---------------------------------------------------------------------------------------
# Pictures and rendering
# ---------------------------------------------------------------------------------------


class _PatternSource(PictureSource):
    """Noise pictures keyed by (class, split, k), with a log of the classes drawn."""

    name = "pattern"

    def __init__(self, n_classes, size=13):
        super().__init__([f"c{i}" for i in range(n_classes)])
        self.size = size
        self.calls = []

    def _pool_size(self, class_index, split):
        return 4

    def _picture(self, class_index, split, k):
        self.calls.append(class_index)
        rng = np.random.default_rng([class_index, SPLITS.index(split), k])
        return Image.fromarray(rng.integers(1, 256, (self.size, self.size, 3), dtype=np.uint8))


def test_render_geometry_is_pixel_exact():
    source = _PatternSource(6)
    grid = Grid(rows=2, cols=3, cells=(0, 1, 2, 3, 4, 5), subset=(0, 1, 2, 3, 4, 5), questions=())
    cell, gap, canvas = 20, 3, 70
    image, ids = render_grid(grid, source, "val", np.random.default_rng(1), cell, gap, canvas)
    assert image.mode == "RGB" and image.size == (canvas, canvas)
    assert len(ids) == 6 and all(0 <= k < 4 for k in ids)
    pixels = np.asarray(image)
    covered = np.zeros((canvas, canvas), bool)
    for p, (k, pid) in enumerate(zip(grid.cells, ids)):
        r, c = divmod(p, 3)
        x, y = c * (cell + gap), r * (cell + gap)
        expected = source.picture(k, "val", pid).resize((cell, cell), Image.Resampling.LANCZOS)
        assert np.array_equal(pixels[y : y + cell, x : x + cell], np.asarray(expected))
        covered[y : y + cell, x : x + cell] = True
    assert not pixels[~covered].any()  # gaps and the margin are black
    assert not pixels[cell : cell + gap].any() and not pixels[:, cell : cell + gap].any()
    again, _ = render_grid(grid, source, "val", np.random.default_rng(1), cell, gap, canvas)
    assert np.array_equal(np.asarray(again), pixels)
    # Default geometry: 3 x 81 + 2 x 6 = 255 <= 256.
    v3 = sample_grid(GridConfig(), source.class_names, np.random.default_rng(0))
    assert render_grid(v3, source, "train", np.random.default_rng(0))[0].size == (256, 256)


def test_render_errors():
    source = _PatternSource(6)
    grid = Grid(rows=3, cols=3, cells=(0,) * 9, subset=(0,), questions=())
    with pytest.raises(
        ValueError, match=r"rows=3 x cols=3 .*cell_px=81 and gap_px=7 .*canvas_px=256"
    ):
        render_grid(grid, source, "train", np.random.default_rng(0), 81, 7, 256)
    big = Grid(rows=1, cols=1, cells=(8,), subset=(8,), questions=())
    with pytest.raises(ValueError, match="has 6 classes; the grid needs class index 8"):
        render_grid(big, source, "train", np.random.default_rng(0))
    with pytest.raises(ValueError, match="split"):
        render_grid(grid, source, "dev", np.random.default_rng(0))
    with pytest.raises(ValueError, match="outside the train pool"):
        source.picture(0, "train", 4)


@pytest.fixture(scope="module")
def digits():
    return DigitsSource(size=16)


def test_digits_pools_are_disjoint_and_exact(digits):
    from sklearn.datasets import load_digits

    data = load_digits()
    assert digits.class_names[:3] == ["zero", "one", "two"] and digits.num_classes == 10
    total = 0
    for c in range(10):
        pools = {s: digits.pool_indices(c, s) for s in SPLITS}
        members = np.flatnonzero(data.target == c)
        assert np.array_equal(np.concatenate([pools[s] for s in SPLITS]), members)
        assert pools["train"].max() < pools["val"].min() <= pools["val"].max() < pools["test"].min()
        n = len(members)
        assert abs(len(pools["train"]) - 0.6 * n) <= 1 and abs(len(pools["val"]) - 0.2 * n) <= 1
        assert digits.pool_size(c, "test") == len(pools["test"])
        total += n
    assert total == 1797
    picture = digits.picture(3, "val", 2)
    assert picture.mode == "RGB" and picture.size == (16, 16)
    raw = data.images[digits.pool_indices(3, "val")[2]]
    expected = np.kron(np.round(raw * 255 / 16), np.ones((2, 2)))  # nearest upscale, x2
    assert np.array_equal(np.asarray(picture)[:, :, 0], expected.astype(np.uint8))
    assert np.array_equal(np.asarray(picture)[:, :, 0], np.asarray(picture)[:, :, 2])
    assert np.asarray(picture)[0, 0, 0] == 0  # white digit on black


def test_sprite_pools_are_disjoint_and_deterministic():
    source = SpriteSource(size=16, pool_sizes={"train": 50, "val": 10, "test": 10})
    assert source.class_names[:2] == ["circle", "square"] and source.num_classes == 10
    assert source.pool_size(0, "train") == 50 and source.pool_size(0, "val") == 10
    for c in range(10):
        hashes = {
            s: {hashlib.sha1(source.picture(c, s, k).tobytes()).hexdigest() for k in range(6)}
            for s in SPLITS
        }
        assert all(len(h) == 6 for h in hashes.values())
        assert not (hashes["train"] & hashes["val"] or hashes["train"] & hashes["test"])
        assert not hashes["val"] & hashes["test"]
    a = source.picture(4, "test", 3)
    assert a.mode == "RGB" and a.size == (16, 16)
    assert a.tobytes() == SpriteSource(size=16).picture(4, "test", 3).tobytes()
    assert a.tobytes() != SpriteSource(size=16, seed=1).picture(4, "test", 3).tobytes()
    with pytest.raises(ValueError, match="pool_sizes"):
        SpriteSource(pool_sizes={"train": 5})


def _write_fake_cifar(root, n_classes=3, per_batch=6, seed=0):
    """Five training batches, a test batch and batches.meta in the CIFAR-10 pickle format."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    batches = []
    for i in range(1, 6):
        labels = [int(v) for v in rng.permutation(np.arange(per_batch) % n_classes)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": labels,
            b"data": data,
        }
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
        batches.append(batch)
    test = {b"labels": [0] * 2, b"data": np.zeros((2, 3072), np.uint8)}
    (root / "test_batch").write_bytes(pickle.dumps(test))
    names = [f"class{c}".encode() for c in range(n_classes)]
    meta = {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta))
    return batches


FAKE_POOLS = {"train": (0, 3), "val": (4, 6), "test": (7, 10)}


def test_cifar10_source_on_a_fake_batch_directory(tmp_path):
    batches = _write_fake_cifar(tmp_path / "cifar")
    source = Cifar10Source(tmp_path / "cifar", pools=FAKE_POOLS)
    assert source.class_names == ["class0", "class1", "class2"]
    # Reference: walk the batches in order, rank each class's pictures by hand.
    rows, ranks = [], {c: [] for c in range(3)}
    for batch in batches:
        for label, row in zip(batch[b"labels"], batch[b"data"]):
            ranks[label].append(len(rows))
            rows.append(row)
    for c in range(3):
        seen = set()
        for split, (start, stop) in FAKE_POOLS.items():
            expected = ranks[c][start:stop]
            assert list(source.pool_indices(c, split)) == expected
            assert source.pool_size(c, split) == len(expected)
            assert not seen & set(expected)
            seen |= set(expected)
            for k, position in enumerate(expected):
                picture = source.picture(c, split, k)
                assert picture.mode == "RGB" and picture.size == (32, 32)
                planes = rows[position].reshape(3, 32, 32)  # R, G, B planes, row-major
                assert np.array_equal(np.asarray(picture), planes.transpose(1, 2, 0))
    assert isinstance(make_source("cifar10", tmp_path / "cifar", pools=FAKE_POOLS), Cifar10Source)
    with pytest.raises(ValueError, match=r"class 0 .* none at ranks 1000\.\.1999 for the val pool"):
        Cifar10Source(
            tmp_path / "cifar", pools={"train": (0, 3), "val": (1000, 2000), "test": (3000, 4000)}
        )
    with pytest.raises(ValueError, match="overlap"):
        Cifar10Source(tmp_path / "cifar", pools={"train": (0, 5), "val": (4, 6), "test": (7, 9)})
    (tmp_path / "cifar" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        Cifar10Source(tmp_path / "cifar", pools=FAKE_POOLS)
    (tmp_path / "cifar" / "batches.meta").write_bytes(pickle.dumps({b"other": 1}))
    with pytest.raises(ValueError, match=r"batches.meta: missing key b'label_names'"):
        Cifar10Source(tmp_path / "cifar", pools=FAKE_POOLS)


def test_make_source(digits):
    assert isinstance(make_source("sprites"), SpriteSource)
    assert isinstance(make_source("digits", size=8), DigitsSource)
    with pytest.raises(ValueError, match="needs root"):
        make_source("cifar10")
    with pytest.raises(ValueError, match="unknown picture source 'mnist'"):
        make_source("mnist")


# ---------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------

RENDER = {"cell_px": 16, "gap_px": 2, "canvas_px": 52}


def _tree(root):
    """{relative path: bytes} of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_dataset_roundtrip(tmp_path):
    source = SpriteSource(size=12, pool_sizes={"train": 20, "val": 5, "test": 5})
    cfg = GridConfig(num_questions=3)
    corpus = write_grid_dataset(tmp_path / "d", cfg, source, 4, 2, 1, seed=3, **RENDER)
    assert corpus.num_records == {"train": 4, "val": 2, "test": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp directory left
    meta = json.loads(corpus.meta_file.read_text())
    assert meta["config"] == cfg.to_dict() and meta["source"]["name"] == "sprites"
    assert meta["class_names"] == source.class_names and meta["seed"] == 3
    assert meta["sizes"] == {"train": 4, "val": 2, "test": 1} and meta["render"] == RENDER
    for split in SPLITS:
        records = read_grid_split(corpus.root, split)
        data = GridDataset(corpus.root, split)
        assert len(data) == len(records) == corpus.num_samples[split]
        for i, record in enumerate(records):
            code = SPLITS.index(split)
            grid = sample_grid(cfg, source.class_names, np.random.default_rng([3, code, i, 1]))
            assert Grid.from_dict(record) == grid == data.grid(i)
            texts = sample_texts(grid, source.class_names, image=True)
            assert (
                record["prompt_text"] == texts["prompt"]
                and record["full_text"] == texts["full_text"]
            )
            assert [tuple(p) for p in record["qa"]] == texts["qa"]
            assert record["rows_text"] == grid_rows_text(grid, source.class_names)
            assert record["image_file"] == f"images/{split}/{i}.png"
            item = data[i]
            expected, _ = render_grid(
                grid, source, split, picture_ids=record["picture_ids"], **RENDER
            )
            assert item["image"].mode == "RGB"
            assert np.array_equal(np.asarray(item["image"]), np.asarray(expected))
            assert {k: v for k, v in item.items() if k != "image"} == record
    shapes = GridDataset(corpus.root, "train", transform=lambda im: np.asarray(im).shape)
    assert shapes[-1]["image"] == (52, 52, 3) and shapes.class_names == source.class_names
    with pytest.raises(IndexError):
        shapes[4]


def test_dataset_write_once_and_mismatch(tmp_path):
    source = SpriteSource(size=12, pool_sizes={"train": 20, "val": 5, "test": 5})
    cfg = GridConfig(num_questions=2)
    root = tmp_path / "d"
    write_grid_dataset(root, cfg, source, 2, 1, 1, **RENDER)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    again = write_grid_dataset(root, cfg, source, 2, 1, 1, **RENDER)
    assert again.root == root and {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    with pytest.raises(ValueError, match=r"differing keys: \['sizes.train'\]"):
        write_grid_dataset(root, cfg, source, 3, 1, 1, **RENDER)
    with pytest.raises(ValueError, match=r"\['config.num_questions', 'config.rows'\]"):
        write_grid_dataset(root, replace(cfg, rows=2, num_questions=3), source, 2, 1, 1, **RENDER)
    with pytest.raises(ValueError, match=r"render\.cell_px"):
        write_grid_dataset(root, cfg, source, 2, 1, 1, cell_px=15, gap_px=2, canvas_px=52)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="busy"):
        write_grid_dataset(tmp_path / "busy", cfg, CIFAR_NAMES, 1, 1, 1, images=False)
    with pytest.raises(ValueError, match="needs a PictureSource"):
        write_grid_dataset(tmp_path / "e", cfg, CIFAR_NAMES, 1, 1, 1)
    with pytest.raises(ValueError, match="n_val"):
        write_grid_dataset(tmp_path / "e", cfg, CIFAR_NAMES, 1, -1, 1, images=False)
    with pytest.raises(ValueError, match="canvas_px=40"):
        write_grid_dataset(tmp_path / "e", cfg, source, 1, 1, 1, cell_px=16, gap_px=2, canvas_px=40)
    assert not (tmp_path / "e").exists()


def test_dataset_determinism_and_split_independence(tmp_path):
    source = SpriteSource(size=12, pool_sizes={"train": 20, "val": 5, "test": 5})
    cfg = GridConfig(num_questions=2, mismatch_cells=1)
    a = write_grid_dataset(tmp_path / "a", cfg, source, 3, 2, 1, seed=9, **RENDER)
    b = write_grid_dataset(tmp_path / "b", cfg, source, 3, 2, 1, seed=9, **RENDER)
    assert _tree(a.root) == _tree(b.root)
    c = write_grid_dataset(tmp_path / "c", cfg, source, 5, 2, 0, seed=9, **RENDER)
    ta, tc = _tree(a.root), _tree(c.root)
    assert ta["val.jsonl"] == tc["val.jsonl"] and ta["images/val/1.png"] == tc["images/val/1.png"]
    assert tc["train.jsonl"].startswith(ta["train.jsonl"])
    text = write_grid_dataset(tmp_path / "t", cfg, source, 3, 2, 1, seed=9, images=False)
    for split in SPLITS:  # the text form holds the same grids and questions
        for ri, rt in zip(
            read_grid_split(a.root, split), read_grid_split(text.root, split), strict=True
        ):
            assert Grid.from_dict(ri) == Grid.from_dict(rt)
            assert rt["form"] == "text" and "image_file" not in rt
            assert rt["prompt_text"] == rt["rows_text"] + instruction_text(
                Grid.from_dict(rt), source.class_names
            )
    other = write_grid_dataset(tmp_path / "o", cfg, source, 3, 2, 1, seed=10, images=False)
    assert _tree(other.root)["train.jsonl"] != _tree(text.root)["train.jsonl"]


def test_malformed_files_are_named(tmp_path):
    source = SpriteSource(size=12, pool_sizes={"train": 20, "val": 5, "test": 5})
    corpus = write_grid_dataset(
        tmp_path / "d", GridConfig(num_questions=1), source, 3, 1, 1, **RENDER
    )
    train = corpus.split_files["train"]
    lines = train.read_text().splitlines(True)
    train.write_text(lines[0] + lines[1][:-10] + "\n" + lines[2])
    with pytest.raises(ValueError, match=rf"{train}: line 2: not valid JSON"):
        read_grid_split(corpus.root, "train")
    with pytest.raises(ValueError, match=rf"{train}: line 2"):
        GridDataset(corpus.root, "train")
    train.write_text(lines[0] + "[1, 2]\n")
    with pytest.raises(ValueError, match="line 2: expected a JSON object, got list"):
        read_grid_split(corpus.root, "train")
    (corpus.root / "images" / "val" / "0.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"val.jsonl: line 1: image file not found: .*0.png"
    ):
        GridDataset(corpus.root, "val")
    (corpus.root / "images" / "test" / "0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*test/0.png"):
        GridDataset(corpus.root, "test")[0]
    with pytest.raises(FileNotFoundError, match="grid split file not found"):
        read_grid_split(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        read_grid_split(corpus.root, "dev")
