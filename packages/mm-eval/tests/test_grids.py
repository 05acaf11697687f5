"""Grid QA metrics: answer parsing, per-position accuracy, token blocks, linear probes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mm_eval.grids import (
    cell_token_blocks,
    grid_accuracy,
    parse_answer,
    plot_position_heatmap,
    position_probes,
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (" bird\nWhat object", "bird"),  # the prompt ended with "A:"
        ("bird", "bird"),
        ("What object is in row 0, column 1? A: frog\nmore", "frog"),
        ("A:cat", "cat"),
        ("  horse  \n", "horse"),
        ("", ""),
    ],
)
def test_parse_answer_takes_the_first_line_after_a(text, answer):
    assert parse_answer(text) == answer


def test_grid_accuracy_matches_a_per_question_count():
    rng = np.random.default_rng(0)
    rows, cols, n = 3, 4, 400
    names = ["a", "b", "c", "d"]
    positions = [(int(rng.integers(rows)), int(rng.integers(cols))) for _ in range(n)]
    targets = [names[int(rng.integers(4))] for _ in range(n)]
    predictions = [t if rng.random() < 0.6 else names[int(rng.integers(4))] for t in targets]
    objects = [set(rng.choice(names, size=2, replace=False)) | {t} for t in targets]
    out = grid_accuracy(predictions, targets, positions, rows, cols, objects)
    assert out["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predictions, targets)]))
    for r in range(rows):
        for c in range(cols):
            asked = [k for k in range(n) if positions[k] == (r, c)]
            assert out["count_per_position"][r][c] == len(asked)
            want = np.mean([predictions[k] == targets[k] for k in asked])
            assert out["per_position"][r][c] == pytest.approx(want)
    assert out["in_grid_rate"] == pytest.approx(
        np.mean([p in o for p, o in zip(predictions, objects)])
    )
    assert out["n"] == n


def test_grid_accuracy_marks_unasked_positions_and_rejects_bad_input():
    out = grid_accuracy(["x"], ["x"], [(0, 0)], 2, 2)
    assert out["per_position"][0][0] == 1.0 and math.isnan(out["per_position"][1][1])
    assert "in_grid_rate" not in out
    with pytest.raises(ValueError, match="one entry per question"):
        grid_accuracy(["x"], ["x", "y"], [(0, 0)], 2, 2)
    with pytest.raises(ValueError, match=r"positions\[0\] = \(2, 0\) is outside a 2 x 2 grid"):
        grid_accuracy(["x"], ["x"], [(2, 0)], 2, 2)
    with pytest.raises(ValueError, match="no questions"):
        grid_accuracy([], [], [], 2, 2)


def test_cell_token_blocks_on_a_7x7_patch_grid_are_overlapping_3x3_blocks_with_stride_2():
    blocks = cell_token_blocks(49, 3, 3)
    assert len(blocks) == 9 and all(len(b) == 9 for b in blocks)
    for cell, block in enumerate(blocks):
        r0, c0 = 2 * (cell // 3), 2 * (cell % 3)
        want = [(r0 + i) * 7 + c0 + j for i in range(3) for j in range(3)]
        assert block == want


def test_cell_token_blocks_with_one_token_per_cell_is_the_identity():
    assert cell_token_blocks(9, 3, 3) == [[k] for k in range(9)]
    assert cell_token_blocks(16, 2, 2) == [
        [0, 1, 4, 5],
        [2, 3, 6, 7],
        [8, 9, 12, 13],
        [10, 11, 14, 15],
    ]
    with pytest.raises(ValueError, match="not a square"):
        cell_token_blocks(10, 3, 3)
    with pytest.raises(ValueError, match="cannot cover"):
        cell_token_blocks(4, 3, 3)


def test_position_probes_find_the_encoded_positions_only():
    """Position 0's class is linearly encoded in its features, position 1's is not."""
    rng = np.random.default_rng(0)
    n, dim, classes = 600, 8, 4
    labels = rng.integers(classes, size=(n, 2))
    centres = rng.normal(size=(classes, dim)) * 3.0
    feats = rng.normal(size=(n, 2, dim))
    feats[:, 0] += centres[labels[:, 0]]
    acc = position_probes(feats[:400], labels[:400], feats[400:], labels[400:])
    assert acc.shape == (2,)
    assert acc[0] > 0.95
    assert acc[1] < 0.25 + 4 * math.sqrt(0.25 * 0.75 / 200)  # chance, within 4 standard errors
    with pytest.raises(ValueError, match=r"train_features must be \[N, P, D\]"):
        position_probes(feats[:, 0], labels, feats, labels)
    with pytest.raises(ValueError, match="differ in"):
        position_probes(feats, labels, feats[:, :1], labels[:, :1])


def test_heatmap_is_written(tmp_path):
    path = plot_position_heatmap(
        {"text": [[1.0, 0.5], [0.0, float("nan")]], "image": [[0.2, 0.3], [0.4, 0.5]]},
        tmp_path / "h.png",
        title="accuracy",
    )
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="empty"):
        plot_position_heatmap({}, tmp_path / "x.png")
