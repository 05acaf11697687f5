"""Grids of objects and their text form: configs, sampling and the prompt / answer texts.

A grid has ``rows x cols`` cells. Each grid draws ``subset_size`` distinct classes of the
object vocabulary (its subset), then fills every cell uniformly at random from the subset.
Rows and columns count from 0. The text form of a grid with its questions is

    | bird | frog | frog |
    | cat | bird | bird |
    | horse | bird | bird |
    The grid above is size 3 by 3. Each cell contains an object from ['horse', 'bird', 'cat', 'frog'].
    What object is in row 2, column 2? A: bird
    What object is in row 0, column 1? A: frog

with every line ending in ``"\\n"``. In the image form a picture of the grid replaces the
rows, and the instruction and question lines stay text. The object list names the objects
that occur in the grid shown (so it can hold fewer than ``subset_size`` names). By default
(``object_order="subset"``) the names are in the subset's drawn order, which is random.
The alternative, ``"appearance"``, lists them in order of first appearance reading the grid
row-major. That order gives away the object in cell (0, 0) and part of the layout, so it
leaks information into the image form.

Loss masking: a question line ``What object is in row 2, column 2? A: bird\\n`` is split
into the prompt part ``What object is in row 2, column 2? A:`` and the answer target
`` bird\\n`` (leading space, trailing newline). ``sample_texts`` returns those pairs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "GRID_CONFIGS",
    "OBJECT_ORDERS",
    "TASKS",
    "Grid",
    "GridConfig",
    "answer_text",
    "check_class_names",
    "grid_config",
    "grid_objects",
    "grid_rows_text",
    "instruction_text",
    "question_text",
    "rows_text",
    "sample_grid",
    "sample_grid_group",
    "sample_texts",
    "single_question_grids",
    "transcription_text",
]

TASKS = ("qa", "transcribe")
FORMATS = ("multi", "single")
OBJECT_ORDERS = ("subset", "appearance")
_THIRD = 1 / 3


def _is_third(ratio: float) -> bool:
    """Whether ratio is 1/3 (up to float rounding)."""
    return math.isclose(ratio, _THIRD, rel_tol=0.0, abs_tol=1e-9)


@dataclass(frozen=True)
class GridConfig:
    """How grids, their questions and their samples are drawn (see the module docstring).

    - ``spurious_class``: a class name forced into cell (0, 0) with probability
      ``spurious_prob``; its grids' subsets hold it plus ``subset_size - 1`` other classes,
      and when it is not forced, cell (0, 0) takes one of the others, so it sits at (0, 0)
      with probability exactly ``spurious_prob``.
    - ``mismatch_cells``: k distinct cells whose text form shows another class of the
      vocabulary; pictures keep the truth. With ``mismatch_questions`` the answers (and the
      transcription target) of those cells follow the corrupted text; else they follow the
      truth.
    - ``task``: ``"qa"`` (questions and answers) or ``"transcribe"`` (the target is the grid
      rows as text; the questions are drawn but not asked).
    - ``format``: ``"multi"`` (one sample holds the grid, the instruction and all its Q/A
      pairs) or ``"single"`` (one Q/A pair per sample, the grid repeated; same Q/A count).
    - ``distinct_image_ratio``: 1.0 (each sample has its own grid) or 1/3 (each grid serves
      3 samples with disjoint question sets; needs ``3 * num_questions <= rows * cols``).
    - ``object_order``: the order of the instruction's object list, ``"subset"`` or
      ``"appearance"``.
    """

    rows: int = 3
    cols: int = 3
    subset_size: int = 5
    num_questions: int = 9
    spurious_class: str | None = None
    spurious_prob: float = 0.9
    mismatch_cells: int = 0
    mismatch_questions: bool = False
    task: str = "qa"
    format: str = "multi"
    distinct_image_ratio: float = 1.0
    object_order: str = "subset"

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "subset_size", "num_questions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        n_cells = self.rows * self.cols
        if self.num_questions > n_cells:
            raise ValueError(
                f"num_questions must be <= rows * cols = {self.rows} * {self.cols} = {n_cells}, "
                f"got {self.num_questions}"
            )
        if self.spurious_class is not None:
            if not isinstance(self.spurious_class, str) or not self.spurious_class:
                raise ValueError(
                    f"spurious_class must be a non-empty class name or None, got "
                    f"{self.spurious_class!r}"
                )
            if self.subset_size < 2:
                raise ValueError(
                    f"subset_size must be >= 2 with a spurious_class, got {self.subset_size}"
                )
        if not 0.0 <= self.spurious_prob <= 1.0:
            raise ValueError(f"spurious_prob must be in [0, 1], got {self.spurious_prob!r}")
        if (
            not isinstance(self.mismatch_cells, int)
            or isinstance(self.mismatch_cells, bool)
            or not 0 <= self.mismatch_cells <= n_cells
        ):
            raise ValueError(
                f"mismatch_cells must be an integer in 0..rows * cols = {n_cells}, got "
                f"{self.mismatch_cells!r}"
            )
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.object_order not in OBJECT_ORDERS:
            raise ValueError(
                f"object_order must be one of {OBJECT_ORDERS}, got {self.object_order!r}"
            )
        ratio = self.distinct_image_ratio
        if not (ratio == 1.0 or _is_third(ratio)):
            raise ValueError(f"distinct_image_ratio must be 1.0 or 1/3, got {ratio!r}")
        if _is_third(ratio) and 3 * self.num_questions > n_cells:
            raise ValueError(
                f"distinct_image_ratio 1/3 needs 3 disjoint question sets: 3 * num_questions = "
                f"{3 * self.num_questions} must be <= rows * cols = {n_cells}"
            )
        if self.task == "transcribe" and self.format != "multi":
            raise ValueError(
                f"format must be 'multi' with task 'transcribe' (no questions), got {self.format!r}"
            )
        if self.task == "transcribe" and _is_third(ratio):
            raise ValueError(
                "distinct_image_ratio must be 1.0 with task 'transcribe' (its samples of one "
                "grid would have one target)"
            )

    @property
    def samples_per_grid(self) -> int:
        """Multi-instruction samples drawn from one grid: 1, or 3 when the ratio is 1/3."""
        return 3 if _is_third(self.distinct_image_ratio) else 1

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


_V3 = GridConfig()
GRID_CONFIGS: dict[str, GridConfig] = {
    "v3": _V3,
    "v2": GridConfig(rows=5, cols=5, subset_size=5, num_questions=10),
    # "cat" is a CIFAR-10 class; for another vocabulary replace spurious_class.
    "spurious": dataclasses.replace(_V3, spurious_class="cat", spurious_prob=0.9),
    "mismatch": dataclasses.replace(_V3, mismatch_cells=1),
    "transcribe": dataclasses.replace(_V3, task="transcribe"),
    "qa3": dataclasses.replace(_V3, num_questions=3),
    "qa6": dataclasses.replace(_V3, num_questions=6),
    "images_third": dataclasses.replace(_V3, num_questions=3, distinct_image_ratio=_THIRD),
    "single_instruction": dataclasses.replace(_V3, format="single"),
}


def grid_config(name: str, **overrides: Any) -> GridConfig:
    """The named config of GRID_CONFIGS with some fields replaced."""
    if name not in GRID_CONFIGS:
        raise ValueError(f"unknown grid config {name!r}; known: {sorted(GRID_CONFIGS)}")
    return dataclasses.replace(GRID_CONFIGS[name], **overrides)


@dataclass(frozen=True)
class Grid:
    """One grid: true cells (class indices, row-major), its subset, questions and text edits.

    ``questions`` are (row, col) cells in asking order. ``text_overrides`` are (flat cell
    position, class index) pairs that the text form shows instead of the truth (mismatch
    variant). ``corrupt_answers`` makes the answers of those cells follow the text.
    """

    rows: int
    cols: int
    cells: tuple[int, ...]
    subset: tuple[int, ...]
    questions: tuple[tuple[int, int], ...]
    text_overrides: tuple[tuple[int, int], ...] = ()
    corrupt_answers: bool = False

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"rows and cols must be >= 1, got {self.rows} and {self.cols}")
        n_cells = self.rows * self.cols
        if len(self.cells) != n_cells:
            raise ValueError(
                f"cells: expected rows * cols = {n_cells} class indices, got {len(self.cells)}"
            )
        if len(set(self.subset)) != len(self.subset):
            raise ValueError(f"subset: class indices must be distinct, got {self.subset}")
        outside = sorted({c for c in self.cells if c not in self.subset})
        if outside:
            raise ValueError(f"cells: classes {outside} are not in the subset {self.subset}")
        for r, c in self.questions:
            if not (0 <= r < self.rows and 0 <= c < self.cols):
                raise ValueError(
                    f"questions: cell ({r}, {c}) is outside a {self.rows} x {self.cols} grid"
                )
        if len(set(self.questions)) != len(self.questions):
            raise ValueError(f"questions: cells must be distinct, got {self.questions}")
        positions = [p for p, _ in self.text_overrides]
        if len(set(positions)) != len(positions):
            raise ValueError(f"text_overrides: positions must be distinct, got {positions}")
        for p, k in self.text_overrides:
            if not 0 <= p < n_cells:
                raise ValueError(f"text_overrides: position {p} is outside 0..{n_cells - 1}")
            if k == self.cells[p]:
                raise ValueError(
                    f"text_overrides: position {p} keeps its true class {k}; an override must "
                    "change it"
                )

    def cell(self, row: int, col: int) -> int:
        """The true class index of cell (row, col)."""
        return self.cells[row * self.cols + col]

    @property
    def text_cells(self) -> tuple[int, ...]:
        """The class indices the text form shows (the truth with text_overrides applied)."""
        cells = list(self.cells)
        for p, k in self.text_overrides:
            cells[p] = k
        return tuple(cells)

    @property
    def answer_cells(self) -> tuple[int, ...]:
        """The class indices answers are taken from: text_cells if corrupt_answers, else cells."""
        return self.text_cells if self.corrupt_answers else self.cells

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists)."""
        return {
            "rows": self.rows,
            "cols": self.cols,
            "cells": list(self.cells),
            "subset": list(self.subset),
            "questions": [list(q) for q in self.questions],
            "text_overrides": [list(o) for o in self.text_overrides],
            "corrupt_answers": self.corrupt_answers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        """The inverse of to_dict."""
        return cls(
            rows=int(data["rows"]),
            cols=int(data["cols"]),
            cells=tuple(int(c) for c in data["cells"]),
            subset=tuple(int(c) for c in data["subset"]),
            questions=tuple((int(r), int(c)) for r, c in data["questions"]),
            text_overrides=tuple((int(p), int(k)) for p, k in data.get("text_overrides", ())),
            corrupt_answers=bool(data.get("corrupt_answers", False)),
        )


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------


def check_class_names(cfg: GridConfig, class_names: Sequence[str]) -> None:
    """ValueError unless the vocabulary suits cfg and every name fits in a text row."""
    names = list(class_names)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class_names[{i}] must be a non-empty string, got {name!r}")
        if "|" in name or "\n" in name or name != name.strip():
            raise ValueError(
                f"class_names[{i}] = {name!r}: a class name must not contain '|' or a newline "
                "or start or end with a space (it would break the text rows)"
            )
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class_names must be distinct; repeated: {duplicates}")
    if len(names) < cfg.subset_size:
        raise ValueError(
            f"subset_size {cfg.subset_size} needs at least {cfg.subset_size} class names, got "
            f"{len(names)}"
        )
    if cfg.spurious_class is not None and cfg.spurious_class not in names:
        raise ValueError(f"spurious_class {cfg.spurious_class!r} is not in class_names {names}")
    if cfg.mismatch_cells > 0 and len(names) < 2:
        raise ValueError("mismatch_cells > 0 needs at least 2 class names to corrupt a cell")


def sample_grid(cfg: GridConfig, class_names: Sequence[str], rng: np.random.Generator) -> Grid:
    """One grid with cfg.num_questions questions, drawn from rng.

    Draw order: subset, cells, cell (0, 0) when spurious, mismatched cells and their classes,
    then the questions (a random permutation of the cells, first num_questions).
    """
    check_class_names(cfg, class_names)
    return _sample_grid(cfg, len(class_names), list(class_names), rng, cfg.num_questions)


def _sample_grid(
    cfg: GridConfig,
    vocab_size: int,
    class_names: list[str],
    rng: np.random.Generator,
    n_questions: int,
) -> Grid:
    """sample_grid without the vocabulary checks, asking n_questions cells."""
    n_cells = cfg.rows * cfg.cols
    spurious = None if cfg.spurious_class is None else class_names.index(cfg.spurious_class)
    if spurious is None:
        subset = [int(k) for k in rng.choice(vocab_size, size=cfg.subset_size, replace=False)]
    else:
        others = [k for k in range(vocab_size) if k != spurious]
        drawn = rng.choice(len(others), size=cfg.subset_size - 1, replace=False)
        members = [spurious, *(others[int(j)] for j in drawn)]
        subset = [members[int(j)] for j in rng.permutation(len(members))]
    cells = [subset[int(j)] for j in rng.integers(cfg.subset_size, size=n_cells)]
    if spurious is not None:
        if rng.random() < cfg.spurious_prob:
            cells[0] = spurious
        else:
            rest = [k for k in subset if k != spurious]
            cells[0] = rest[int(rng.integers(len(rest)))]
    overrides: list[tuple[int, int]] = []
    if cfg.mismatch_cells > 0:
        positions = sorted(int(p) for p in rng.choice(n_cells, cfg.mismatch_cells, replace=False))
        for p in positions:
            j = int(rng.integers(vocab_size - 1))
            overrides.append((p, j if j < cells[p] else j + 1))  # any class but the true one
    order = rng.permutation(n_cells)[:n_questions]
    questions = tuple((int(p) // cfg.cols, int(p) % cfg.cols) for p in order)
    return Grid(
        rows=cfg.rows,
        cols=cfg.cols,
        cells=tuple(cells),
        subset=tuple(subset),
        questions=questions,
        text_overrides=tuple(overrides),
        corrupt_answers=cfg.mismatch_questions and cfg.mismatch_cells > 0,
    )


def sample_grid_group(
    cfg: GridConfig, class_names: Sequence[str], rng: np.random.Generator
) -> list[Grid]:
    """The multi-instruction samples of one grid: cfg.samples_per_grid grids sharing cells.

    With distinct_image_ratio 1/3, 3 * num_questions distinct cells are drawn and cut into
    three disjoint question sets of num_questions each, in drawn order.
    """
    check_class_names(cfg, class_names)
    n = cfg.samples_per_grid
    grid = _sample_grid(cfg, len(class_names), list(class_names), rng, n * cfg.num_questions)
    q = cfg.num_questions
    return [
        dataclasses.replace(grid, questions=grid.questions[i * q : (i + 1) * q]) for i in range(n)
    ]


def single_question_grids(grid: Grid) -> list[Grid]:
    """The single-instruction samples of a grid: one per question, in asking order."""
    return [dataclasses.replace(grid, questions=(q,)) for q in grid.questions]


# ---------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------


def rows_text(cells: Sequence[int], cols: int, class_names: Sequence[str]) -> str:
    """Row-major class indices as text rows: ``| bird | frog | frog |\\n`` per row."""
    lines = []
    for start in range(0, len(cells), cols):
        names = " | ".join(class_names[k] for k in cells[start : start + cols])
        lines.append(f"| {names} |\n")
    return "".join(lines)


def grid_rows_text(grid: Grid, class_names: Sequence[str]) -> str:
    """The text rows of the grid as the text form shows them (text_cells)."""
    return rows_text(grid.text_cells, grid.cols, class_names)


def transcription_text(grid: Grid, class_names: Sequence[str]) -> str:
    """The transcription target: the text rows of the answer cells."""
    return rows_text(grid.answer_cells, grid.cols, class_names)


def grid_objects(
    grid: Grid, class_names: Sequence[str], *, image: bool = False, object_order: str = "subset"
) -> list[str]:
    """Names of the objects in the grid shown (true cells if image, else text cells), ordered.

    ``"subset"``: in the order of grid.subset (classes outside it, from text overrides,
    follow in order of first appearance); ``"appearance"``: order of first appearance,
    row-major.
    """
    if object_order not in OBJECT_ORDERS:
        raise ValueError(f"object_order must be one of {OBJECT_ORDERS}, got {object_order!r}")
    cells = grid.cells if image else grid.text_cells
    present = list(dict.fromkeys(cells))  # first appearance, row-major
    if object_order == "subset":
        present = [k for k in grid.subset if k in present] + [
            k for k in present if k not in grid.subset
        ]
    return [class_names[k] for k in present]


def instruction_text(
    grid: Grid, class_names: Sequence[str], *, image: bool = False, object_order: str = "subset"
) -> str:
    """``The grid above is size R by C. Each cell contains an object from [...].\\n``"""
    objects = grid_objects(grid, class_names, image=image, object_order=object_order)
    return (
        f"The grid above is size {grid.rows} by {grid.cols}. "
        f"Each cell contains an object from {objects!r}.\n"
    )


def question_text(row: int, col: int) -> str:
    """``What object is in row r, column c?``"""
    return f"What object is in row {row}, column {col}?"


def answer_text(name: str) -> str:
    """`` A: name``: what follows the question on its line (the newline excluded)."""
    return f" A: {name}"


def sample_texts(
    grid: Grid,
    class_names: Sequence[str],
    image: bool,
    *,
    task: str = "qa",
    object_order: str = "subset",
) -> dict[str, Any]:
    """The texts of one sample: ``prompt``, ``qa`` (prefix, target) pairs and ``full_text``.

    prompt = the text rows (text form only) + the instruction. For ``task="qa"``, one pair
    per question: (``What object is in row r, column c? A:``, `` name\\n``); for
    ``"transcribe"``, one pair ("", transcription rows). full_text = prompt followed by the
    pairs, so the loss can be masked to the targets.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    prompt = "" if image else grid_rows_text(grid, class_names)
    prompt += instruction_text(grid, class_names, image=image, object_order=object_order)
    if task == "transcribe":
        qa = [("", transcription_text(grid, class_names))]
    else:
        answers = grid.answer_cells
        qa = []
        for r, c in grid.questions:
            name = class_names[answers[r * grid.cols + c]]
            line = question_text(r, c) + answer_text(name) + "\n"
            cut = len(question_text(r, c)) + len(" A:")
            qa.append((line[:cut], line[cut:]))
    return {
        "prompt": prompt,
        "qa": qa,
        "full_text": prompt + "".join(p + a for p, a in qa),
    }
