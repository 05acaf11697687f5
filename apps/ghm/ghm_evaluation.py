"""The GHM evaluations of eval.py: exact Bayes risks, zero-shot vs M, OOD and paired
comparisons of trained clip runs (all scored on common random numbers)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ghm_tasks import EvalConfig, GHMAppConfig, build_ghm, build_model

from mm_data.ghm import (
    bayes_risk_samples,
    k_negative_clip_losses,
    sample_clip,
    sample_zero_shot,
    sample_zero_shot_prompts,
    standard_error,
    zero_shot_logits,
)
from mm_losses import ghm_clip_logits
from mm_train import (
    atomic_write_json,
    load_config,
    load_model_weights,
    resolve_device,
    save_config,
)


def load_clip_run(run: Path, device: torch.device) -> tuple[GHMAppConfig, torch.nn.Module]:
    """The config and trained model of a clip run directory."""
    config_path = run / "config.json"
    if not config_path.is_file():
        raise ValueError(f"--run {run} has no config.json; is it a train.py output directory?")
    cfg = load_config(GHMAppConfig, config_path)
    if cfg.task != "clip":
        raise ValueError(f"{config_path}: task is {cfg.task!r}; --zero-shot/--ood need a clip run")
    model = build_model(cfg)
    load_model_weights(model, run, map_location=device)
    return cfg, model.to(device).eval()


@torch.no_grad()
def model_clip_losses(model, ghm, n: int, batch: int, k: int, generator) -> torch.Tensor:
    """Per-sample K-negative CLIP loss [n] (both directions summed, as in training) of the
    trained model on fresh samples of `ghm`."""
    losses = []
    for start in range(0, n, batch):
        data = sample_clip(ghm, min(batch, n - start), generator, k=k)
        f_text, f_image = model(data.text, data.image)
        logits = ghm_clip_logits(f_image.double(), f_text.double(), k)
        losses.append(k_negative_clip_losses(*logits))
    return torch.cat(losses)


def model_clip_risk(model, ghm, n: int, batch: int, k: int, generator) -> float:
    """Mean K-negative CLIP loss of the trained model on fresh samples of `ghm`."""
    return float(model_clip_losses(model, ghm, n, batch, k, generator).mean())


def replaying(gen: torch.Generator) -> Callable[[], torch.Generator]:
    """Draw one seed from `gen`; each call of the result is a fresh generator on that seed,
    so estimators given one each see the same samples (common random numbers)."""
    seed = int(torch.randint(2**62, (), generator=gen, device=gen.device))
    return lambda: torch.Generator(device=gen.device).manual_seed(seed)


@torch.no_grad()
def zero_shot_risks(model, ghm, m_values, n: int, batch: int, generator) -> dict[int, float]:
    """Zero-shot CE of the learned classifier for each M."""
    data = sample_zero_shot(ghm, n, generator)
    f_image = torch.cat([model.image_encoder(x) for x in data.image.split(batch)])
    out = {}
    for m in m_values:
        prompts = sample_zero_shot_prompts(ghm, m, generator)  # [V, M, n_leaves]
        flat = prompts.reshape(-1, prompts.shape[-1])
        f_prompt = torch.cat([model.text_encoder(x) for x in flat.split(batch)])
        logits = zero_shot_logits(f_image, f_prompt.reshape(prompts.shape[0], m, -1))
        out[m] = float(F.cross_entropy(logits, data.label))
    return out


def fit_inverse_m(ms, risks) -> tuple[float, float]:
    """Least-squares fit risk(M) = A / M + B; returns (A, B)."""
    design = np.stack([1.0 / np.asarray(ms, dtype=float), np.ones(len(ms))], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(risks, dtype=float), rcond=None)
    return float(a), float(b)


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(path: Path, x, series: dict[str, list[float]], xlabel: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, ys in series.items():
        ax.plot(x, ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


TREE_FIELDS = ("n_layer", "n_child", "vocab", "p", "tree_seed", "num_negatives")


def compare_runs(cfg: EvalConfig, train_cfg, model, ghm, gen, out: Path) -> dict:
    """Score --run, every --compare run and Bayes on the same fresh samples; the paired
    difference (run - --run) has a far smaller standard error than two separate risks."""
    same_samples = replaying(gen)
    k = train_cfg.num_negatives
    base = model_clip_losses(model, ghm, cfg.samples, cfg.batch_size, k, same_samples())
    bayes = bayes_risk_samples(ghm, "clip", cfg.samples, cfg.batch_size, same_samples(), k=k)
    bayes_mean = float(bayes.double().mean())
    runs = [(Path(cfg.run), train_cfg, base)]
    for other in map(Path, cfg.compare):
        other_cfg, other_model = load_clip_run(other, base.device)
        for name in TREE_FIELDS:
            if getattr(other_cfg, name) != getattr(train_cfg, name):
                raise ValueError(
                    f"{other / 'config.json'}: {name}={getattr(other_cfg, name)}, but --run "
                    f"{cfg.run} has {name}={getattr(train_cfg, name)}; compare runs of one tree"
                )
        losses = model_clip_losses(other_model, ghm, cfg.samples, cfg.batch_size, k, same_samples())
        runs.append((other, other_cfg, losses))
    rows = []
    for path, run_cfg, losses in runs:
        diff, risk = losses - base, float(losses.mean())
        rows.append(
            {"run": str(path), "variant": run_cfg.variant, "depth": run_cfg.depth,
             "risk": risk, "bayes_risk": bayes_mean, "excess_risk": risk - bayes_mean,
             "relative_excess_risk": (risk - bayes_mean) / bayes_mean,
             "minus_run": float(diff.mean()), "minus_run_stderr": standard_error(diff)}
        )  # fmt: skip
        print(
            f"{path} ({run_cfg.variant}): risk {rows[-1]['risk']:.4f}, excess "
            f"{rows[-1]['excess_risk']:.4f} ({100 * rows[-1]['relative_excess_risk']:.1f}%), "
            f"minus --run {rows[-1]['minus_run']:+.4f} +- {rows[-1]['minus_run_stderr']:.4f}"
        )
    write_csv(out / "compare.csv", rows)
    summary = {"compare_bayes_risk": bayes_mean}
    for i, row in enumerate(rows):
        summary |= {f"compare{i}_{key}": row[key] for key in ("risk", "excess_risk", "minus_run")}
        summary[f"compare{i}_minus_run_stderr"] = row["minus_run_stderr"]
    return summary


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluations `cfg` asks for; writes DIR/summary.json, CSVs and PNGs."""
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    summary: dict = {}

    if cfg.bayes:
        tree = GHMAppConfig(
            p=cfg.p, n_layer=cfg.n_layer, n_child=cfg.n_child, vocab=cfg.vocab,
            tree_seed=cfg.tree_seed, sigma=cfg.sigma,
        )  # fmt: skip
        losses = bayes_risk_samples(
            build_ghm(tree, device), cfg.task, cfg.samples, generator=gen, k=cfg.num_negatives
        )
        summary |= {
            "task": cfg.task,
            "p": cfg.p,
            "bayes_risk": float(losses.double().mean()),
            "bayes_risk_stderr": standard_error(losses),
            "samples": cfg.samples,
        }
        print(f"Bayes {cfg.task} risk at p={cfg.p}: {summary['bayes_risk']:.4f}")

    if cfg.zero_shot or cfg.ood or cfg.compare:
        train_cfg, model = load_clip_run(Path(cfg.run), device)
        ghm = build_ghm(train_cfg, device)
    if cfg.compare:
        summary |= compare_runs(cfg, train_cfg, model, ghm, gen, out)
    if cfg.zero_shot:
        # the learned classifier and Bayes are scored on the same images (one draw of n)
        same_samples = replaying(gen)
        risks = zero_shot_risks(
            model, ghm, cfg.m_values, cfg.samples, cfg.batch_size, same_samples()
        )
        bayes = bayes_risk_samples(ghm, "zsc", cfg.samples, cfg.samples, same_samples())
        a, b = fit_inverse_m(list(risks), list(risks.values()))
        bayes_zsc = float(bayes.double().mean())
        rows = [{"M": m, "risk": r, "bayes_risk": bayes_zsc} for m, r in risks.items()]
        write_csv(out / "zero_shot.csv", rows)
        ms = list(risks)
        plot(
            out / "zero_shot_vs_m.png", ms,
            {"learned": list(risks.values()), f"fit {a:.2f}/M + {b:.3f}": [a / m + b for m in ms],
             "Bayes": [bayes_zsc] * len(ms)},
            "M (prompts per class)", "zero-shot cross-entropy",
        )  # fmt: skip
        summary |= {"zsc_fit_A": a, "zsc_fit_B": b, "zsc_bayes_risk": bayes_zsc}
        summary |= {f"zsc_risk_M{m}": r for m, r in risks.items()}
        print(f"zero-shot: fit {a:.3f}/M + {b:.4f}; Bayes {bayes_zsc:.4f}")
    if cfg.ood:
        rows = []
        k = train_cfg.num_negatives
        for p_test in cfg.p_values:
            shifted = ghm.with_p(p_test)
            # common random numbers: the learned model, exact BP and misspecified BP are
            # scored on the same samples (so at the training p misspecified == Bayes exactly)
            same_samples = replaying(gen)
            learned = model_clip_risk(
                model, shifted, cfg.samples, cfg.batch_size, k, same_samples()
            )
            bayes, misspecified = (
                float(
                    bayes_risk_samples(
                        shifted, "clip", cfg.samples, cfg.batch_size, same_samples(), bp=bp, k=k
                    )
                    .double()
                    .mean()
                )
                for bp in (shifted, ghm)
            )
            rows.append(
                {"p_test": p_test, "learned": learned, "bayes": bayes,
                 "misspecified_bp": misspecified, "learned_excess": learned - bayes,
                 "misspecified_excess": misspecified - bayes}
            )  # fmt: skip
            print(
                f"p={p_test}: learned {learned:.4f}, Bayes {bayes:.4f}, misspecified {misspecified:.4f}"
            )
        write_csv(out / "ood.csv", rows)
        plot(
            out / "ood_excess_risk.png", [r["p_test"] for r in rows],
            {f"learned (trained at p={train_cfg.p:.2f})": [r["learned_excess"] for r in rows],
             "misspecified BP": [r["misspecified_excess"] for r in rows]},
            "test flip probability p", "excess CLIP risk",
        )  # fmt: skip
        summary |= {f"ood_learned_excess_p{r['p_test']}": r["learned_excess"] for r in rows}
        summary |= {
            f"ood_misspecified_excess_p{r['p_test']}": r["misspecified_excess"] for r in rows
        }

    atomic_write_json(out / "summary.json", summary)
    return summary
