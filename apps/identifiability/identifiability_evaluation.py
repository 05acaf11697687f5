"""The evaluation of eval.py: fit predictors of each latent factor from the encodings of a
trained run (validation set) and score them on a test set."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from identifiability_tasks import (
    EvalConfig,
    IdentifiabilityConfig,
    PairDataset,
    load_imgtxt_run,
    load_trained_simulation,
    mixed_views,
    open_split,
)
from threadpoolctl import threadpool_limits

from mm_data.identifiability import FACTORS, LatentModel, Multimodal3DIdent
from mm_eval.identifiability import (
    evaluate_prediction,
    evaluate_targets,
    plot_identifiability_heatmap,
    write_results_csv,
)
from mm_train import atomic_write_json, load_config, resolve_device

MLP_COLUMNS = ["encoder", "target", "r2_linear", "r2_nonlinear", "nonlinear"]
SIM_TARGETS = ("c", "s", "s_tilde", "m1", "m2")
IMGTXT_COLUMNS = [
    "modality", "factor_name", "factor_type", "r2_linreg", "r2_krreg", "acc_logreg", "acc_mlp",
    "chance", "nonlinear",
]  # fmt: skip


def nonlinear_kind(cfg: EvalConfig, fit_samples: int) -> str:
    """The nonlinear regressor to use for a fit set of `fit_samples` rows."""
    if cfg.nonlinear != "auto":
        return cfg.nonlinear
    return "kernel_ridge" if fit_samples <= cfg.exact_max else "kernel_ridge_nystroem"


@torch.no_grad()
def encode(encoder: torch.nn.Module, x: torch.Tensor, batch: int, device) -> np.ndarray:
    """Encoder outputs of x in batches, as a float64 numpy array."""
    parts = [encoder(chunk.to(device)).double().cpu() for chunk in x.split(batch)]
    return torch.cat(parts).numpy()


# --------------------------------------------------------------------- numerical simulation


def simulation_sets(
    latents: LatentModel, f1, f2, n: int, generator: torch.Generator, intervene: bool = False
):
    """(x1, x2, targets) of n fresh pairs; targets maps name -> [n, dim] array (dim > 0).
    Under `intervene` the targets also hold c_prime, the content that entered the mixing."""
    batch, x1, x2 = mixed_views(latents, f1, f2, n, generator, intervene=intervene)
    names = ("c", "c_prime", "s", "s_tilde", "m1", "m2") if intervene else SIM_TARGETS
    targets = {k: getattr(batch, k).double().numpy() for k in names}
    return x1, x2, {k: v for k, v in targets.items() if v.shape[1] > 0}


def evaluate_simulation(
    cfg: EvalConfig, run: Path, train_cfg: IdentifiabilityConfig, intervene: bool = False
):
    """Rows (encoder, target, r2_linear, r2_nonlinear, nonlinear) of an mlp run; with
    `intervene` the predictors are fit and scored on intervened pairs."""
    latents, f1, f2, model = load_trained_simulation(run, train_cfg)
    device = resolve_device(cfg.device)
    model.to(device).eval()
    generator = torch.Generator().manual_seed(10_000 + cfg.seed)
    val = simulation_sets(latents, f1, f2, cfg.val_samples, generator, intervene)
    test = simulation_sets(latents, f1, f2, cfg.test_samples, generator, intervene)
    kind = nonlinear_kind(cfg, cfg.val_samples)
    rows = []
    label = "intervention: " if intervene else ""
    for name, encoder, view in (("hz1", model.g1, 0), ("hz2", model.g2, 1)):
        h_val = encode(encoder, val[view], cfg.batch_size, device)
        h_test = encode(encoder, test[view], cfg.batch_size, device)
        metrics = {"r2_linear": "linear", "r2_nonlinear": kind}
        for row in evaluate_targets(
            h_val, h_test, val[2], test[2], metrics, seed=cfg.seed, encoder=name
        ):
            rows.append({**row, "nonlinear": kind})
            print(
                f"{label}{name} -> {row['target']:8s} R2 linear {row['r2_linear']:.3f}  "
                f"nonlinear {row['r2_nonlinear']:.3f}",
                flush=True,
            )
    return rows, MLP_COLUMNS, ("encoder", "target"), ("r2_linear", "r2_nonlinear")


# --------------------------------------------------------------------------- image/text


@torch.no_grad()
def encode_split(
    model, data: Multimodal3DIdent, batch: int, device, stats=None
) -> tuple[np.ndarray, ...]:
    """(image encodings, text encodings) of a whole split, in index order; images normalised
    with the run's training statistics `stats`."""
    loader = torch.utils.data.DataLoader(PairDataset(data, stats), batch_size=batch, shuffle=False)
    h_image, h_text = [], []
    for item in loader:
        hi, ht = model(item["image"].to(device), item["text"].to(device))
        h_image.append(hi.double().cpu())
        h_text.append(ht.double().cpu())
    return torch.cat(h_image).numpy(), torch.cat(h_text).numpy()


