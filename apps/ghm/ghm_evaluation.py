"""The GHM evaluations of eval.py, one function per mode: exact Bayes risks; a trained run
(any task) against exact BP on held-out samples, with --compare runs on the same samples;
zero-shot risk vs M (clip runs); OOD over the test flip probability (any task).

Every comparison is scored on common random numbers: the learned model, exact BP and
misspecified BP see the same samples, so paired differences have small standard errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ghm_tasks import (
    DATA_TASK,
    EvalConfig,
    GHMAppConfig,
    build_ghm,
    denoise,
    load_run,
    next_token_logits,
)

from mm_data.ghm import (
    JointGHM,
    bayes_clip_losses,
    bayes_denoising_mean,
    bayes_next_token_log_probs,
    bayes_risk_samples,
    k_negative_clip_losses,
    sample_task_batch,
    sample_zero_shot,
    sample_zero_shot_prompts,
    standard_error,
    zero_shot_logits,
)
from mm_eval.identifiability import write_results_csv
from mm_losses import ghm_clip_logits
from mm_train import atomic_write_json, replaying, resolve_device, save_config

# what a run's "distance to Bayes" is, per data task
DISTANCE = {"dns": "mse_to_bayes_mean", "nwp": "kl_to_bayes"}


def _sum_sq(x: torch.Tensor) -> torch.Tensor:
    return x.square().sum(-1)


@torch.no_grad()
def batch_scores(
    cfg: GHMAppConfig, model, clip, ghm: JointGHM, batch, misspecified: JointGHM | None = None
) -> dict[str, torch.Tensor]:
    """Per-sample scores [B] of one batch drawn from `ghm` (float64):

    - ``model``, ``bayes`` (and ``misspecified``: BP with another GHM's matrices): the
      task's loss (clip: K-negative CLIP summed over both directions; dns: squared error
      summed over the image leaves; nwp: cross-entropy averaged over the predicted tokens);
    - dns/nwp: ``distance`` of the model to exact BP (squared distance to the posterior mean
      E[image | noisy image, text]; KL(BP next-token posterior || model) averaged over
      positions), ``misspecified_distance``; nwp also ``distance_by_position`` [B, n - 1].
    """
    task = DATA_TASK[cfg.task]
    if task == "clip":
        f_text, f_image = model(batch.text, batch.image)
        logits = ghm_clip_logits(f_image.double(), f_text.double(), cfg.num_negatives)
        out = {"model": k_negative_clip_losses(*logits), "bayes": bayes_clip_losses(ghm, batch)}
        if misspecified is not None:
            out["misspecified"] = bayes_clip_losses(misspecified, batch)
        return {k: v.double() for k, v in out.items()}
    if task == "dns":
        x = batch.image.double()
        pred = denoise(model, clip, batch).double()
        mean = bayes_denoising_mean(ghm, batch.text, batch.noisy_image).double()
        out = {
            "model": _sum_sq(pred - x),
            "bayes": _sum_sq(mean - x),
            "distance": _sum_sq(pred - mean),
        }
        if misspecified is not None:
            wrong = bayes_denoising_mean(misspecified, batch.text, batch.noisy_image).double()
            out |= {
                "misspecified": _sum_sq(wrong - x),
                "misspecified_distance": _sum_sq(wrong - mean),
            }
        return out
    target = batch.target[..., None]
    log_q = torch.log_softmax(next_token_logits(model, clip, batch).double(), dim=-1)
    log_p = bayes_next_token_log_probs(ghm, batch.image, batch.text).double()
    by_position = (log_p.exp() * (log_p - log_q)).sum(-1)
    out = {
        "model": -log_q.gather(-1, target)[..., 0].mean(-1),
        "bayes": -log_p.gather(-1, target)[..., 0].mean(-1),
        "distance": by_position.mean(-1),
        "distance_by_position": by_position,
    }
    if misspecified is not None:
        log_w = bayes_next_token_log_probs(misspecified, batch.image, batch.text).double()
        out["misspecified"] = -log_w.gather(-1, target)[..., 0].mean(-1)
        out["misspecified_distance"] = (log_p.exp() * (log_p - log_w)).sum(-1).mean(-1)
    return out


def score(
    cfg: GHMAppConfig,
    model,
    clip,
    ghm: JointGHM,
    n: int,
    batch_size: int,
    generator: torch.Generator,
    misspecified: JointGHM | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`batch_scores` over `n` fresh samples of `ghm`, concatenated."""
    parts: list[dict[str, torch.Tensor]] = []
    for start in range(0, n, batch_size):
        batch = sample_task_batch(
            ghm, DATA_TASK[cfg.task], min(batch_size, n - start), generator, k=cfg.num_negatives
        )
        parts.append(batch_scores(cfg, model, clip, ghm, batch, misspecified))
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


