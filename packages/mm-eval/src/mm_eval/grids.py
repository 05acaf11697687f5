"""Grid question answering: answer parsing, accuracy per grid position, per-position probes.

A grid of R x C cells is asked one cell at a time ("What object is in row r, column c?");
a model's continuation is scored by exact match of the answer (the first line after
``A:``) with the cell's object. :func:`grid_accuracy` reports the overall accuracy, an
R x C matrix of accuracies per position, and how often the answer names an object that is
in the grid at all (a model that reads the grid's objects but not their places scores
high there and low on accuracy). :func:`position_probes` trains one linear classifier per
grid position on frozen token features and reports held-out accuracy per position.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "cell_token_blocks",
    "grid_accuracy",
    "parse_answer",
    "plot_position_heatmap",
    "position_probes",
]

_ANSWER = re.compile(r"A:\s*")


def parse_answer(generated: str) -> str:
    """The answer in a continuation: the first line after ``A:`` (after leading blanks),
    or, when the prompt already ended with ``A:``, the first line of the continuation."""
    match = _ANSWER.search(generated)
    rest = generated[match.end() :] if match else generated.lstrip(" \t")
    return rest.split("\n", 1)[0].strip()


def grid_accuracy(
    predictions: Sequence[str],
    targets: Sequence[str],
    positions: Sequence[tuple[int, int]],
    rows: int,
    cols: int,
    grid_objects: Sequence[Collection[str]] | None = None,
) -> dict[str, object]:
    """Exact-match accuracy overall and per position, and the in-grid answer rate.

    ``predictions[k]`` (parsed answers) is scored against ``targets[k]`` at grid position
    ``positions[k] = (row, col)``; ``grid_objects[k]`` (optional) is the set of objects of
    that question's grid. Returns ``accuracy`` (in [0, 1]), ``per_position`` (a rows x cols
    list of lists, NaN where a position was never asked), ``count_per_position``, ``n`` and,
    with ``grid_objects``, ``in_grid_rate``: the share of answers naming an object of the
    grid (correct or not).
    """
    n = len(predictions)
    if len(targets) != n or len(positions) != n:
        raise ValueError(
            f"predictions, targets and positions must have one entry per question: got "
            f"{n}, {len(targets)} and {len(positions)}"
        )
    if grid_objects is not None and len(grid_objects) != n:
        raise ValueError(f"grid_objects has {len(grid_objects)} entries for {n} questions")
    if n == 0:
        raise ValueError("no questions to score")
    correct = np.zeros((rows, cols))
    count = np.zeros((rows, cols), dtype=np.int64)
    for k, (r, c) in enumerate(positions):
        if not (0 <= r < rows and 0 <= c < cols):
            raise ValueError(f"positions[{k}] = {(r, c)} is outside a {rows} x {cols} grid")
        count[r, c] += 1
        correct[r, c] += predictions[k] == targets[k]
    per_position = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
    out: dict[str, object] = {
        "accuracy": float(correct.sum() / n),
        "per_position": per_position.tolist(),
        "count_per_position": count.tolist(),
        "n": n,
    }
    if grid_objects is not None:
        out["in_grid_rate"] = float(
            np.mean([p in objects for p, objects in zip(predictions, grid_objects)])
        )
    return out


def plot_position_heatmap(
    panels: dict[str, Sequence[Sequence[float]]], path: str | Path, title: str = ""
) -> Path:
    """One heatmap per entry of ``panels`` (name -> rows x cols accuracies), side by side,
    each cell annotated with its value; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("panels is empty: nothing to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    image = None
    for ax, (name, matrix) in zip(axes[0], panels.items()):
        values = np.asarray(matrix, dtype=float)
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
        for (r, c), v in np.ndenumerate(values):
            label = "-" if math.isnan(v) else f"{v:.2f}"
            ax.text(c, r, label, ha="center", va="center", color="w" if v < 0.6 else "k")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
        ax.set_xticks(range(values.shape[1]))
        ax.set_yticks(range(values.shape[0]))
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def cell_token_blocks(num_tokens: int, rows: int, cols: int) -> list[list[int]]:
    """Token indices covering each grid cell, for tokens on a square h x h patch grid.

    Cell (r, c) takes the k x k block of patches (k = ceil(h / R) rows, likewise for the
    columns) starting at round(r (h - k) / (R - 1)): on a 7 x 7 patch grid and a 3 x 3 grid
    that is the overlapping 3 x 3 block with stride 2 (0, 2, 4); with one token per cell
    (h = R) it is that token. Returned row-major over the cells, each block row-major.
    """
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"num_tokens = {num_tokens} is not a square patch grid")
    if side < max(rows, cols):
        raise ValueError(f"a {side} x {side} patch grid cannot cover a {rows} x {cols} grid")

    def starts(cells: int) -> tuple[int, list[int]]:
        k = math.ceil(side / cells)
        if cells == 1:
            return k, [0]
        return k, [round(i * (side - k) / (cells - 1)) for i in range(cells)]

    kr, row_starts = starts(rows)
    kc, col_starts = starts(cols)
    return [
        [(r0 + i) * side + (c0 + j) for i in range(kr) for j in range(kc)]
        for r0 in row_starts
        for c0 in col_starts
    ]


def position_probes(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    max_iter: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Held-out accuracy of one linear classifier per grid position.

    ``*_features`` [N, P, D] (the concatenated tokens covering each of P positions),
    ``*_labels`` [N, P] (the class at each position). Each probe is multinomial logistic
    regression (L-BFGS, ``max_iter`` iterations) on standardised features. Returns [P].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for name, feats, labels in (
        ("train", train_features, train_labels),
        ("test", test_features, test_labels),
    ):
        if feats.ndim != 3 or labels.shape != feats.shape[:2]:
            raise ValueError(
                f"{name}_features must be [N, P, D] and {name}_labels [N, P]: got "
                f"{tuple(feats.shape)} and {tuple(labels.shape)}"
            )
    if train_features.shape[1:] != test_features.shape[1:]:
        raise ValueError(
            f"train and test features differ in [P, D]: {tuple(train_features.shape[1:])} vs "
            f"{tuple(test_features.shape[1:])}"
        )
    accuracies = np.empty(train_features.shape[1])
    for p in range(train_features.shape[1]):
        probe = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed)
        )
        probe.fit(train_features[:, p], train_labels[:, p])
        accuracies[p] = probe.score(test_features[:, p], test_labels[:, p])
    return accuracies
