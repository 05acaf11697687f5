"""Alignment of language with vision as captions drift from their images (uniqueness u).

    uv run apps/alignment/perturb.py --annotations data/pairs.json --images-root data \\
        --lms models/lm1 models/lm2 --vits vit_base_patch16_224:models/vit.safetensors
    uv run apps/alignment/perturb.py --rewriter perturbed/data.json ...   # captions rewritten elsewhere
    uv run apps/alignment/perturb.py --demo --out runs/perturb-demo       # pipeline check, CPU

At each level u (percent of each caption changed by the rewriter; the default replaces
content words, offline), every LM's features (all layers, mask-weighted mean over tokens)
of the perturbed captions are aligned with every ViT's features (CLS after every block)
of the original images: best layer pair (and the all-layers concatenation), after
outlier clipping. Then, per ViT, Spearman rho of alignment vs u over all LMs x levels,
and across LMs the regression of alignment (at the lowest level) on the LM's score
(-bits per byte of the original captions). Features are cached in OUT/features. Writes
OUT/alignment.csv, OUT/levels.csv (word similarity of each level to the originals),
OUT/summary.json and OUT/alignment_vs_u.png.

``--demo`` writes a small generated scene corpus and uses small random-init models: it
checks the pipeline; random models are not aligned to begin with.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_common import (
    DEMO_VIT,
    cached_features,
    demo_models,
    fail,
    finish_plot,
    start_measurement,
    vision_features,
    vit_specs,
)
from alignment_config import PerturbConfig

from mm_train import parse_config

TABLES = ("alignment.csv", "levels.csv", "summary.json")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(PerturbConfig, argv, description=__doc__)
    return run(cfg)


def load_pairs(cfg: PerturbConfig, out: Path):
    """(dataset of image-caption pairs, sample ids): the annotations, or a generated corpus."""
    from mm_data.imagetext import ImageCaptionDataset, write_synthetic_corpus

    if cfg.demo:
        root = out / "demo-corpus"
        if not (root / "train.json").is_file():
            write_synthetic_corpus(root, n_train=200, n_eval=4, n_zeroshot_per_class=0,
                                   image_size=32, seed=cfg.seed)  # fmt: skip
        annotations, images_root = root / "train.json", root / "images"
    else:
        annotations, images_root = Path(cfg.annotations), Path(cfg.images_root or ".")
    try:
        data = ImageCaptionDataset(annotations, images_root)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    n = min(cfg.samples or len(data), len(data))
    ids = [f"{data.annotations[i].get('image')}#{i}" for i in range(n)]
    return data, n, ids


def run(cfg: PerturbConfig) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    from mm_data.alignment import load_rewriter, word_similarity
    from mm_eval.alignment import layer_alignment
    from mm_eval.identifiability import write_results_csv
    from mm_models.features import lm_features, load_lm
    from mm_train import atomic_write_json

    out, device = start_measurement(cfg, TABLES)
    data, n, ids = load_pairs(cfg, out)
    captions = data.captions[:n]
    if n <= cfg.topk:
        fail(f"--topk {cfg.topk} must be < the {n} pairs")
    try:
        rewriter = load_rewriter(cfg.rewriter, captions, cfg.seed)
        perturbed = {u: list(rewriter(captions, u / 100)) for u in cfg.levels}
    except ValueError as error:
        fail(str(error))
    if cfg.demo:
        lms, vits, image_size = demo_models(out, captions), [DEMO_VIT], 32
    else:
        lms, vits, image_size = list(cfg.lms), vit_specs(cfg.vits), cfg.image_size
    cache = out / "features"
    vision = vision_features(vits, lambda i: data[i]["image"], n, ids, cache, device, image_size,
                             cfg.batch_size)  # fmt: skip
    rows, bpb = [], {}
    for path in lms:
        lm = Path(path).name
        model, tokenizer = load_lm(path, device)
        _, bits = lm_features(model, tokenizer, captions, batch_size=cfg.batch_size, progress=False)
        bpb[lm] = float(bits.mean())
        for u in cfg.levels:
            feats = cached_features(cache, f"lm-{lm}-u{u}", [f"{i}@{u}" for i in ids],
                                    lambda u=u, m=model, t=tokenizer: lm_features(
                                        m, t, perturbed[u], batch_size=cfg.batch_size)[0])  # fmt: skip
            for label, vfeats in vision.items():
                result = layer_alignment(feats, vfeats, cfg.metric, topk=cfg.topk, q=cfg.q,
                                         concat=cfg.concat)  # fmt: skip
                rows.append({"lm": lm, "vit": label, "level": u, "alignment": result.best,
                             "lm_layer": result.best_layers[0],
                             "vit_layer": result.best_layers[1]})  # fmt: skip
        print(f"{lm}: aligned at {len(cfg.levels)} levels with {len(vision)} ViTs", flush=True)
    summary: dict[str, Any] = {"metric": cfg.metric, "lms": len(lms), "vits": len(vision),
                               "rewriter": cfg.rewriter}  # fmt: skip
    rhos = []
    for label in vision:
        mine = [r for r in rows if r["vit"] == label]
        rho = float(stats.spearmanr([r["level"] for r in mine], [r["alignment"] for r in mine])[0])
        summary[f"rho_{label}"] = rho
        rhos.append(rho)
        low = min(cfg.levels)
        first = [next(r["alignment"] for r in mine if r["lm"] == Path(p).name and r["level"] == low)
                 for p in lms]  # fmt: skip
        score = [-bpb[Path(p).name] for p in lms]
        if len(lms) >= 2 and len(set(score)) > 1:
            summary[f"slope_vs_lm_score_{label}"] = float(np.polyfit(score, first, 1)[0])
    summary["rho_mean"] = float(np.mean(rhos))
    summary.update({f"bpb_{k}": v for k, v in bpb.items()})
    levels = [{"level": u, "word_similarity": word_similarity(captions, perturbed[u])}
              for u in cfg.levels]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_results_csv(rows, out / "alignment.csv")
    write_results_csv(levels, out / "levels.csv")
    atomic_write_json(out / "summary.json", summary)
    plot(cfg, rows, list(vision), out / "alignment_vs_u.png")
    print(f"Spearman rho(alignment, u), mean over ViTs: {summary['rho_mean']:.3f} -> {out}")
    return summary


def plot(cfg: PerturbConfig, rows, vits: list[str], path: Path) -> None:
    """Alignment vs u per ViT: mean over LMs with the standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for vit in vits:
        values = [[r["alignment"] for r in rows if r["vit"] == vit and r["level"] == u]
                  for u in cfg.levels]  # fmt: skip
        mean = [np.mean(v) for v in values]
        sem = [np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0 for v in values]
        ax.errorbar(cfg.levels, mean, yerr=sem, marker="o", capsize=3, label=vit)
    ax.set_xlabel("caption perturbation u (%)")
    ax.set_ylabel(f"alignment ({cfg.metric})")
    finish_plot(fig, ax, path)


if __name__ == "__main__":
    main()