@torch.no_grad()
def zero_shot_losses(
    model, ghm, m_values, n: int, batch: int, generator
) -> dict[int, torch.Tensor]:
    """Per-image zero-shot cross-entropy [n] of the learned classifier for each M."""
    data = sample_zero_shot(ghm, n, generator)
    f_image = torch.cat([model.image_encoder(x) for x in data.image.split(batch)])
    out = {}
    for m in m_values:
        prompts = sample_zero_shot_prompts(ghm, m, generator)  # [V, M, n_leaves]
        flat = prompts.reshape(-1, prompts.shape[-1])
        f_prompt = torch.cat([model.text_encoder(x) for x in flat.split(batch)])
        logits = zero_shot_logits(f_image, f_prompt.reshape(prompts.shape[0], m, -1))
        out[m] = F.cross_entropy(logits.double(), data.label, reduction="none")
    return out


def fit_inverse_m(ms, risks) -> tuple[float, float]:
    """Least-squares fit risk(M) = A / M + B; returns (A, B)."""
    design = np.stack([1.0 / np.asarray(ms, dtype=float), np.ones(len(ms))], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(risks, dtype=float), rcond=None)
    return float(a), float(b)


Series = dict[str, tuple[list[float], list[float] | None]]


def plot(path: Path, x, series: Series, xlabel: str, ylabel: str, *, log_x: bool = False) -> None:
    """Lines with markers; a series with standard errors gets a +-1 SE band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (ys, errs) in series.items():
        xs = x if len(ys) == len(x) else np.geomspace(min(x), max(x), len(ys))
        (line,) = ax.plot(xs, ys, marker="o" if len(ys) == len(x) else None, label=label)
        if errs is not None:
            lo = np.asarray(ys) - np.asarray(errs)
            ax.fill_between(xs, lo, lo + 2 * np.asarray(errs), color=line.get_color(), alpha=0.2)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bayes_mode(cfg: EvalConfig) -> dict:
    """The exact Bayes risk of --task at --p on fresh samples."""
    device = resolve_device(cfg.device)
    tree = GHMAppConfig(
        p=cfg.p, n_layer=cfg.n_layer, n_child=cfg.n_child, vocab=cfg.vocab,
        tree_seed=cfg.tree_seed, sigma=cfg.sigma,
    )  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    losses = bayes_risk_samples(
        build_ghm(tree, device), cfg.task, cfg.samples, generator=gen, k=cfg.num_negatives
    )
    print(f"Bayes {cfg.task} risk at p={cfg.p}: {losses.double().mean():.4f}")
    return {
        "task": cfg.task,
        "p": cfg.p,
        "bayes_risk": float(losses.double().mean()),
        "bayes_risk_stderr": standard_error(losses),
        "samples": cfg.samples,
    }


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), standard_error(x)


def heldout_mode(cfg: EvalConfig, run: tuple, gen: torch.Generator, out: Path) -> dict:
    """--run (and each --compare run) against exact BP on the same held-out samples."""
    train_cfg, model, clip = run
    ghm = build_ghm(train_cfg, model_device(model))
    task = DATA_TASK[train_cfg.task]
    same_samples = replaying(gen)
    base = score(train_cfg, model, clip, ghm, cfg.samples, cfg.batch_size, same_samples())
    bayes, bayes_se = _mean_se(base["bayes"])
    summary: dict = {"task": train_cfg.task, "bayes_risk": bayes, "bayes_risk_stderr": bayes_se}
    summary["risk"], summary["risk_stderr"] = _mean_se(base["model"])
    summary["excess_risk"], summary["excess_risk_stderr"] = _mean_se(base["model"] - base["bayes"])
    if task in DISTANCE:
        name = DISTANCE[task]
        summary[name], summary[f"{name}_stderr"] = _mean_se(base["distance"])
    print(
        f"{cfg.run} ({train_cfg.task}/{train_cfg.variant}): risk {summary['risk']:.4f}, "
        f"Bayes {bayes:.4f}, excess {summary['excess_risk']:.4f} +- "
        f"{summary['excess_risk_stderr']:.4f}"
        + (f", {DISTANCE[task]} {summary[DISTANCE[task]]:.4f}" if task in DISTANCE else "")
    )
    if task == "nwp":
        by_position = base["distance_by_position"]
        rows = [
            {"position": j + 2, "kl_to_bayes": float(col.mean()), "stderr": standard_error(col)}
            for j, col in enumerate(by_position.T)
        ]  # position j + 2: the leaf predicted from leaves 1 .. j + 1 (and the image)
        write_results_csv(rows, out / "kl_by_position.csv")
        plot(
            out / "kl_by_position.png", [r["position"] for r in rows],
            {"KL(BP || model)": ([r["kl_to_bayes"] for r in rows], [r["stderr"] for r in rows])},
            "predicted text leaf", "KL to the Bayes next-token posterior",
        )  # fmt: skip
    if cfg.compare:
        summary |= compare_runs(cfg, train_cfg, base, ghm, same_samples)
    return summary


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def compare_runs(cfg: EvalConfig, train_cfg, base: dict, ghm, same_samples) -> dict:
    """Score every --compare run on --run's samples; the paired difference (run - --run)
    has a far smaller standard error than two separate risks."""
    device = base["model"].device
    runs = [(Path(cfg.run), train_cfg, base)]
    for other in map(Path, cfg.compare):
        other_cfg, other_model, other_clip = load_run(other, device, flag="--compare")
        scores = score(
            other_cfg, other_model, other_clip, ghm, cfg.samples, cfg.batch_size, same_samples()
        )
        runs.append((other, other_cfg, scores))
    bayes = float(base["bayes"].mean())
    rows = []
    for path, run_cfg, scores in runs:
        diff, risk = scores["model"] - base["model"], float(scores["model"].mean())
        rows.append(
            {"run": str(path), "variant": run_cfg.variant, "depth": run_cfg.depth,
             "risk": risk, "bayes_risk": bayes, "excess_risk": risk - bayes,
             "relative_excess_risk": (risk - bayes) / bayes,
             "minus_run": float(diff.mean()), "minus_run_stderr": standard_error(diff)}
        )  # fmt: skip
        print(
            f"{path} ({run_cfg.variant}): risk {risk:.4f}, excess {risk - bayes:.4f} "
            f"({100 * (risk - bayes) / bayes:.1f}%), minus --run {rows[-1]['minus_run']:+.4f} "
            f"+- {rows[-1]['minus_run_stderr']:.4f}"
        )
    write_results_csv(rows, Path(cfg.out) / "compare.csv")
    summary = {"compare_bayes_risk": bayes}
    for i, row in enumerate(rows):
        for key in ("risk", "excess_risk", "minus_run", "minus_run_stderr"):
            summary[f"compare{i}_{key}"] = row[key]
    return summary


def zero_shot_mode(cfg: EvalConfig, run: tuple, gen: torch.Generator, out: Path) -> dict:
    """Zero-shot cross-entropy vs M of a clip run, its A/M + B fit and the Bayes risk, on
    the same images."""
    train_cfg, model, _ = run
    ghm = build_ghm(train_cfg, model_device(model))
    same_samples = replaying(gen)
    losses = zero_shot_losses(model, ghm, cfg.m_values, cfg.samples, cfg.batch_size, same_samples())
    bayes = bayes_risk_samples(ghm, "zsc", cfg.samples, cfg.samples, same_samples())
    ms = list(losses)
    risks = [float(v.mean()) for v in losses.values()]
    a, b = fit_inverse_m(ms, risks)
    bayes_zsc, bayes_se = float(bayes.double().mean()), standard_error(bayes)
    rows = [
        {"M": m, "risk": r, "stderr": standard_error(losses[m]), "bayes_risk": bayes_zsc,
         "bayes_stderr": bayes_se}
        for m, r in zip(ms, risks, strict=True)
    ]  # fmt: skip
    write_results_csv(rows, out / "zero_shot.csv")
    dense = np.geomspace(min(ms), max(ms), 100)
    plot(
        out / "zero_shot_vs_m.png", ms,
        {"learned": (risks, [r["stderr"] for r in rows]),
         f"fit {a:.2f}/M + {b:.3f}": (list(a / dense + b), None),
         "Bayes": ([bayes_zsc] * len(ms), [bayes_se] * len(ms))},
        "M (prompts per class)", "zero-shot cross-entropy", log_x=True,
    )  # fmt: skip
    print(f"zero-shot: fit {a:.3f}/M + {b:.4f}; Bayes {bayes_zsc:.4f}")
    summary = {"zsc_fit_A": a, "zsc_fit_B": b, "zsc_bayes_risk": bayes_zsc}
    summary["zsc_bayes_risk_stderr"] = bayes_se
    for row in rows:
        summary[f"zsc_risk_M{row['M']}"] = row["risk"]
        summary[f"zsc_risk_M{row['M']}_stderr"] = row["stderr"]
    return summary


def ood_mode(cfg: EvalConfig, run: tuple, gen: torch.Generator, out: Path) -> dict:
    """The run, exact BP and misspecified BP (the training-p matrices) on data of each
    test p, on the same samples: excess risks, and for dns/nwp the distances to Bayes."""
    train_cfg, model, clip = run
    ghm = build_ghm(train_cfg, model_device(model))
    task = DATA_TASK[train_cfg.task]
    rows = []
    for p_test in cfg.p_values:
        shifted = ghm.with_p(p_test)
        s = score(
            train_cfg, model, clip, shifted, cfg.samples, cfg.batch_size, replaying(gen)(), ghm
        )
        row = {"p_test": p_test, "bayes": float(s["bayes"].mean())}
        for who in ("model", "misspecified"):
            name = "learned" if who == "model" else "misspecified"
            row[f"{name}_excess"], row[f"{name}_excess_stderr"] = _mean_se(s[who] - s["bayes"])
            if task in DISTANCE:
                key = "distance" if who == "model" else "misspecified_distance"
                row[f"{name}_{DISTANCE[task]}"], row[f"{name}_{DISTANCE[task]}_stderr"] = _mean_se(
                    s[key]
                )
        rows.append(row)
        print(
            f"p={p_test}: Bayes {row['bayes']:.4f}, excess learned {row['learned_excess']:.4f} "
            f"+- {row['learned_excess_stderr']:.4f}, misspecified BP {row['misspecified_excess']:.4f}"
        )
    write_results_csv(rows, out / "ood.csv")
    ps = [r["p_test"] for r in rows]
    plot(
        out / "ood_excess_risk.png", ps,
        {f"learned (trained at p={train_cfg.p:.2f})": (
            [r["learned_excess"] for r in rows], [r["learned_excess_stderr"] for r in rows]),
         "misspecified BP": (
            [r["misspecified_excess"] for r in rows],
            [r["misspecified_excess_stderr"] for r in rows])},
        "test flip probability p", f"excess {train_cfg.task} risk",
    )  # fmt: skip
    summary = {}
    for r in rows:
        summary[f"ood_learned_excess_p{r['p_test']}"] = r["learned_excess"]
        summary[f"ood_misspecified_excess_p{r['p_test']}"] = r["misspecified_excess"]
    return summary


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluations `cfg` asks for; writes DIR/summary.json, CSVs and PNGs."""
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    summary: dict = bayes_mode(cfg) if cfg.bayes else {}
    if cfg.run:
        run = load_run(cfg.run, device)
        summary |= heldout_mode(cfg, run, gen, out)
        if cfg.zero_shot:
            summary |= zero_shot_mode(cfg, run, gen, out)
        if cfg.ood:
            summary |= ood_mode(cfg, run, gen, out)
    atomic_write_json(out / "summary.json", summary)
    return summary
