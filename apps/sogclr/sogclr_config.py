"""The sogclr app's configs (train.py, eval.py and prepare_data.py flags), importable
without torch: `--help` and every config error answer before the models load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mm_train import RunOptions, arg, flag

Loss = Literal[
    "clip", "sogclr", "isogclr", "info_sogclr", "hybrid_sogclr", "vicreg", "cyclip", "onlineclr",
    "siglip",
]  # fmt: skip
LOSSES = Loss.__args__
# The loss hyper-parameters each loss takes (the others are not passed, so a loss never
# receives an argument it would ignore).
LOSS_FIELDS = {
    "clip": ("tau",),
    "cyclip": ("tau",),
    "siglip": (),
    "sogclr": ("tau", "gamma", "tau_min", "tau_max"),
    "isogclr": ("tau", "gamma", "rho", "eta", "beta", "tau_min", "tau_max"),
    "info_sogclr": ("tau", "gamma", "tau_min", "tau_max"),
    "hybrid_sogclr": ("tau", "gamma", "tau_min", "tau_max"),
    "vicreg": (),
    "onlineclr": ("tau",),
}
STATEFUL = ("sogclr", "isogclr", "info_sogclr", "hybrid_sogclr")


@dataclass
class DataOptions:
    """Where the image-caption data is; the synthetic corpus is generated on first use."""

    root: str = arg("data/sogclr-synthetic", "data root (synthetic corpus written here if empty)")
    train_file: str = arg("train.json", "training annotations, relative to the root")
    train_images: str = arg("images", "image root of the training annotations")
    eval_file: str = arg("eval.json", "COCO-style retrieval annotations ('' = none)")
    eval_images: str = arg("images", "image root of the retrieval annotations")
    zeroshot_dir: str = arg("zeroshot", "ImageFolder tree for zero-shot classification ('' = none)")
    shards: str = arg(
        "",
        "WebDataset shards instead of train_file (brace pattern, e.g. 'shards/shard-{000000..000019}.tar')",
    )
    shard_samples: int = arg(
        0, "number of samples in the shards (required with --data.shards)", ge=0
    )
    templates: Literal["imagenet", "simple"] = arg("simple", "zero-shot prompt templates")
    synthetic_train: int = arg(4_000, "synthetic corpus: training pairs", ge=1)
    synthetic_eval: int = arg(1_000, "synthetic corpus: retrieval images (5 captions each)", ge=1)
    synthetic_zeroshot: int = arg(50, "synthetic corpus: zero-shot images per class", ge=1)
    synthetic_size: int = arg(32, "synthetic corpus: image side in pixels", ge=16)
    synthetic_seed: int = arg(0, "synthetic corpus: seed")


@dataclass
class SogCLRConfig(RunOptions):
    """Every field is a --flag of train.py; presets (TOML) set groups of them."""

    out: str = arg("runs/sogclr", "run directory (config, metrics, checkpoints)", may_change=True)
    seed: int = arg(42, "seed (rank r trains with seed + r)")
    # ---- data
    data: DataOptions = arg(default_factory=DataOptions)
    image_size: int = arg(64, "training / evaluation image side", ge=16)
    randaugment: bool = arg(True, "RandAugment(2, 7) in the training transform")
    max_words: int = arg(30, "captions are cut to this many words", ge=1)
    max_tokens: int = arg(30, "tokenizer max length", ge=4)
    workers: int = arg(2, "DataLoader worker processes", ge=0, may_change=True)
    # ---- model
    image_model: str = arg("resnet18", "timm image model (built from its config)")
    image_weights: str = arg("", "local timm checkpoint of the image model ('' = random init)")
    text_model: str = arg(
        "tiny", "text model: 'tiny', 'distilbert' (configs) or a local HF directory"
    )
    tokenizer: str = arg(
        "", "local tokenizer directory ('' = train a WordPiece one on the captions)"
    )
    vocab_size: int = arg(4000, "vocabulary of a trained tokenizer", ge=100)
    embed_dim: int = arg(256, "joint embedding dimension", ge=1)
    init_from: str = arg(
        "", "start from the trained encoder and tokenizer of a train.py run directory"
    )
    # ---- loss
    loss: Loss = arg("sogclr", "objective: " + " | ".join(LOSSES))
    tau: float = arg(0.01, "temperature (initial per-sample tau for isogclr)", gt=0)
    gamma: float = arg(0.8, "SogCLR moving-average weight", gt=0, le=1)
    rho: float = arg(6.0, "iSogCLR DRO weight", ge=0)
    eta: float = arg(0.01, "iSogCLR temperature step size", ge=0)
    beta: float = arg(0.9, "iSogCLR temperature momentum", gt=0, le=1)
    tau_min: float = arg(0.005, "lower bound of adaptive temperatures", gt=0)
    tau_max: float = arg(1.0, "upper bound of adaptive temperatures", gt=0)
    # ---- optimisation
    epochs: int = arg(6, "epochs", ge=1, may_change=True)
    batch_size: int = arg(
        32, "samples per step per process (global batch = this x processes)", ge=2
    )
    lr: float = arg(2e-4, "AdamW peak learning rate", gt=0)
    weight_decay: float = arg(0.02, "AdamW weight decay (>= 2-D weights only)", ge=0)
    warmup_steps: int = arg(200, "linear warmup from --warmup-lr", ge=0)
    warmup_lr: float = arg(1e-5, "learning rate at step 0", ge=0)
    min_lr: float = arg(1e-6, "learning rate at the end of the cosine", ge=0)
    grad_accum: int = arg(1, "micro-batches per optimizer step", ge=1)
    clip_grad: float = arg(0.0, "gradient-norm clipping (0 = off, as the original)", ge=0)
    amp: Literal["off", "bf16", "fp16"] = arg("off", "autocast on CUDA")
    # ---- logging, evaluation
    log_every: int = arg(50, "steps between metrics.jsonl lines", ge=1, may_change=True)
    eval_every_epochs: int = arg(
        1, "retrieval + zero-shot evaluation every N epochs", ge=1, may_change=True
    )
    keep_last: int = arg(2, "checkpoints kept (one per epoch)", ge=1, may_change=True)
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0, may_change=True)

    def validate(self) -> None:
        """Checks across fields and of the data directory."""
        if self.tau_min > self.tau_max:
            raise ValueError(
                f"{flag('tau_min')} {self.tau_min} exceeds {flag('tau_max')} {self.tau_max}"
            )
        if self.loss in ("sogclr", "isogclr", "info_sogclr", "hybrid_sogclr") and not (
            self.tau_min <= self.tau <= self.tau_max
        ):
            raise ValueError(
                f"{flag('tau')} {self.tau} must lie in [{flag('tau_min')}, {flag('tau_max')}] = "
                f"[{self.tau_min}, {self.tau_max}] for --loss {self.loss}"
            )
        if self.data.shards and self.data.shard_samples < 1:
            raise ValueError("--data.shards needs --data.shard-samples (the number of samples)")
        if self.init_from and not (Path(self.init_from) / "model").is_dir():
            raise ValueError(
                f"{flag('init_from')} {self.init_from} holds no model/ (a finished train.py run?)"
            )
        for name in ("image_weights", "tokenizer"):
            value = getattr(self, name)
            if value and not Path(value).exists():
                raise ValueError(f"{flag(name)} {value} does not exist")
        if self.text_model not in ("tiny", "distilbert") and not Path(self.text_model).is_dir():
            raise ValueError(
                f"{flag('text_model')} {self.text_model}: neither 'tiny', 'distilbert' nor a "
                "local Hugging Face model directory"
            )


@dataclass
class EvalConfig:
    """Flags of eval.py."""

    checkpoint: str = arg("", "a train.py run directory or one of its checkpoint files (required)")
    out: str = arg("", "where results go; empty = the run directory")
    data: DataOptions = arg(default_factory=DataOptions)
    use_run_data: bool = arg(True, "take the data options from the run's config.json")
    batch_size: int = arg(256, "encoding batch size", ge=1)
    workers: int = arg(2, "DataLoader worker processes", ge=0)
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device")

    def validate(self) -> None:
        """--checkpoint names a run directory or a checkpoint file."""
        if not self.checkpoint:
            raise ValueError("pass --checkpoint DIR (a train.py run) or a checkpoint file")
        if not Path(self.checkpoint).exists():
            raise ValueError(f"--checkpoint {self.checkpoint} does not exist")


@dataclass
class PrepareConfig:
    """Flags of prepare_data.py: write the synthetic corpus, optionally as shards too."""

    data: DataOptions = arg(default_factory=DataOptions)
    shards: str = arg("", "also write WebDataset shards of the training set into this folder")
    samples_per_shard: int = arg(1000, "samples per shard", ge=1)
    overwrite: bool = arg(False, "write into a root that already holds a corpus")
