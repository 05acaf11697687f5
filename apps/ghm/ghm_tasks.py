"""What the GHM app's scripts share: the config, the data model, the model and each task's loss.

Tasks: `clip` (K-negative CLIP), `dns` (joint conditional denoiser),
`sdns` (denoiser on a frozen CLIP text encoder), `nwp` (joint next-word prediction),
`snwp` (NWP on a frozen CLIP image encoder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from ghm_config import (  # noqa: F401  (re-exported: the app's scripts import them from here)
    DATA_TASK,
    GUIDED_TASKS,
    PAPER_LAMBDA,
    PAPER_LR,
    EvalConfig,
    GHMAppConfig,
    Task,
    clip_run_config,
)
from torch import nn

import mm_losses
from mm_data.ghm import GHMConfig, JointGHM, level_messages, sample_task_batch
from mm_models.ghm import GHMClipModel, build_ghm_model, ghm_model_config, guided_penalty
from mm_train import load_model_weights


def learning_rate(cfg: GHMAppConfig) -> float:
    """The configured lr, or the paper's for the task and variant (sdns/snwp: 1e-3)."""
    if cfg.lr > 0:
        return cfg.lr
    if cfg.task in ("sdns", "snwp"):
        return 1e-3
    return PAPER_LR[(cfg.task, cfg.variant)]


def build_ghm(cfg: GHMAppConfig, device: torch.device) -> JointGHM:
    """The joint (text, image) GHM of the config; bad values raise ValueError naming them."""
    return JointGHM(
        GHMConfig(
            n_layer=cfg.n_layer, n_child=cfg.n_child, vocab=cfg.vocab, p=cfg.p,
            tree_seed=cfg.tree_seed, sigma=cfg.sigma,
        ),
        device=device,
    )  # fmt: skip


def build_model(cfg: GHMAppConfig) -> nn.Module:
    """The task's transformer (paper width/depth unless d_model/depth override them)."""
    overrides = {"attention": cfg.attention, "n_head": cfg.n_head, "embed_std": cfg.embed_std}
    if cfg.d_model > 0:
        overrides["d_model"] = cfg.d_model
    if cfg.variant == "shallow":
        overrides["n_layer"] = 1  # the paper's shallow model, whatever --depth says
    elif cfg.depth > 0:
        overrides["n_layer"] = cfg.depth
    if cfg.task in ("dns", "sdns"):
        overrides["sigma"] = cfg.sigma
    model_cfg = ghm_model_config(
        cfg.task, cfg.variant, vocab=cfg.vocab, n_leaves=cfg.n_child**cfg.n_layer, **overrides
    )
    return build_ghm_model(model_cfg)


def load_frozen_clip(cfg: GHMAppConfig, device: torch.device) -> GHMClipModel:
    """The CLIP model of `cfg.clip_run`, frozen; its tree must have the shape of `cfg`."""
    run = Path(cfg.clip_run)
    clip_cfg = clip_run_config(cfg)
    clip = build_model(clip_cfg)
    load_model_weights(clip, run, map_location=device)
    clip.requires_grad_(False).eval()
    return clip.to(device)


def make_step_fn(
    cfg: GHMAppConfig, ghm: JointGHM, clip: GHMClipModel | None
) -> Callable[[nn.Module, object], tuple[torch.Tensor, dict[str, float]]]:
    """`step_fn(model, batch) -> (loss, metrics)` of the task; the guided penalty is added
    to the optimised loss but the reported `task_loss` is the task's loss alone."""
    clip_loss = mm_losses.build("ghm_clip", num_negatives=cfg.num_negatives)
    lam = cfg.guided_lambda or PAPER_LAMBDA[DATA_TASK[cfg.task]]
    guided = cfg.variant == "guided"  # GHMAppConfig.validate: only for GUIDED_TASKS
    shape = {"n_child": cfg.n_child, "n_layer": cfg.n_layer}

    def penalty_of(hidden, messages, tokens: slice | None = None) -> torch.Tensor:
        return guided_penalty(hidden, messages, lam, token_range=tokens, **shape)

    def step_fn(model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        penalty = None
        if cfg.task == "clip":
            if guided:
                f_text, f_image, h_text, h_image = model(
                    batch.text, batch.image, return_hidden=True
                )
                penalty = penalty_of(h_text, level_messages(ghm.text, batch.text)) + penalty_of(
                    h_image, level_messages(ghm.image, batch.image)
                )
            else:
                f_text, f_image = model(batch.text, batch.image)
            loss = clip_loss(f_image, f_text)
        elif cfg.task in ("dns", "sdns"):
            if cfg.task == "dns":
                out = model(batch.noisy_image, batch.text, return_hidden=guided)
            else:
                with torch.no_grad():
                    emb = clip.text_encoder(batch.text)
                out = model(batch.noisy_image, text_embedding=emb)
            pred = out[0] if guided else out
            if guided:
                # text tokens see the clean text leaves, image tokens the Gaussian evidence
                image_messages = level_messages(
                    ghm.image, noisy=batch.noisy_image, sigma=batch.sigma
                )
                penalty = penalty_of(
                    out[1], level_messages(ghm.text, batch.text), model.text_slice
                ) + penalty_of(out[1], image_messages, model.image_slice)
            loss = (pred - batch.image.to(pred.dtype)).square().sum(-1).mean()
        else:
            if cfg.task == "nwp":
                out = model(batch.input, batch.image, return_hidden=guided)
            else:
                with torch.no_grad():
                    emb = clip.image_encoder(batch.image)
                out = model(batch.input, image_embedding=emb)
            logits = out[0] if guided else out
            if guided:
                # only the image prefix: text tokens are causal, a subtree message would leak
                # the leaves they must predict
                penalty = penalty_of(
                    out[1], level_messages(ghm.image, batch.image), model.image_slice
                )
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.target.reshape(-1))
        metrics = {"task_loss": float(loss.detach())}
        if penalty is not None:
            metrics["guided_penalty"] = float(penalty.detach())
            loss = loss + penalty
        return loss, metrics

    return step_fn


def sample_fn(cfg: GHMAppConfig, ghm: JointGHM) -> Callable[[torch.Generator, int], object]:
    """Fresh online samples of the task's data (a new batch every step, as in the paper)."""
    task = DATA_TASK[cfg.task]
    return lambda generator, _: sample_task_batch(
        ghm, task, cfg.batch_size, generator, k=cfg.num_negatives
    )


class RecentLosses:
    """The last `window` training losses, checkpointed so that a resumed run's risk is exact."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"risk_window must be >= 1, got {window}")
        self.values = torch.full((window,), float("nan"), dtype=torch.float64)
        self.count = 0

    def add(self, value: float) -> None:
        self.values[self.count % self.values.numel()] = value
        self.count += 1

    def mean(self) -> float:
        return float(self.values[~self.values.isnan()].mean())

    def state_dict(self) -> dict:
        return {"values": self.values.clone(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.values = state["values"].clone()
        self.count = int(state["count"])
