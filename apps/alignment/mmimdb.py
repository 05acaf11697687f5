"""Does alignment with vision predict an LM's performance? MM-IMDb genres, across LMs.

    uv run apps/alignment/mmimdb.py --data-root data/mmimdb --lms models/lm1 models/lm2 \\
        models/lm3 --vits vit_base_patch16_224:models/vit_b16.safetensors --out runs/mmimdb
    uv run apps/alignment/mmimdb.py --demo --out runs/mmimdb-demo       # pipeline check, CPU

For each language model: masked-mean features of its last layer on each movie's plot
(the first paragraph of more than one word), and its performance, the macro-F1 of a
multi-label linear probe on those features over the 23 genres (BCE with pos_weight, Adam
over an lr x weight-decay grid, epoch and grid point chosen on dev). For each vision model:
the CLS token after every block on the posters. Alignment of each (LM, ViT) pair on the
test movies (best ViT layer), then, per ViT, Spearman rho and the regression slope of
alignment vs F1 across the LMs, overall and per genre, averaged over the ViTs. Features
are cached in OUT/features (with the ids' hash). Writes OUT/probe.csv, OUT/alignment.csv,
OUT/correlation.csv, OUT/summary.json and OUT/alignment_vs_f1.png.

``--demo`` builds three small random-init GPT-2s (a byte-level BPE trained on the plots)
and one small ViT, on the generated miniature: it exercises the pipeline; random models
carry no alignment-performance relation worth reading.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_common import (
    DEMO_VIT,
    MINIATURE_MOVIES,
    cached_features,
    demo_models,
    fail,
    finish_plot,
    start_measurement,
    vision_features,
    vit_specs,
)
from alignment_config import MMIMDbConfig

from mm_train import parse_config

TABLES = ("probe.csv", "alignment.csv", "correlation.csv", "summary.json")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(MMIMDbConfig, argv, description=__doc__)
    return run(cfg)


def run(cfg: MMIMDbConfig) -> dict[str, Any]:
    import numpy as np
    import torch
    from scipy import stats

    from mm_data.alignment import GENRES, MMIMDb, write_miniature
    from mm_eval.alignment import layer_alignment
    from mm_eval.identifiability import write_results_csv
    from mm_eval.probes import multilabel_probe
    from mm_models.features import lm_features, load_lm
    from mm_train import atomic_write_json

    out, device = start_measurement(cfg, TABLES)
    root = Path(cfg.data_root)
    if not root.exists():
        print(f"[mmimdb] writing a generated MM-IMDb miniature to {root}", flush=True)
        write_miniature(root, per_split=MINIATURE_MOVIES, seed=0, size=48)
    try:
        splits = {}
        for split in ("train", "dev", "test"):
            data = MMIMDb(root, split, load_images=False)
            splits[split] = data.head(cfg.ids or len(data))
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    if cfg.demo:
        lms, vits, image_size = demo_models(out, splits["train"].captions), [DEMO_VIT], 32
    else:
        lms, vits, image_size = list(cfg.lms), vit_specs(cfg.vits), cfg.image_size

    def cached(name: str, split: str, compute) -> torch.Tensor:
        return cached_features(out / "features", f"{name}-{split}", splits[split].ids, compute)

    lm_names = [Path(p).name for p in lms]
    probe_rows, lm_test, f1 = [], {}, {}
    for name, path in zip(lm_names, lms):
        model, tokenizer = None, None

        def compute(split: str, _path=path):
            nonlocal model, tokenizer
            if model is None:
                model, tokenizer = load_lm(_path, device)
            return lm_features(model, tokenizer, splits[split].captions,
                               batch_size=cfg.batch_size)[0]  # fmt: skip

        feats = {s: cached(f"lm-{name}", s, lambda s=s: compute(s))[:, -1] for s in splits}
        result = multilabel_probe(*[(feats[s], splits[s].labels) for s in ("train", "dev", "test")],
                                  epochs=cfg.probe_epochs)  # fmt: skip
        f1[name] = result
        lm_test[name] = feats["test"][:, None]
        probe_rows.append({"lm": name, "genre": "all", "f1": result["test_f1"]})
        probe_rows += [{"lm": name, "genre": g, "f1": v}
                       for g, v in zip(GENRES, result["test_f1_per_class"])]  # fmt: skip
        print(f"{name}: probe test macro-F1 {result['test_f1']:.3f}", flush=True)
    test = splits["test"]
    vision = vision_features(vits, test.image, len(test), test.ids, out / "features", device,
                             image_size, cfg.batch_size)  # fmt: skip
    align_rows, vit_names = [], list(vision)
    for label, vfeats in vision.items():
        for name in lm_names:
            result = layer_alignment(lm_test[name], vfeats, cfg.metric, topk=cfg.topk, q=cfg.q)
            align_rows.append({"lm": name, "vit": label, "metric": cfg.metric,
                               "alignment": result.best, "vit_layer": result.best_layers[1],
                               "f1": f1[name]["test_f1"]})  # fmt: skip
    corr_rows = []
    for genre_index, genre in [(-1, "all"), *enumerate(GENRES)]:
        rhos, slopes = [], []
        for vit in vit_names:
            a = [r["alignment"] for r in align_rows if r["vit"] == vit]
            y = [f1[n]["test_f1"] if genre_index < 0 else f1[n]["test_f1_per_class"][genre_index]
                 for n in lm_names]  # fmt: skip
            if len(set(y)) > 1 and len(set(a)) > 1:
                rhos.append(float(stats.spearmanr(a, y)[0]))
                slopes.append(float(np.polyfit(a, y, 1)[0]))
        # None where no ViT gives a correlation (a genre every LM scores the same on)
        corr_rows.append({"genre": genre, "spearman": float(np.mean(rhos)) if rhos else None,
                          "slope": float(np.mean(slopes)) if slopes else None,
                          "vits": len(rhos)})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_results_csv(probe_rows, out / "probe.csv")
    write_results_csv(align_rows, out / "alignment.csv")
    write_results_csv(corr_rows, out / "correlation.csv")
    overall = corr_rows[0]
    summary = {"spearman_all": overall["spearman"], "slope_all": overall["slope"],
               "lms": len(lm_names), "vits": len(vit_names), "metric": cfg.metric,
               **{f"f1_{n}": f1[n]["test_f1"] for n in lm_names},
               **{f"spearman_{r['genre']}": r["spearman"] for r in corr_rows[1:]}}  # fmt: skip
    atomic_write_json(out / "summary.json", summary)
    plot(align_rows, vit_names, out / "alignment_vs_f1.png", cfg.metric)
    print(f"alignment vs macro-F1 across {len(lm_names)} LMs: Spearman {overall['spearman']}, "
          f"slope {overall['slope']} -> {out}")  # fmt: skip
    return summary


def plot(rows, vit_names, path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for vit in vit_names:
        mine = [r for r in rows if r["vit"] == vit]
        ax.plot([r["alignment"] for r in mine], [r["f1"] for r in mine], "o", label=vit)
        for r in mine:
            ax.annotate(r["lm"], (r["alignment"], r["f1"]), fontsize=6)
    ax.set_xlabel(f"alignment with vision ({metric})")
    ax.set_ylabel("genre probe macro-F1")
    finish_plot(fig, ax, path)


if __name__ == "__main__":
    main()
