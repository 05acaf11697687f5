"""Bayes predictors and Bayes risks of the four GHM tasks.

Tasks: ``"clip"`` (K-negative CLIP loss with ``log S`` as logits), ``"zsc"`` (zero-shot
cross-entropy on the first text leaf), ``"dns"`` (conditional denoising: squared error
summed over the image leaves), ``"nwp"`` (next-word cross-entropy averaged over the
``n_leaves - 1`` predicted positions).

Each per-batch function takes ``bp``, the :class:`JointGHM` whose matrices BP uses (the
data's own GHM for the Bayes predictor, another one for misspecified BP). The risk
functions sample with ``ghm`` and infer with ``bp`` (default: ``ghm``).
"""

from __future__ import annotations

import math

import torch

from mm_data.ghm.belief_propagation import (
    _next_token_nll,
    _root_posterior,
    clip_log_score,
    first_leaf_log_probs,
    next_token_log_probs,
    posterior_mean,
    root_message,
    root_posterior,
)
from mm_data.ghm.sampling import (
    ClipBatch,
    ConditionalDenoisingBatch,
    NextWordBatch,
    ZeroShotBatch,
    sample_clip,
    sample_conditional_denoising,
    sample_next_word,
    sample_zero_shot,
)
from mm_data.ghm.tree import GHMConfig, JointGHM

TASKS = ("clip", "zsc", "dns", "nwp")

