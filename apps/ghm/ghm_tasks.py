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
    GUIDED_LAMBDA,
    GUIDED_TASKS,
    PAPER_LR,
    SEQUENTIAL_LR,
    EvalConfig,
    GHMAppConfig,
    Task,
    clip_run_config,
    run_config,
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
        return SEQUENTIAL_LR
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


def load_run(
    run: Path | str,
    device: torch.device,
    *,
    tasks: tuple[str, ...] | None = None,
    flag: str = "--run",
) -> tuple[GHMAppConfig, nn.Module, GHMClipModel | None]:
    """The config, trained model (eval mode) and, for sdns/snwp runs, the frozen CLIP model
    of a train.py run directory. `tasks` restricts the accepted tasks (errors name `flag`)."""
    run = Path(run)
    cfg = run_config(run, flag)
    if tasks is not None and cfg.task not in tasks:
        raise ValueError(f"{flag} {run}: task is {cfg.task!r}, expected one of {tasks}")
    model = build_model(cfg)
    load_model_weights(model, run, map_location=device)
    clip = None
    if cfg.task in ("sdns", "snwp"):
        clip = load_frozen_clip(cfg, device)
    return cfg, model.to(device).eval(), clip


def load_frozen_clip(cfg: GHMAppConfig, device: torch.device) -> GHMClipModel:
    """The CLIP model of `cfg.clip_run`, frozen; its tree must have the shape of `cfg`."""
    clip_run_config(cfg)  # the tree-shape check, naming --clip-run
    _, clip, _ = load_run(cfg.clip_run, device, tasks=("clip",), flag="--clip-run")
    return clip.requires_grad_(False)


def denoise(model: nn.Module, clip: GHMClipModel | None, batch, *, return_hidden: bool = False):
    """The denoiser's prediction of the clean image leaves [B, n_leaves] (dns: the joint
    model reads the text leaves; sdns: the frozen CLIP text embedding)."""
    if clip is None:
        return model(batch.noisy_image, batch.text, return_hidden=return_hidden)
    with torch.no_grad():
        emb = clip.text_encoder(batch.text)
    return model(batch.noisy_image, text_embedding=emb)


def next_token_logits(
    model: nn.Module, clip: GHMClipModel | None, batch, *, return_hidden: bool = False
):
    """Next-token logits [B, n_leaves - 1, vocab] aligned with `batch.target` (nwp: the
    joint model reads the image leaves; snwp: the frozen CLIP image embedding)."""
    if clip is None:
        return model(batch.input, batch.image, return_hidden=return_hidden)
    with torch.no_grad():
        emb = clip.image_encoder(batch.image)
    return model(batch.input, image_embedding=emb)


StepFn = Callable[[nn.Module, object], tuple[torch.Tensor, dict[str, float]]]


def make_step_fn(cfg: GHMAppConfig, ghm: JointGHM, clip: GHMClipModel | None) -> StepFn:
    """`step_fn(model, batch) -> (loss, metrics)` of the task; the guided penalty is added
    to the optimised loss but the reported `task_loss` is the task's loss alone."""
    guided = cfg.variant == "guided"  # GHMAppConfig.validate: only for GUIDED_TASKS
    lam = cfg.guided_lambda or GUIDED_LAMBDA[DATA_TASK[cfg.task]]
    shape = {"n_child": cfg.n_child, "n_layer": cfg.n_layer}

    def penalty(hidden, messages, tokens: slice | None = None) -> torch.Tensor:
        return guided_penalty(hidden, messages, lam, token_range=tokens, **shape)

    task_step = {"clip": _clip_step, "dns": _denoising_step, "nwp": _next_word_step}
    loss_and_penalty = task_step[DATA_TASK[cfg.task]](cfg, ghm, clip, penalty if guided else None)

    def step_fn(model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss, extra = loss_and_penalty(model, batch)
        metrics = {"task_loss": float(loss.detach())}
        if extra is not None:
            metrics["guided_penalty"] = float(extra.detach())
            loss = loss + extra
        return loss, metrics

    return step_fn


def _clip_step(cfg: GHMAppConfig, ghm: JointGHM, clip, penalty):
    """(loss, guided penalty or None) of the K-negative CLIP task; the guided penalty
    matches both encoders' hidden states to their trees' BP messages."""
    clip_loss = mm_losses.build("ghm_clip", num_negatives=cfg.num_negatives)

    def loss_fn(model: nn.Module, batch):
        if penalty is None:
            f_text, f_image = model(batch.text, batch.image)
            return clip_loss(f_image, f_text), None
        f_text, f_image, h_text, h_image = model(batch.text, batch.image, return_hidden=True)
        extra = penalty(h_text, level_messages(ghm.text, batch.text)) + penalty(
            h_image, level_messages(ghm.image, batch.image)
        )
        return clip_loss(f_image, f_text), extra

    return loss_fn


def _denoising_step(cfg: GHMAppConfig, ghm: JointGHM, clip, penalty):
    """(squared error summed over the image leaves, penalty or None): text tokens are
    guided with the text messages, image tokens with the messages of the Gaussian evidence."""

    def loss_fn(model: nn.Module, batch):
        out = denoise(model, clip, batch, return_hidden=penalty is not None)
        pred = out if penalty is None else out[0]
        loss = (pred - batch.image.to(pred.dtype)).square().sum(-1).mean()
        if penalty is None:
            return loss, None
        image_messages = level_messages(ghm.image, noisy=batch.noisy_image, sigma=batch.sigma)
        extra = penalty(out[1], level_messages(ghm.text, batch.text), model.text_slice)
        return loss, extra + penalty(out[1], image_messages, model.image_slice)

    return loss_fn


def _next_word_step(cfg: GHMAppConfig, ghm: JointGHM, clip, penalty):
    """(cross-entropy averaged over the predicted positions, penalty or None): only the
    image prefix is guided, since a causal text token matched to its subtree's message
    would see the leaves it must predict."""

    def loss_fn(model: nn.Module, batch):
        out = next_token_logits(model, clip, batch, return_hidden=penalty is not None)
        logits = out if penalty is None else out[0]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.target.reshape(-1))
        if penalty is None:
            return loss, None
        return loss, penalty(out[1], level_messages(ghm.image, batch.image), model.image_slice)

    return loss_fn


def sample_fn(cfg: GHMAppConfig, ghm: JointGHM) -> Callable[[torch.Generator, int], object]:
    """Fresh online samples of the task's data (a new batch every step, as in the paper)."""
    task = DATA_TASK[cfg.task]
    return lambda generator, _: sample_task_batch(
        ghm, task, cfg.batch_size, generator, k=cfg.num_negatives
    )
