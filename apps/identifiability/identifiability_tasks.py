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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from identifiability_config import (  # noqa: F401  (re-exported for the app's scripts)
    MIXING_FILE,
    PAPER_ENCODING_SIZE,
    PAPER_LR,
    RUN_FILES,
    TEXT_META_FILE,
    VOCAB_FILE,
    EvalConfig,
    Experiment,
    IdentifiabilityConfig,
    Nonlinear,
)
from torch import nn

import mm_losses
from mm_data.identifiability import (
    InvertibleMLP,
    LatentConfig,
    LatentModel,
    Multimodal3DIdent,
    Vocabulary,
    load_latent_params,
    load_mixing,
    make_mixing,
    one_hot,
    save_mixing,
)
from mm_models.identifiability import mlp_encoder_pair
from mm_models.identifiability_imgtxt import ConvTextEncoder, ResNetImageEncoder
from mm_train import (
    OnlineSampler,
    atomic_write_json,
    load_model_weights,
    make_dataloader,
    worker_seed,
)


def encoding_size(cfg: IdentifiabilityConfig) -> int:
    """The configured encoding size, or the paper's for the experiment."""
    return cfg.encoding_size if cfg.encoding_size > 0 else PAPER_ENCODING_SIZE[cfg.experiment]


def learning_rate(cfg: IdentifiabilityConfig) -> float:
    """The configured learning rate, or the paper's for the experiment."""
    return cfg.lr if cfg.lr > 0 else PAPER_LR[cfg.experiment]


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
        covariances=cfg.covariances,
        seed=cfg.seed,
    )


def mixing_for_run(
    cfg: IdentifiabilityConfig, out: Path, *, write: bool
) -> tuple[LatentModel, InvertibleMLP, InvertibleMLP]:
    """The run's latent model and frozen mixing functions: loaded from out/mixing.pt when
    present (the latent parameters saved there too), else drawn from the seed (and saved
    when `write`, i.e. on the main process)."""
    path = out / MIXING_FILE
    latent_cfg = latent_config(cfg)
    if path.is_file():
        f1, f2, saved = load_mixing(path, expected_cfg=latent_cfg)
        if saved is not None and saved != latent_cfg:
            raise ValueError(
                f"{path} was written for another latent model ({saved}); this run has "
                f"{latent_cfg}. Use a fresh --out or the run's original flags."
            )
        return LatentModel(latent_cfg, params=load_latent_params(path)), f1, f2
    latents = LatentModel(latent_cfg)
    f1, f2 = make_mixing(
        latent_cfg.view_dim, n_layers=cfg.n_mixing_layer, shared=cfg.shared_mixing, seed=cfg.seed
    )
    if write:
        save_mixing(path, f1, f2, latent_cfg, latent_params=latents.parameters())
    return latents, f1, f2


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
    the latent model is the one saved with the mixing."""
    if not (run / MIXING_FILE).is_file():
        raise FileNotFoundError(f"{run / MIXING_FILE} does not exist: the run lacks its mixing")
    latents, f1, f2 = mixing_for_run(cfg, run, write=False)
    encoders = SimulationEncoders(cfg)
    load_model_weights(encoders, run, map_location="cpu")
    return latents, f1, f2, encoders


@torch.no_grad()
def mixed_views(
    latents: LatentModel,
    f1: nn.Module,
    f2: nn.Module,
    n: int,
    generator: torch.Generator,
    intervene: bool = False,
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(latent batch, x1 = f1(z1), x2 = f2(z2)) of n fresh pairs (on the generator's device);
    `intervene`: the content entering the mixing is another sample's (LatentModel.sample)."""
    batch = latents.sample(n, generator=generator, intervene=intervene)
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

    def __init__(self, data: Multimodal3DIdent, stats: dict[str, list[float]] | None = None):
        self.data = data
        self.mean = self.std = None
        if stats is not None:  # normalised with the training split's channel statistics
            self.mean = torch.tensor(stats["image_mean"]).view(3, 1, 1)
            self.std = torch.tensor(stats["image_std"]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.data.load_image(index)
        if self.mean is not None:
            image = (image - self.mean) / self.std
        return {"image": image, "text": one_hot(self.data.tokens[index], self.data.vocab_size)}


def open_split(
    root: str | Path,
    split: str,
    vocab: Vocabulary | None = None,
    max_len: int | None = None,
    image_size: int = 0,
) -> Multimodal3DIdent:
    """One split of a Multimodal3DIdent directory (train.py reads train, eval.py val and
    test); errors name the directory, the split and the missing file or bad row counts."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data directory {root} does not exist; generate a corpus with "
            f"apps/identifiability/prepare_data.py --out {root}"
        )
    try:
        return Multimodal3DIdent(
            root, split, vocab=vocab, max_len=max_len, image_size=image_size or None
        )
    except ValueError as err:
        raise ValueError(f"{root / split}: {err}") from err


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


def save_text_meta(
    out: Path, vocab: Vocabulary, max_len: int, stats: dict[str, list[float]]
) -> None:
    """Save what rebuilds the encoders' inputs: DIR/vocab.json and DIR/text_meta.json
    (caption length, vocabulary size, the image channel mean and std)."""
    vocab.save(out / VOCAB_FILE)
    meta = {"max_len": max_len, "vocab_size": len(vocab), **stats}
    atomic_write_json(out / TEXT_META_FILE, meta)


def saved_image_stats(meta: dict[str, Any]) -> dict[str, list[float]] | None:
    """The image statistics recorded in a text_meta.json (None for runs trained before
    images were normalised)."""
    return {k: meta[k] for k in ("image_mean", "image_std")} if "image_mean" in meta else None


def image_stats(train: Multimodal3DIdent) -> dict[str, list[float]]:
    """The training split's per-channel pixel mean and std (as the original normalises)."""
    mean, std = train.channel_stats()
    return {"image_mean": mean, "image_std": std}


def load_imgtxt_run(
    run: Path, cfg: IdentifiabilityConfig, device: torch.device
) -> tuple[ImageTextEncoders, Vocabulary, int, dict[str, list[float]] | None]:
    """The trained encoders, vocabulary, caption length and image statistics (None for runs
    trained before images were normalised) of an imgtxt run directory."""
    for name in (VOCAB_FILE, TEXT_META_FILE):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} does not exist: the run lacks its {name}")
    vocab = Vocabulary.load(run / VOCAB_FILE)
    meta = json.loads((run / TEXT_META_FILE).read_text())
    stats = saved_image_stats(meta)
    model = ImageTextEncoders(cfg, len(vocab), int(meta["max_len"]))
    load_model_weights(model, run, map_location=device)
    return model.to(device).eval(), vocab, int(meta["max_len"]), stats