TaskBatch = ClipBatch | ZeroShotBatch | ConditionalDenoisingBatch | NextWordBatch


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def bayes_clip_logits(bp: JointGHM, batch: ClipBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes CLIP logits ``log S`` ``[B, k]`` for direction 1 (image anchors of block 0) and
    direction 2 (text anchors of block 1); column 0 is the matched pair."""
    return clip_logits_from_root_posteriors(
        _root_posterior(bp.text, batch.text),
        _root_posterior(bp.image, batch.image),
        bp.log_prior,
        batch,
    )


def clip_logits_from_root_posteriors(
    log_post_text: torch.Tensor,
    log_post_image: torch.Tensor,
    log_prior: torch.Tensor,
    batch: ClipBatch,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP logits ``log S`` ``[B, k]`` of both directions (as :func:`bayes_clip_logits`) from
    any root log-posteriors ``[V, B(k+1)]`` of the batch's text and image trees (exact BP,
    misspecified BP, or an approximation)."""
    b, k, v = batch.batch_size, batch.k, log_prior.numel()
    lt = log_post_text.view(v, k + 1, b)
    li = log_post_image.view(v, k + 1, b)
    texts = torch.cat([lt[:, :1], lt[:, 2:]], dim=1)  # matched text, then the k-1 negatives
    images = torch.cat([li[:, 1:2], li[:, 2:]], dim=1)
    logits_image_anchor = clip_log_score(texts, li[:, :1], log_prior, dim=0).T
    logits_text_anchor = clip_log_score(lt[:, 1:2], images, log_prior, dim=0).T
    return logits_image_anchor, logits_text_anchor


def k_negative_clip_losses(
    logits_image_anchor: torch.Tensor, logits_text_anchor: torch.Tensor
) -> torch.Tensor:
    """Per-sample K-negative CLIP loss: ``-log softmax(logits)[0]`` summed
    over the two directions: ``[B]``."""
    if logits_image_anchor.shape != logits_text_anchor.shape or logits_image_anchor.dim() != 2:
        raise ValueError(
            "both logit tensors must have the same shape [B, k], got "
            f"{list(logits_image_anchor.shape)} and {list(logits_text_anchor.shape)}"
        )
    d1 = -torch.log_softmax(logits_image_anchor, dim=-1)[:, 0]
    d2 = -torch.log_softmax(logits_text_anchor, dim=-1)[:, 0]
    return d1 + d2


def bayes_clip_losses(bp: JointGHM, batch: ClipBatch) -> torch.Tensor:
    """Per-sample Bayes CLIP loss ``[B]`` (logits ``log S(t, i)``)."""
    return k_negative_clip_losses(*bayes_clip_logits(bp, batch))


def bayes_zero_shot_log_probs(bp: JointGHM, image: torch.Tensor) -> torch.Tensor:
    """Bayes zero-shot class log-probabilities ``log p(first text leaf | image)``: ``[B, vocab]``."""
    return first_leaf_log_probs(bp.text, root_posterior(bp.image, image))


def bayes_denoising_mean(
    bp: JointGHM, text: torch.Tensor, noisy_image: torch.Tensor, *, sigma: float | None = None
) -> torch.Tensor:
    """Bayes conditional denoiser ``E[image leaves | noisy image, text]``: ``[B, n_leaves]``
    (the text's upward root message enters the image tree as a root message)."""
    text_root = root_message(bp.text, text)
    if text_root.shape[0] != noisy_image.shape[0]:
        raise ValueError(
            f"text and noisy_image batch sizes differ: {text_root.shape[0]} vs {noisy_image.shape[0]}"
        )
    return posterior_mean(bp.image, noisy_image, sigma=sigma, root_message=text_root)


def bayes_next_token_log_probs(
    bp: JointGHM, image: torch.Tensor, text: torch.Tensor
) -> torch.Tensor:
    """Bayes next-token log-probabilities ``log p(x_{j+1} | x_{<=j}, image)``, aligned with
    ``text[:, 1:]``: ``[B, n_leaves - 1, vocab]`` (``text``: full or ``text[:, :-1]``)."""
    return next_token_log_probs(bp.text, text, root_message=_image_root(bp, image, text))


def _image_root(bp: JointGHM, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Upward root message of the image tree, checked against the text batch size."""
    image_root = root_message(bp.image, image)
    if image_root.shape[0] != text.shape[0]:
        raise ValueError(
            f"image and text batch sizes differ: {image_root.shape[0]} vs {text.shape[0]}"
        )
    return image_root


def sample_task_batch(
    ghm: JointGHM,
    task: str,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    k: int = 4,
) -> TaskBatch:
    """The batch a task trains on: ClipBatch, ZeroShotBatch, ConditionalDenoisingBatch or
    NextWordBatch."""
    _check_task(task)
    if task == "clip":
        return sample_clip(ghm, batch_size, generator, k=k)
    if task == "zsc":
        return sample_zero_shot(ghm, batch_size, generator)
    if task == "dns":
        return sample_conditional_denoising(ghm, batch_size, generator)
    return sample_next_word(ghm, batch_size, generator)


def bayes_losses(bp: JointGHM, task: str, batch: TaskBatch) -> torch.Tensor:
    """Per-sample loss of the Bayes predictor (built from ``bp``) on ``batch``: ``[B]``."""
    _check_task(task)
    expected = {
        "clip": ClipBatch,
        "zsc": ZeroShotBatch,
        "dns": ConditionalDenoisingBatch,
        "nwp": NextWordBatch,
    }[task]
    if not isinstance(batch, expected):
        raise ValueError(f"task {task!r} needs a {expected.__name__}, got {type(batch).__name__}")
    if task == "clip":
        return bayes_clip_losses(bp, batch)
    if task == "zsc":
        logp = bayes_zero_shot_log_probs(bp, batch.image)
        return -logp.gather(1, batch.label.to(logp.device)[:, None])[:, 0]
    if task == "dns":
        mean = bayes_denoising_mean(bp, batch.text, batch.noisy_image)
        return ((mean - batch.image.to(mean)) ** 2).sum(-1)
    return _next_token_nll(bp.text, batch.text, _image_root(bp, batch.image, batch.text))


def bayes_risk_samples(
    ghm: JointGHM,
    task: str,
    n_samples: int,
    batch_size: int = 1024,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    *,
    bp: JointGHM | None = None,
    k: int = 4,
) -> torch.Tensor:
    """Per-sample Bayes losses ``[n_samples]`` on fresh batches sampled from ``ghm``, with BP
    run on ``bp`` (default ``ghm``); ``generator`` default: seed 0 on ``device``."""
    _check_task(task)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if device is None:
        device = generator.device if generator is not None else ghm.device
    device = torch.device(device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    ghm = ghm if ghm.device == device else ghm.to(device)
    bp = ghm if bp is None else (bp if bp.device == device else bp.to(device))
    if bp.config.n_layer != ghm.config.n_layer or bp.config.n_child != ghm.config.n_child:
        raise ValueError("bp and ghm must have the same tree shape (n_layer, n_child)")
    if bp.config.vocab != ghm.config.vocab:
        raise ValueError(f"bp.vocab={bp.config.vocab} differs from ghm.vocab={ghm.config.vocab}")
    out = []
    done = 0
    with torch.inference_mode():
        while done < n_samples:
            b = min(batch_size, n_samples - done)
            batch = sample_task_batch(ghm, task, b, generator, k=k)
            out.append(bayes_losses(bp, task, batch))
            done += b
    return torch.cat(out)


def bayes_risk(
    ghm: JointGHM,
    task: str,
    n_samples: int = 10_000,
    batch_size: int = 1024,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    *,
    bp: JointGHM | None = None,
    k: int = 4,
) -> float:
    """Monte-Carlo Bayes risk of ``task`` (mean of :func:`bayes_risk_samples`)."""
    losses = bayes_risk_samples(ghm, task, n_samples, batch_size, generator, device, bp=bp, k=k)
    return float(losses.double().mean())


def standard_error(losses: torch.Tensor) -> float:
    """Standard error of the mean ``std / sqrt(n)`` of per-sample losses."""
    n = losses.numel()
    return float(losses.double().std() / math.sqrt(n)) if n > 1 else float("nan")


def _main() -> None:
    """Print the Bayes risks of the four tasks for some tree seeds as a Markdown table."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("--tree-seeds", type=int, nargs="+", default=[0, 1, 42])
    parser.add_argument("--p", type=float, default=0.2)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"p={args.p}, {args.n_samples} samples per task, value ± standard error\n")
    print("| tree_seed | " + " | ".join(TASKS) + " | seconds |")
    print("|---" * (len(TASKS) + 2) + "|")
    for tree_seed in args.tree_seeds:
        ghm = JointGHM(GHMConfig(p=args.p, tree_seed=tree_seed))
        gen = torch.Generator().manual_seed(args.seed)
        start, cells = time.perf_counter(), []
        for task in TASKS:
            losses = bayes_risk_samples(ghm, task, args.n_samples, args.batch_size, gen)
            cells.append(f"{losses.double().mean():.4g} ± {standard_error(losses):.2g}")
        print(f"| {tree_seed} | " + " | ".join(cells) + f" | {time.perf_counter() - start:.1f} |")
