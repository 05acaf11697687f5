"""The identifiability app's configs (train.py, eval.py and prepare_data.py flags).

Importable without torch: `--help` and every config error answer before the models load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mm_train import RunOptions, arg

# the paper's encoder widths as multiples of the view dim (mm_models' default too)
DEFAULT_HIDDEN_MULTIPLIERS = (10, 50, 50, 50, 50, 10)
Experiment = Literal["mlp", "imgtxt"]
MIXING_FILE = "mixing.pt"
VOCAB_FILE = "vocab.json"
TEXT_META_FILE = "text_meta.json"
RUN_FILES = (MIXING_FILE, VOCAB_FILE, TEXT_META_FILE)  # what --overwrite deletes beside mm-train's
# encoding_size = 0 and lr = 0 pick the paper's value for the experiment.
PAPER_ENCODING_SIZE = {"mlp": 5, "imgtxt": 4}
PAPER_LR = {"mlp": 1e-4, "imgtxt": 1e-5}


@dataclass
class IdentifiabilityConfig(RunOptions):
    """Every field is a --flag of train.py; presets (TOML) set groups of them."""

    out: str = arg(
        "runs/identifiability", "run directory (config, metrics, checkpoints)", may_change=True
    )
    seed: int = arg(0, "seed of the latent model, mixing, model and data order")
    experiment: Experiment = arg("mlp", "mlp (numerical simulation) | imgtxt (image/text)")
    # ---- numerical simulation (mlp): latent model and mixing
    content_n: int = arg(5, "content dims (shared by both views)", ge=1)
    style_n: int = arg(5, "style dims (perturbed in view 2)", ge=0)
    modality_n: int = arg(5, "modality-specific dims per view", ge=0)
    style_change_prob: float = arg(
        1.0, "probability that a style dim changes between views", ge=0, le=1
    )
    c_param: float = arg(1.0, "std of the style change eps", ge=0)
    statistical_dependence: bool = arg(False, "Wishart covariances within c, s, m1, m2 and eps")
    content_dependent_style: bool = arg(False, "s <- s + B c + a (causal dependence of style on c)")
    covariances: Literal["equal", "independent"] = arg(
        "equal",
        "with --statistical-dependence: equal = one Wishart draw shared by every block of a "
        "size (the original code's identical seeding, the model behind the published "
        "numbers); independent = a draw of its own per block",
    )
    n_mixing_layer: int = arg(3, "layers of the mixing MLPs f1, f2", ge=1)
    shared_mixing: bool = arg(False, "f2 is f1")
    shared_encoder: bool = arg(False, "g2 is g1")
    hidden_multipliers: tuple[int, ...] = arg(
        DEFAULT_HIDDEN_MULTIPLIERS,
        "encoder hidden widths as multiples of the view dim (paper: 10,50x4,10)",
        ge=1,
    )
    tau: float = arg(1.0, "temperature of the loss", gt=0)
    # ---- image/text (imgtxt)
    datapath: str = arg("data/m3di", "Multimodal3DIdent root (train/val/test)")
    image_size: int = arg(0, "resize images to this side; 0 = as stored", ge=0)
    workers: int = arg(0, "DataLoader worker processes", ge=0, may_change=True)
    # ---- both
    encoding_size: int = arg(0, "encoder output dim; 0 = paper value (mlp 5, imgtxt 4)", ge=0)
    batch_size: int = arg(
        6144, "samples per step per process (global batch = this x processes)", ge=1
    )
    lr: float = arg(0.0, "Adam learning rate; 0 = paper (mlp 1e-4, imgtxt 1e-5)", ge=0)
    lr_schedule: Literal["constant", "cosine"] = arg(
        "constant", "constant (the paper) or cosine decay to lr/100 over --steps"
    )
    steps: int = arg(300_000, "optimizer steps", ge=1, may_change=True)
    clip_grad: float = arg(2.0, "gradient-norm clipping", gt=0)
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0, may_change=True)
    amp: Literal["off", "bf16", "fp16"] = arg("off", "autocast on CUDA")
    log_every: int = arg(100, "steps between metrics.jsonl lines", ge=1, may_change=True)
    checkpoint_every: int = arg(1000, "steps between checkpoints", ge=1, may_change=True)
    keep_last: int = arg(2, "checkpoints kept", ge=1, may_change=True)

    def validate(self) -> None:
        """Checks that involve more than one flag or the file system."""
        if self.experiment == "mlp" and self.batch_size < 2:
            raise ValueError(
                f"--batch-size {self.batch_size}: contrastive training needs at least 2"
            )
        if self.experiment == "imgtxt" and not Path(self.datapath).is_dir():
            raise ValueError(
                f"--datapath {self.datapath} does not exist; generate a corpus with "
                f"apps/identifiability/prepare_data.py --out {self.datapath}"
            )


Nonlinear = Literal["auto", "kernel_ridge", "kernel_ridge_nystroem", "mlp_regressor"]


@dataclass
class EvalConfig:
    """Flags of eval.py."""

    run: str = arg("", "a train.py output directory (required)")
    out: str = arg("", "where results go; empty = the run directory")
    nonlinear: Nonlinear = arg(
        "auto",
        "nonlinear regressor: exact kernel_ridge (the paper's grid, O(n^3)), "
        "kernel_ridge_nystroem (scalable), mlp_regressor; auto = exact up to "
        "--exact-max fit samples, Nystroem above",
    )
    exact_max: int = arg(3000, "auto: largest fit set for exact kernel ridge", ge=2)
    val_samples: int = arg(20_480, "mlp: fit-set size", ge=2)
    test_samples: int = arg(20_480, "mlp: score-set size", ge=2)
    datapath: str = arg("", "imgtxt: data root; empty = the run's")
    batch_size: int = arg(1024, "encoding batch size", ge=2)
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0)
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device")
    seed: int = arg(1, "seed of the val/test draws and predictors")
    intervention: bool = arg(
        False,
        "mlp: the test-time intervention: the content entering the mixing is another "
        "sample's (style keeps its dependence on the original); writes "
        "results_intervention.csv with targets c, c_prime, s, s_tilde, m1, m2",
    )

    def validate(self) -> None:
        """--run names a train.py output directory."""
        if not self.run:
            raise ValueError("pass --run DIR, the output directory of train.py")
        config = Path(self.run) / "config.json"
        if not config.is_file():
            raise ValueError(
                f"--run {self.run} has no config.json; is it a train.py output directory?"
            )
        experiment = json.loads(config.read_text()).get("experiment")
        if self.intervention and experiment != "mlp":
            raise ValueError(f"--intervention needs an mlp run; {self.run} is {experiment}")


@dataclass
class DataConfig:
    """Flags of prepare_data.py."""

    out: str = arg("data/m3di-small", "root directory to write")
    n_train: int = arg(10_000, "training pairs", ge=1)
    n_val: int = arg(1_000, "validation pairs (predictors are fit)", ge=1)
    n_test: int = arg(1_000, "test pairs (predictors are scored)", ge=1)
    image_size: int = arg(64, "image side in pixels (real: 224)", ge=1)
    seed: int = arg(0, "seed of the latents (each split its own)")
    overwrite: bool = arg(False, "write into --out even if it already holds a corpus")

    def validate(self) -> None:
        """An existing corpus is replaced only with --overwrite."""
        root = Path(self.out)
        if (root / "train" / "latents_image.csv").exists() and not self.overwrite:
            raise ValueError(f"--out {root} already holds a corpus; pass --overwrite to replace it")
