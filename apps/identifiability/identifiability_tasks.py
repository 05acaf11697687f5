"""What the identifiability app's scripts share: the config, the data, the models and losses.

Daunhawer et al., "Identifiability Results for Multimodal Contrastive Learning", ICLR 2023.
Two experiments:

- `mlp` (section 5.1): latents z1 = (c, s, m1), z2 = (c, s~, m2) from the latent model of
  mm_data.identifiability, mixed by frozen random invertible MLPs f1, f2 (saved with the run
  as DIR/mixing.pt), encoded by MLPs g1, g2 and trained with Lp-SimCLR against a fresh
  independent negative batch.
- `imgtxt` (section 5.2): image/caption pairs of a Multimodal3DIdent data directory, a
  ResNet-18 image encoder and a convolutional text encoder trained with NT-Xent; the
  caption vocabulary is saved with the run as DIR/vocab.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import mm_losses
from mm_data.identifiability import (
    InvertibleMLP,
    LatentConfig,
    LatentModel,
    Multimodal3DIdent,
    Vocabulary,
    load_mixing,
    make_mixing,
    one_hot,
    save_mixing,
)
from mm_models.identifiability import DEFAULT_HIDDEN_MULTIPLIERS, mlp_encoder_pair
from mm_models.identifiability_imgtxt import ConvTextEncoder, ResNetImageEncoder
from mm_train import atomic_write_json, load_model_weights

Experiment = Literal["mlp", "imgtxt"]
MIXING_FILE = "mixing.pt"
VOCAB_FILE = "vocab.json"
TEXT_META_FILE = "text_meta.json"
# encoding_size = 0 and lr = 0 pick the paper's value for the experiment.
PAPER_ENCODING_SIZE = {"mlp": 5, "imgtxt": 4}
PAPER_LR = {"mlp": 1e-4, "imgtxt": 1e-5}


@dataclass
class IdentifiabilityConfig:
    """Every field is a --flag of train.py; presets (TOML) set groups of them."""

    experiment: Experiment = field(
        default="mlp", metadata={"help": "mlp (numerical simulation) | imgtxt (image/text)"}
    )
    # ---- numerical simulation (mlp): latent model and mixing
    content_n: int = field(default=5, metadata={"help": "content dims (shared by both views)"})
    style_n: int = field(default=5, metadata={"help": "style dims (perturbed in view 2)"})
    modality_n: int = field(default=5, metadata={"help": "modality-specific dims per view"})
    style_change_prob: float = field(
        default=1.0, metadata={"help": "probability that a style dim changes between views"}
    )
    c_param: float = field(default=1.0, metadata={"help": "std of the style change eps"})
    statistical_dependence: bool = field(
        default=False, metadata={"help": "Wishart covariances within c, s, m1, m2 and eps"}
    )
    content_dependent_style: bool = field(
        default=False, metadata={"help": "s <- s + B c + a (causal dependence of style on c)"}
    )
    equal_covariances: bool = field(
        default=False,
        metadata={
            "help": "with --statistical-dependence: one Wishart draw shared by all blocks "
            "(the original code's identical seeding) instead of independent draws"
        },
    )
    n_mixing_layer: int = field(default=3, metadata={"help": "layers of the mixing MLPs f1, f2"})
    shared_mixing: bool = field(default=False, metadata={"help": "f2 is f1"})
    shared_encoder: bool = field(default=False, metadata={"help": "g2 is g1"})
    hidden_multipliers: tuple[int, ...] = field(
        default=DEFAULT_HIDDEN_MULTIPLIERS,
        metadata={"help": "encoder hidden widths as multiples of the view dim (paper: 10,50x4,10)"},
    )
    tau: float = field(default=1.0, metadata={"help": "temperature of the loss"})
    # ---- image/text (imgtxt)
    datapath: str = field(
        default="data/m3di", metadata={"help": "Multimodal3DIdent root (train/val/test)"}
    )
    image_size: int = field(
        default=0, metadata={"help": "resize images to this side; 0 = as stored"}
    )
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    # ---- both
    encoding_size: int = field(
        default=0, metadata={"help": "encoder output dim; 0 = paper value (mlp 5, imgtxt 4)"}
    )
    batch_size: int = field(default=6144, metadata={"help": "samples per step (per process)"})
    lr: float = field(
        default=0.0, metadata={"help": "Adam learning rate; 0 = paper (mlp 1e-4, imgtxt 1e-5)"}
    )
    steps: int = field(default=300_000, metadata={"help": "optimizer steps"})
    clip_grad: float = field(default=2.0, metadata={"help": "gradient-norm clipping"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch's default"})
    amp: Literal["off", "bf16", "fp16"] = field(
        default="off", metadata={"help": "autocast on CUDA"}
    )
    log_every: int = field(default=100, metadata={"help": "steps between metrics.jsonl lines"})
    checkpoint_every: int = field(default=1000, metadata={"help": "steps between checkpoints"})
    keep_last: int = field(default=2, metadata={"help": "checkpoints kept"})
    out: str = field(default="runs/identifiability", metadata={"help": "output directory"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "device"})
    seed: int = field(
        default=0, metadata={"help": "seed of the latent model, mixing, model and data order"}
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the latest checkpoint in --out"}
    )


def encoding_size(cfg: IdentifiabilityConfig) -> int:
    """The configured encoding size, or the paper's for the experiment."""
    return cfg.encoding_size if cfg.encoding_size > 0 else PAPER_ENCODING_SIZE[cfg.experiment]


