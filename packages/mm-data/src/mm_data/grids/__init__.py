"""Synthetic object grids in text and image form, for comparing VLM and LM answers.

``generator``: configs, grid sampling and the prompt / answer texts; ``pictures``: object
picture sources (scikit-learn digits, procedural sprites, CIFAR-10) and grid rendering;
``dataset``: the on-disk JSONL + PNG data set and its reader. This code does not use torch.
"""

from __future__ import annotations

from mm_data.grids.dataset import (
    META_FILE,
    GridCorpus,
    GridDataset,
    read_grid_split,
    write_grid_dataset,
)
from mm_data.grids.generator import (
    FORMATS,
    GRID_CONFIGS,
    OBJECT_ORDERS,
    TASKS,
    Grid,
    GridConfig,
    answer_text,
    check_class_names,
    grid_config,
    grid_objects,
    grid_rows_text,
    instruction_text,
    question_text,
    rows_text,
    sample_grid,
    sample_grid_group,
    sample_texts,
    single_question_grids,
    transcription_text,
)
from mm_data.grids.pictures import (
    CIFAR10_POOLS,
    DIGIT_NAMES,
    SOURCES,
    SPLITS,
    SPRITE_NAMES,
    Cifar10Source,
    DigitsSource,
    PictureSource,
    SpriteSource,
    check_grid_fits,
    make_source,
    render_grid,
)

__all__ = [
    "CIFAR10_POOLS",
    "DIGIT_NAMES",
    "FORMATS",
    "GRID_CONFIGS",
    "META_FILE",
    "OBJECT_ORDERS",
    "SOURCES",
    "SPLITS",
    "SPRITE_NAMES",
    "TASKS",
    "Cifar10Source",
    "DigitsSource",
    "Grid",
    "GridConfig",
    "GridCorpus",
    "GridDataset",
    "PictureSource",
    "SpriteSource",
    "answer_text",
    "check_class_names",
    "check_grid_fits",
    "grid_config",
    "grid_objects",
    "grid_rows_text",
    "instruction_text",
    "make_source",
    "question_text",
    "read_grid_split",
    "render_grid",
    "rows_text",
    "sample_grid",
    "sample_grid_group",
    "sample_texts",
    "single_question_grids",
    "transcription_text",
    "write_grid_dataset",
]