def chance_score(train_y: np.ndarray, test_y: np.ndarray, factor_type: str) -> float:
    """Score without the encoding: majority-class accuracy, or R^2 = 0 of the mean (fit set)."""
    if factor_type == "continuous":
        return 0.0
    values, counts = np.unique(train_y, return_counts=True)
    return float(np.mean(test_y == values[np.argmax(counts)]))


def factor_row(modality, name, factor_type, h_val, h_test, y_val, y_test, kind, seed) -> dict:
    """One results row: R^2 (continuous) or accuracy (discrete) of two predictors."""
    row: dict[str, Any] = {"modality": modality, "factor_name": name, "factor_type": factor_type}
    if factor_type == "continuous":
        pairs = {"r2_linreg": "linear", "r2_krreg": kind}
    else:
        pairs = {"acc_logreg": "logistic", "acc_mlp": "mlp_classifier"}
    for column, metric in pairs.items():
        row[column] = evaluate_prediction(h_val, y_val, h_test, y_test, metric, seed=seed)
    row["chance"] = chance_score(y_val, y_test, factor_type)
    row["nonlinear"] = kind
    return row


def evaluate_imgtxt(cfg: EvalConfig, run: Path, train_cfg: IdentifiabilityConfig):
    """Rows (modality, factor_name, factor_type, r2_*, acc_*, chance) of an imgtxt run."""
    device = resolve_device(cfg.device)
    model, vocab, max_len, stats = load_imgtxt_run(run, train_cfg, device)
    root = Path(cfg.datapath or train_cfg.datapath)
    val = open_split(root, "val", vocab, max_len, train_cfg.image_size)
    test = open_split(root, "test", vocab, max_len, train_cfg.image_size)
    encodings = {"val": encode_split(model, val, cfg.batch_size, device, stats)}
    encodings["test"] = encode_split(model, test, cfg.batch_size, device, stats)
    kind = nonlinear_kind(cfg, len(val))
    rows = []
    for m, modality in enumerate(("image", "text")):
        latents_val = val.latents_image if modality == "image" else val.latents_text
        latents_test = test.latents_image if modality == "image" else test.latents_text
        for name, factor_type in FACTORS[modality].items():
            row = factor_row(
                modality, name, factor_type, encodings["val"][m], encodings["test"][m],
                latents_val[name], latents_test[name], kind, cfg.seed,
            )  # fmt: skip
            rows.append(row)
            score = row.get("r2_krreg", row.get("acc_mlp"))
            print(f"{modality:5s} {name:20s} {score:.3f} (chance {row['chance']:.3f})", flush=True)
    metrics = ("r2_linreg", "r2_krreg", "acc_logreg", "acc_mlp")
    return rows, IMGTXT_COLUMNS, ("modality", "factor_name"), metrics


def flat_summary(rows: list[dict], row_keys, metric_keys) -> dict[str, float]:
    """{"<row keys joined by />/<metric>": value} for every number in the table."""
    summary = {}
    for row in rows:
        prefix = "/".join(str(row[k]) for k in row_keys)
        for metric in metric_keys:
            if isinstance(row.get(metric), float):
                summary[f"{prefix}/{metric}"] = row[metric]
    return summary


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate the run of `cfg`; writes results.csv (results_intervention.csv under
    --intervention), the heatmap and the summaries."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
        threadpool_limits(cfg.threads)  # numpy/scikit-learn BLAS and OpenMP pools too
    run = Path(cfg.run)
    train_cfg = load_config(IdentifiabilityConfig, Path(run) / "config.json")
    started = time.perf_counter()
    if train_cfg.experiment == "mlp":
        rows, columns, row_keys, metric_keys = evaluate_simulation(
            cfg, run, train_cfg, intervene=cfg.intervention
        )
    else:
        rows, columns, row_keys, metric_keys = evaluate_imgtxt(cfg, run, train_cfg)
    out = Path(cfg.out) if cfg.out else run
    stem = "results_intervention" if cfg.intervention else "results"
    write_results_csv(rows, out / f"{stem}.csv", columns=columns)
    plot_identifiability_heatmap(
        rows, out / f"{stem}_heatmap.png", row_keys=row_keys, metric_keys=metric_keys,
        title=f"{train_cfg.experiment}: {run.name}" + (" (intervention)" if cfg.intervention else ""),
    )  # fmt: skip
    summary = flat_summary(rows, row_keys, metric_keys)
    if cfg.intervention:
        summary = {f"intervention/{k}": v for k, v in summary.items()}
    summary[f"{stem.replace('results', 'eval')}_seconds"] = time.perf_counter() - started
    atomic_write_json(
        out / f"eval_summary{'_intervention' if cfg.intervention else ''}.json", summary
    )
    train_summary = out / "summary.json"
    merged = json.loads(train_summary.read_text()) if train_summary.is_file() else {}
    atomic_write_json(train_summary, {**merged, **summary})
    print(f"results: {out / f'{stem}.csv'}  heatmap: {out / f'{stem}_heatmap.png'}")
    return {"rows": rows, **summary}