def learning_rate(cfg: IdentifiabilityConfig) -> float:
    """The configured learning rate, or the paper's for the experiment."""
    return cfg.lr if cfg.lr > 0 else PAPER_LR[cfg.experiment]


def check_config(cfg: IdentifiabilityConfig) -> None:
    """Reject values no run can use, naming the field (before any work is done)."""
    positive = ("batch_size", "steps", "log_every", "checkpoint_every", "keep_last")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("encoding_size", "lr", "image_size", "workers", "threads"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.tau > 0:
        raise ValueError(f"tau must be > 0, got {cfg.tau}")
    if not cfg.clip_grad > 0:
        raise ValueError(f"clip_grad must be > 0, got {cfg.clip_grad}")
    if cfg.n_mixing_layer < 1:
        raise ValueError(f"n_mixing_layer must be >= 1, got {cfg.n_mixing_layer}")
    if cfg.experiment == "mlp" and cfg.batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 for contrastive training, got {cfg.batch_size}")


def load_run_config(run: str | Path) -> IdentifiabilityConfig:
    """The resolved training config of a run directory (DIR/config.json)."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run} a train.py output directory?")
    saved = json.loads(path.read_text())
    known = {f.name for f in fields(IdentifiabilityConfig)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ValueError(f"{path}: unknown config fields {unknown}")
    if "hidden_multipliers" in saved:
        saved["hidden_multipliers"] = tuple(saved["hidden_multipliers"])
    return IdentifiabilityConfig(**saved)


# --------------------------------------------------------------------- numerical simulation


def latent_config(cfg: IdentifiabilityConfig) -> LatentConfig:
    """The latent model's config; its parameters (covariances, B, a) are drawn from the seed."""
    return LatentConfig(
        content_n=cfg.content_n,
        style_n=cfg.style_n,
        modality_n=cfg.modality_n,
        style_change_prob=cfg.style_change_prob,
        c_param=cfg.c_param,
        statistical_dependence=cfg.statistical_dependence,
        content_dependent_style=cfg.content_dependent_style,
        equal_covariances=cfg.equal_covariances,
        seed=cfg.seed,
    )


def _save_mixing_atomically(path: Path, f1, f2, latent_cfg: LatentConfig) -> None:
    """save_mixing into a temp file beside `path`, then rename it over `path` (atomic)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_mixing(tmp, f1, f2, latent_cfg)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def mixing_for_run(
    cfg: IdentifiabilityConfig, out: Path, *, write: bool
) -> tuple[InvertibleMLP, InvertibleMLP]:
    """The run's frozen mixing functions: loaded from out/mixing.pt when present, else drawn
    from the seed (and saved when `write`, i.e. on the main process)."""
    path = out / MIXING_FILE
    latent_cfg = latent_config(cfg)
    if path.is_file():
        f1, f2, saved = load_mixing(path, expected_cfg=latent_cfg)
        if saved is not None and saved != latent_cfg:
            raise ValueError(
                f"{path} was written for another latent model ({saved}); this run has "
                f"{latent_cfg}. Use a fresh --out or the run's original flags."
            )
        return f1, f2
    f1, f2 = make_mixing(
        latent_cfg.view_dim, n_layers=cfg.n_mixing_layer, shared=cfg.shared_mixing, seed=cfg.seed
    )
    if write:
        _save_mixing_atomically(path, f1, f2, latent_cfg)
    return f1, f2


class SimulationEncoders(nn.Module):
    """The two view encoders (g2 is g1 with a shared encoder); forward encodes both views."""

    def __init__(self, cfg: IdentifiabilityConfig) -> None:
        super().__init__()
        dim = cfg.content_n + cfg.style_n + cfg.modality_n
        self.g1, self.g2 = mlp_encoder_pair(
            dim,
            encoding_size(cfg),
            shared=cfg.shared_encoder,
            hidden_multipliers=cfg.hidden_multipliers,
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.g1(x1), self.g2(x2)


def load_trained_simulation(
    run: Path, cfg: IdentifiabilityConfig
) -> tuple[LatentModel, InvertibleMLP, InvertibleMLP, SimulationEncoders]:
    """(latent model, f1, f2, encoders with the run's latest weights, on CPU) of an mlp run;
    the latent model is rebuilt from the config saved with the mixing."""
    f1, f2, saved = load_mixing(run / MIXING_FILE, expected_cfg=latent_config(cfg))
    latents = LatentModel(saved if saved is not None else latent_config(cfg))
    encoders = SimulationEncoders(cfg)
    load_model_weights(encoders, run, map_location="cpu")
    return latents, f1, f2, encoders


@torch.no_grad()
def mixed_views(
    latents: LatentModel, f1: nn.Module, f2: nn.Module, n: int, generator: torch.Generator
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(latent batch, x1 = f1(z1), x2 = f2(z2)) of n fresh pairs."""
    batch = latents.sample(n, generator=generator)
    return batch, f1(batch.z1), f2(batch.z2)


def simulation_sample_fn(
    cfg: IdentifiabilityConfig, latents: LatentModel, f1: nn.Module, f2: nn.Module
) -> Callable[[torch.Generator, int], dict[str, torch.Tensor]]:
    """Fresh positive pairs and an independent negative batch (of the same size) per step."""

    def sample(generator: torch.Generator, _: int) -> dict[str, torch.Tensor]:
        _, x1, x2 = mixed_views(latents, f1, f2, cfg.batch_size, generator)
        _, x1_neg, x2_neg = mixed_views(latents, f1, f2, cfg.batch_size, generator)
        return {"x1": x1, "x2": x2, "x1_neg": x1_neg, "x2_neg": x2_neg}

    return sample


def simulation_step_fn(cfg: IdentifiabilityConfig) -> Callable:
    """step_fn(model, batch) -> (Lp-SimCLR loss, metrics). Positives and negatives go through
    one forward call (concatenated), as DDP expects one forward per backward."""
    loss_fn = mm_losses.build("lp_simclr", tau=cfg.tau)

    def step_fn(model: nn.Module, batch: dict[str, torch.Tensor]):
        n = batch["x1"].shape[0]
        h1_all, h2_all = model(
            torch.cat([batch["x1"], batch["x1_neg"]]), torch.cat([batch["x2"], batch["x2_neg"]])
        )
        h1, h1_neg, h2, h2_neg = h1_all[:n], h1_all[n:], h2_all[:n], h2_all[n:]
        loss = loss_fn(h1, h2, image_negatives=h1_neg, text_negatives=h2_neg)
        positive = (h1.detach() - h2.detach()).square().sum(1).mean()
        return loss, {"positive_sq_dist": positive}

    return step_fn


# --------------------------------------------------------------------------- image/text


class PairDataset(torch.utils.data.Dataset):
    """Only what training needs from Multimodal3DIdent items: image and one-hot caption."""

    def __init__(self, data: Multimodal3DIdent) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.data.load_image(index)
        return {"image": image, "text": one_hot(self.data.tokens[index], self.data.vocab_size)}


def open_split(
    cfg: IdentifiabilityConfig,
    split: str,
    vocab: Vocabulary | None = None,
    max_len: int | None = None,
) -> Multimodal3DIdent:
    """One split of cfg.datapath; errors name the missing file or mismatched row counts."""
    root = Path(cfg.datapath)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--datapath {root} does not exist; generate a corpus with "
            f"apps/identifiability/prepare_data.py --out {root}"
        )
    return Multimodal3DIdent(
        root, split, vocab=vocab, max_len=max_len, image_size=cfg.image_size or None
    )


class ImageTextEncoders(nn.Module):
    """ResNet-18 image encoder and convolutional text encoder; forward encodes a pair batch."""

    def __init__(self, cfg: IdentifiabilityConfig, vocab_size: int, max_len: int) -> None:
        super().__init__()
        size = encoding_size(cfg)
        self.image_encoder = ResNetImageEncoder(encoding_size=size)
        self.text_encoder = ConvTextEncoder(vocab_size, max_len, encoding_size=size)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_encoder(image), self.text_encoder(text)


def imgtxt_step_fn(cfg: IdentifiabilityConfig) -> Callable:
    """step_fn(model, batch) -> NT-Xent loss with cross- and intra-modal negatives."""
    loss_fn = mm_losses.build("nt_xent", tau=cfg.tau)

    def step_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h_image, h_text = model(batch["image"], batch["text"])
        return loss_fn(h_image, h_text)

    return step_fn


def save_text_meta(out: Path, vocab: Vocabulary, max_len: int) -> None:
    """Save what rebuilds the text encoder's input: DIR/vocab.json and DIR/text_meta.json."""
    vocab.save(out / VOCAB_FILE)
    atomic_write_json(out / TEXT_META_FILE, {"max_len": max_len, "vocab_size": len(vocab)})


def load_imgtxt_run(
    run: Path, cfg: IdentifiabilityConfig, device: torch.device
) -> tuple[ImageTextEncoders, Vocabulary, int]:
    """The trained encoders, vocabulary and caption length of an imgtxt run directory."""
    for name in (VOCAB_FILE, TEXT_META_FILE):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} does not exist: the run lacks its {name}")
    vocab = Vocabulary.load(run / VOCAB_FILE)
    max_len = int(json.loads((run / TEXT_META_FILE).read_text())["max_len"])
    model = ImageTextEncoders(cfg, len(vocab), max_len)
    load_model_weights(model, run, map_location=device)
    return model.to(device).eval(), vocab, max_len