# --------------------------------------------------------------------- train.py parts


def simulation_parts(
    cfg: IdentifiabilityConfig, out: Path, rank: int, is_main: bool, device: torch.device
):
    """(model, online sampler, step_fn, stateful) of the numerical simulation. Latents and
    views are drawn on the training device (a generator there, the mixing moved there)."""
    latents, f1, f2 = mixing_for_run(cfg, out, write=is_main)
    f1, f2 = f1.to(device), f2.to(device)
    sampler = OnlineSampler(
        simulation_sample_fn(cfg, latents, f1, f2),
        seed=worker_seed(cfg.seed, rank),
        device=device,
    )
    return SimulationEncoders(cfg), sampler, simulation_step_fn(cfg), {"data": sampler}


def imgtxt_parts(cfg: IdentifiabilityConfig, out: Path, is_main: bool):
    """(model, data loader, step_fn, stateful) of the image/text experiment."""
    saved_vocab = out / VOCAB_FILE
    vocab = Vocabulary.load(saved_vocab) if cfg.resume and saved_vocab.is_file() else None
    train = open_split(cfg.datapath, "train", vocab=vocab, image_size=cfg.image_size)
    meta = out / TEXT_META_FILE
    saved = json.loads(meta.read_text()) if cfg.resume and meta.is_file() else {}
    stats = saved_image_stats(saved) or image_stats(train)
    if is_main:
        save_text_meta(out, train.vocab, train.max_len, stats)
    loader = make_dataloader(
        PairDataset(train, stats),
        batch_size=cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        drop_last=len(train) > cfg.batch_size,
        num_workers=cfg.workers,
    )
    model = ImageTextEncoders(cfg, train.vocab_size, train.max_len)
    return model, loader, imgtxt_step_fn(cfg), {}
