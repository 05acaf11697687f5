"""The alignment app's configs (emergence.py flags).

Importable without torch: `--help` and every config error answer before the models load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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


FINETUNE_FILES = ("tokenizer", "model", "probe.json")


@dataclass
class FinetuneConfig(RunOptions):
    """Flags of clip_finetune.py: one fine-tune, or (--sweep) one trial per clip weight."""

    out: str = arg("runs/clip-finetune", "run directory (a sweep: one trial folder per weight)",
                   may_change=True)  # fmt: skip
    seed: int = arg(42, "seed")
    data_root: str = arg(
        "data/mmimdb-mini",
        "MM-IMDb root (split.json, dataset/); an absent folder gets a generated miniature",
    )
    class_idx: int = arg(19, "genre of the binary task (index in the 23 genres; 19 = Western)",
                         ge=0, le=22)  # fmt: skip
    train_ids: int = arg(0, "labelled training movies (the first of the train split; 0 = all; "
                         "the paper: 1024)", ge=0)  # fmt: skip
    eval_ids: int = arg(0, "dev and test movies (the first of each split; 0 = all; the paper: 1024)",
                        ge=0)  # fmt: skip
    unlabeled: int = arg(0, "more train-split movies as unlabelled pairs (contrastive term only)",
                         ge=0)  # fmt: skip
    clip_weight: float = arg(1.0, "loss = BCE(text head) + clip_weight x InfoNCE", ge=0)
    image_model: str = arg("vit_tiny_patch16_224", "timm image tower (built from its config)")
    image_weights: str = arg("", "local timm weights of the image tower ('' = random init)")
    image_size: int = arg(48, "image side (RandomResizedCrop 0.5-1 for training)", ge=8)
    image_patch: int = arg(8, "ViT patch size (0 = the model's own)", ge=0)
    image_depth: int = arg(2, "ViT blocks (0 = the model's own)", ge=0)
    image_width: int = arg(64, "ViT width (0 = the model's own)", ge=0)
    text_model: str = arg("tiny", "tiny (a 2-layer DistilBERT from config) or a local HF folder")
    tokenizer: str = arg("", "local tokenizer folder ('' = WordPiece trained on the captions)")
    vocab_size: int = arg(2000, "vocabulary of the trained tokenizer", ge=16)
    max_tokens: int = arg(64, "caption tokens", ge=4)
    embed_dim: int = arg(64, "shared embedding size (the paper's towers: 512)", ge=1)
    lr: float = arg(1e-4, "AdamW peak learning rate", gt=0)
    weight_decay: float = arg(0.01, "AdamW weight decay (none on 1-D and bias parameters)", ge=0)
    warmup_epochs: int = arg(10, "linear warmup from 1e-6, in epochs", ge=0)
    epochs: int = arg(30, "epochs (cosine to 1e-6 after the warmup)", ge=1, may_change=True)
    batch_size: int = arg(64, "pairs per step", ge=2)
    workers: int = arg(0, "DataLoader worker processes", ge=0, may_change=True)
    log_every: int = arg(10, "steps between metric lines", ge=1, may_change=True)
    keep_last: int = arg(2, "checkpoints kept", ge=1, may_change=True)
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0, may_change=True)
    # ---- the clip_weight sweep
    sweep: tuple[float, ...] = arg(
        (), "clip weights of a sweep (e.g. 0 0.1 0.25 0.5 1 2 5 10): one trial each", ge=0
    )
    launcher: Literal["ray", "local"] = arg(
        "ray", "ray: parallel trials on a Ray cluster; local: one trial at a time here"
    )
    ray_address: str = arg("", "address of a running Ray cluster ('' = start one in-process)")
    ray_cpus: int = arg(0, "CPUs of the in-process Ray instance (0 = all of this machine)", ge=0)
    trial_cpus: float = arg(1.0, "CPUs per trial", gt=0)
    trial_gpus: float = arg(0.0, "GPUs per trial (the authors: 0.25)", ge=0)

    def validate(self) -> None:
        if len(set(self.sweep)) != len(self.sweep):
            raise ValueError(f"--sweep lists a weight twice: {list(self.sweep)}")
        if self.text_model != "tiny" and not Path(self.text_model).is_dir():
            raise ValueError(f"--text-model {self.text_model}: not 'tiny' nor a local folder")
        if self.image_weights and not Path(self.image_weights).is_file():
            raise ValueError(f"--image-weights {self.image_weights} is not a file")
        if self.image_patch and self.image_size % self.image_patch:
            raise ValueError(
                f"--image-size {self.image_size} is not a multiple of --image-patch {self.image_patch}"
            )


@dataclass
class MMIMDbConfig:
    """Flags of mmimdb.py."""

    data_root: str = arg("data/mmimdb-mini", "MM-IMDb root (an absent folder gets a miniature)")
    ids: int = arg(1024, "movies per split (the first of each; 0 = all)", ge=0)
    lms: tuple[str, ...] = arg((), "local causal-LM folders (save_pretrained)")
    vits: tuple[str, ...] = arg(
        (), "timm ViTs as NAME or NAME:WEIGHTS (a local state_dict); NAME alone is random init"
    )
    demo: bool = arg(False, "build small random-init GPT-2s and ViTs under OUT/models and use them")
    metric: str = arg("mutual_knn", "alignment metric")
    topk: int = arg(10, "neighbours of the kNN metrics", ge=1)
    q: float = arg(0.95, "outlier clipping quantile (1 = off)", gt=0, le=1)
    image_size: int = arg(224, "poster side fed to the ViTs", ge=8)
    batch_size: int = arg(32, "feature-extraction batch", ge=1)
    probe_epochs: int = arg(100, "epochs of the genre probe", ge=1)
    out: str = arg("runs/mmimdb", "output folder (features are cached in OUT/features)")
    overwrite: bool = arg(False, "replace the tables in --out (cached features are kept)")
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device")
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0)

    def validate(self) -> None:
        if not self.demo and (not self.lms or not self.vits):
            raise ValueError("pass --lms DIR... and --vits NAME[:WEIGHTS]... (or --demo)")
        if not self.demo and len(self.lms) < 3:
            raise ValueError(f"--lms: a correlation across LMs needs >= 3, got {len(self.lms)}")
        for path in self.lms:
            if not Path(path).is_dir():
                raise ValueError(f"--lms {path} is not a folder")
        for spec in self.vits:
            _, _, weights = spec.partition(":")
            if weights and not Path(weights).is_file():
                raise ValueError(f"--vits {spec}: weights file {weights} does not exist")


@dataclass
class PerturbConfig:
    """Flags of perturb.py."""

    annotations: str = arg("", "image-caption JSON ([{image, caption}, ...]) ('' with --demo)")
    images_root: str = arg("", "folder the annotations' image paths are relative to")
    samples: int = arg(1024, "pairs used (the first of the annotations; 0 = all)", ge=0)
    lms: tuple[str, ...] = arg((), "local causal-LM folders (save_pretrained)")
    vits: tuple[str, ...] = arg((), "timm ViTs as NAME or NAME:WEIGHTS (a local state_dict)")
    demo: bool = arg(False, "a generated scene corpus and small random-init models")
    levels: tuple[int, ...] = arg(
        (10, 20, 30, 40, 50, 60, 70, 80, 90, 100), "uniqueness levels u, percent", ge=0, le=100
    )
    rewriter: str = arg("rule", "rule | char:delete|replace|permute | module:callable | file.json")
    metric: str = arg("mutual_knn", "alignment metric")
    topk: int = arg(10, "neighbours of the kNN metrics", ge=1)
    q: float = arg(0.95, "outlier clipping quantile (1 = off)", gt=0, le=1)
    concat: bool = arg(True, "also score the concatenation of all layers")
    image_size: int = arg(224, "image side fed to the ViTs", ge=8)
    batch_size: int = arg(32, "feature-extraction batch", ge=1)
    seed: int = arg(0, "seed of the rewriter")
    out: str = arg("runs/perturb", "output folder (features cached in OUT/features)")
    overwrite: bool = arg(False, "replace the tables in --out (cached features are kept)")
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device")
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0)

    def validate(self) -> None:
        if not self.demo:
            if not self.annotations or not Path(self.annotations).is_file():
                raise ValueError(f"--annotations {self.annotations!r} is not a file (or --demo)")
            if not self.lms or not self.vits:
                raise ValueError("pass --lms DIR... and --vits NAME[:WEIGHTS]... (or --demo)")
        if len(self.levels) < 3:
            raise ValueError(
                f"--levels needs >= 3 values for a rank correlation, got {list(self.levels)}"
            )
