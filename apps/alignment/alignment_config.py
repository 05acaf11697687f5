"""The alignment app's configs (emergence.py flags).

Importable without torch: `--help` and every config error answer before the models load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mm_train import RunOptions, arg

EMERGENCE_FILES = ("alignment.csv", "accuracy.csv", "alignment_vs_u.png", "alignment_vs_perf.png")


@dataclass
class EmergenceConfig(RunOptions):
    """Every field is a --flag of emergence.py; presets (TOML) set groups of them."""

    out: str = arg("runs/emergence", "run directory", may_change=True)
    seed: int = arg(0, "seed of the data, the labels and the heterogeneity maps")
    seeds: tuple[int, ...] = arg((0, 1), "encoder seeds: every encoder is trained once per seed")
    uniqueness: tuple[int, ...] = arg(
        (0, 1, 2, 3, 4, 5, 6, 7, 8), "U values: unique bits the label reads (0..8)", ge=0, le=8
    )
    dphi: tuple[int, ...] = arg((1, 3, 5), "heterogeneity depths D_phi of modality 2's map", ge=0)
    depths: tuple[int, ...] = arg(
        (1, 2, 3, 4), "depths D_enc of the modality-2 encoders (modality 1: depth 1)", ge=0
    )
    n_samples: int = arg(65536, "samples drawn (70/15/15 train/val/test)", ge=100)
    temperature: float = arg(0.05, "temperature T of the label softmax", gt=0)
    width: int = arg(12, "encoder width", ge=1)
    epochs_x1: int = arg(50, "epochs of the modality-1 encoders", ge=1)
    epochs_x2: int = arg(
        300, "epochs of the modality-2 encoders (--resume may extend them)", ge=1, may_change=True
    )
    batch_size: int = arg(512, "samples per step", ge=1)
    lr: float = arg(1e-2, "AdamW learning rate (modality 2)", gt=0)
    lr_x1: float = arg(1e-2, "AdamW learning rate (modality 1)", gt=0)
    weight_decay: float = arg(1e-4, "AdamW weight decay", ge=0)
    clip_grad: float = arg(8.0, "max gradient L2 norm, per encoder", gt=0)
    align_samples: int = arg(
        512, "test samples the alignment is measured on (the first ones)", ge=8
    )
    topk: int = arg(100, "neighbours of mutual_knn", ge=1)
    metrics: tuple[str, ...] = arg(("mutual_knn", "unbiased_cka"), "alignment metrics")
    log_every: int = arg(200, "steps between metric lines", ge=1, may_change=True)
    checkpoint_every: int = arg(2000, "steps between checkpoints", ge=1, may_change=True)
    keep_last: int = arg(2, "checkpoints kept", ge=1, may_change=True)
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0, may_change=True)

    def validate(self) -> None:
        """Checks across fields (before anything is written)."""
        from mm_eval.alignment import METRICS

        if not self.seeds:
            raise ValueError("--seeds must list at least one seed")
        for name in ("uniqueness", "dphi", "depths", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"--{name} lists a value twice: {list(values)}")
        if len(self.uniqueness) < 3:
            raise ValueError(
                f"--uniqueness needs >= 3 values for a rank correlation, got {list(self.uniqueness)}"
            )
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"--metrics: unknown {unknown}; known: {', '.join(METRICS)}")
        test_rows = self.n_samples * 15 // 100
        if self.align_samples > test_rows:
            raise ValueError(
                f"--align-samples {self.align_samples} exceeds the {test_rows} test samples of "
                f"--n-samples {self.n_samples}"
            )
        if self.topk >= self.align_samples:
            raise ValueError(f"--topk {self.topk} must be < --align-samples {self.align_samples}")


@dataclass
class MeasureConfig:
    """Flags of measure.py."""

    a: tuple[str, ...] = arg(
        (), "features of the first model set: .pt files, or names in --features-dir"
    )
    b: tuple[str, ...] = arg((), "features of the second model set (same samples, same order)")
    features_dir: str = arg("", "folder of <name>.pt feature files (the names given to --a/--b)")
    metric: str = arg("mutual_knn", "alignment metric (mm_eval.alignment.METRICS)")
    topk: int = arg(10, "neighbours of the kNN metrics and of cknna", ge=1)
    q: float = arg(0.95, "outlier clipping quantile of |x| (1 = off)", gt=0, le=1)
    precise: bool = arg(False, "clip at the exact global quantile instead of the per-sample mean")
    concat: bool = arg(False, "also score the concatenation of all layers (layer -1)")
    out: str = arg("runs/measure", "output folder (alignment.csv, scores.json, heatmap.png)")
    overwrite: bool = arg(False, "replace the results in --out")
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device the metrics run on")
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0)

    def validate(self) -> None:
        from mm_eval.alignment import METRICS

        if not self.a or not self.b:
            raise ValueError(
                "pass --a FEATURES... and --b FEATURES... (files or --features-dir names)"
            )
        if self.metric not in METRICS:
            raise ValueError(f"--metric {self.metric}: unknown; known: {', '.join(METRICS)}")
