"""Alignment between every model of one set and every model of another, from feature files.

    uv run apps/alignment/measure.py --features-dir feats/wit_1024 --a lm_small lm_big \\
        --b vit_s vit_b --metric mutual_knn --topk 10 --q 0.95 --concat --out runs/measure
    uv run apps/alignment/measure.py --a feats/x.pt --b feats/y.pt --metric unbiased_cka

Feature files are written by mm_models.features.save_features ([N, layers, width] and the
hash of the sample ids); every file must hold the same samples in the same order. Each
pair's score is the best over layer pairs (after outlier clipping and per-layer L2
normalisation), each layer's kNN lists or kernel computed once for all its pairs. Writes
OUT/alignment.csv (one row per model pair: score, best layers, seconds), OUT/scores.json
(the per-layer score matrices) and OUT/heatmap.png.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_common import fail, refuse_existing
from alignment_config import MeasureConfig

from mm_train import parse_config

RESULTS = ("alignment.csv", "scores.json", "heatmap.png")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    cfg = parse_config(MeasureConfig, argv, description=__doc__)
    return measure(cfg)


def resolve(cfg: MeasureConfig, name: str) -> Path:
    if name.endswith(".pt"):
        return Path(name)
    if not cfg.features_dir:
        fail(f"{name!r} is not a .pt file; pass --features-dir to look names up")
    return Path(cfg.features_dir) / f"{name}.pt"


def load_all(cfg: MeasureConfig) -> dict[str, dict[str, Any]]:
    """Every named features file, checked to hold the same samples in the same order."""
    from mm_eval.alignment import KNN_METRICS
    from mm_models.features import load_features

    loaded: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys([*cfg.a, *cfg.b]):
        try:
            loaded[name] = load_features(resolve(cfg, name))
        except ValueError as error:
            fail(str(error))
    first = next(iter(loaded))
    for name, payload in loaded.items():
        if payload["n"] != loaded[first]["n"]:
            fail(f"{name} holds {payload['n']} samples, {first} holds {loaded[first]['n']}")
        if payload["ids_hash"] != loaded[first]["ids_hash"]:
            fail(f"{name} and {first} hold different samples or another order (ids hash differs)")
    n = loaded[first]["n"]
    uses_topk = cfg.metric in (*KNN_METRICS, "cknna")
    if uses_topk and cfg.topk >= n:
        fail(f"--topk {cfg.topk} must be < the {n} samples of the features")
    return loaded


def measure(cfg: MeasureConfig) -> list[dict[str, Any]]:
    import time

    import torch

    from mm_eval.alignment import layer_alignment
    from mm_eval.identifiability import write_results_csv
    from mm_train import atomic_write_json, resolve_device

    out = Path(cfg.out)
    refuse_existing(out, RESULTS, cfg.overwrite)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    loaded = load_all(cfg)
    rows, matrices = [], {}
    for name_a in cfg.a:
        for name_b in cfg.b:
            started = time.perf_counter()
            result = layer_alignment(
                loaded[name_a]["feats"].to(device), loaded[name_b]["feats"].to(device),
                cfg.metric, topk=cfg.topk, q=cfg.q, precise=cfg.precise, concat=cfg.concat,
            )  # fmt: skip
            la, lb = result.best_layers
            rows.append({"a": name_a, "b": name_b, "metric": cfg.metric, "score": result.best,
                         "layer_a": la, "layer_b": lb,
                         "seconds": round(time.perf_counter() - started, 4)})  # fmt: skip
            matrices[f"{name_a}|{name_b}"] = {"scores": result.scores.tolist(),
                                             "layers_a": result.layers_a,
                                             "layers_b": result.layers_b}  # fmt: skip
            print(f"{name_a} vs {name_b}: {cfg.metric} {result.best:.4f} (layers {la}, {lb})")
    out.mkdir(parents=True, exist_ok=True)
    write_results_csv(rows, out / "alignment.csv")
    atomic_write_json(out / "scores.json", {"metric": cfg.metric, "topk": cfg.topk, "q": cfg.q,
                                            "concat": cfg.concat, "pairs": matrices})  # fmt: skip
    plot(cfg, rows, out / "heatmap.png")
    return rows


def plot(cfg: MeasureConfig, rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[r["score"] for r in rows if r["a"] == a] for a in cfg.a])
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(cfg.b), 1.0 + 0.5 * len(cfg.a)))
    image = ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(len(cfg.b)), cfg.b, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(cfg.a)), cfg.a, fontsize=8)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(image, ax=ax, label=cfg.metric)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
