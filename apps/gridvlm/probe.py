"""Linear probes: can a linear classifier read each cell's object from the VLM's image tokens?

    uv run apps/gridvlm/probe.py --run runs/gridvlm                    # the vlm/ stage
    uv run apps/gridvlm/probe.py --run runs/gridvlm --stage vlm-onehot

For every grid position, the tokens covering that cell (the k x k block of the patch grid
over the cell; one token per cell for the one-hot encoder) are concatenated, once from the
vision encoder's output and once after the projector, and a multinomial logistic
regression (L-BFGS) is trained on training grids to predict the cell's class; reported is
its accuracy on held-out test grids, per position. Writes RUN/<stage>/probe.json and
RUN/<stage>/probe.png.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gridvlm_config import ProbeConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(ProbeConfig, argv, description=__doc__)
    return probe(cfg)


def _plot(results: dict[str, list[float]], chance: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.8 / len(results)
    for k, (name, values) in enumerate(results.items()):
        x = np.arange(len(values)) + k * width
        ax.bar(x, values, width=width, label=name)
    ax.axhline(chance, color="k", lw=0.8, ls="--", label="chance")
    ax.set_xticks(np.arange(len(next(iter(results.values())))) + 0.4 - width / 2)
    ax.set_xticklabels([str(p) for p in range(len(next(iter(results.values()))))])
    ax.set_xlabel("grid position (row-major)")
    ax.set_ylabel("held-out probe accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def probe(cfg: ProbeConfig) -> dict[str, Any]:
    import numpy as np
    import torch
    from gridvlm_config import GridVLMConfig
    from gridvlm_stages import visual_inputs
    from gridvlm_tasks import MODEL_DIR, ensure_corpus, eval_records, fail

    from mm_data.grids import GridDataset
    from mm_eval.grids import cell_token_blocks, position_probes
    from mm_models.gridvlm import GridVLM
    from mm_train import atomic_write_json, load_config, resolve_device

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    stage = Path(cfg.run) / cfg.stage
    train_cfg = load_config(GridVLMConfig, stage / "config.json")
    corpus = ensure_corpus(train_cfg.data)
    device = resolve_device(cfg.device)
    model = GridVLM.from_pretrained(stage / MODEL_DIR).to(device).eval()

    @torch.no_grad()
    def features(split: str, grids: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        dataset = GridDataset(corpus.image_root, split)
        records = eval_records(dataset, grids)
        if len(records) < grids:
            fail(f"the {split} split has {len(records)} grids, fewer than asked ({grids})")
        visual = visual_inputs(train_cfg, dataset.root, records)
        rows, cols = records[0]["rows"], records[0]["cols"]
        blocks = cell_token_blocks(model.num_image_tokens, rows, cols)
        encoder, projected = [], []
        for start in range(0, len(records), 256):
            tokens = model.vision(visual[start : start + 256].to(device))
            encoder.append(tokens.float().cpu())
            projected.append(model.projector(tokens).float().cpu())
        out = {}
        for name, chunks in (("encoder", encoder), ("projector", projected)):
            tokens = torch.cat(chunks)  # [N, T, D]
            out[name] = torch.stack([tokens[:, b].flatten(1) for b in blocks], dim=1).numpy()
        labels = np.array([r["cells"] for r in records])
        return out, labels

    train_x, train_y = features("train", cfg.train_grids)
    test_x, test_y = features("test", cfg.test_grids)
    results = {}
    for name in ("encoder", "projector"):
        acc = position_probes(train_x[name], train_y, test_x[name], test_y, max_iter=cfg.max_iter)
        results[name] = [float(a) for a in acc]
        print(f"{cfg.stage} {name} tokens: probe accuracy per position "
              f"{' '.join(f'{a:.3f}' for a in acc)} (mean {acc.mean():.3f})")  # fmt: skip
    summary = {
        "stage": cfg.stage,
        "encoder": train_cfg.vlm.encoder,
        "train_grids": cfg.train_grids,
        "test_grids": cfg.test_grids,
        "per_position": results,
        "mean": {k: float(np.mean(v)) for k, v in results.items()},
        "chance": 1.0 / len(corpus.class_names),
    }
    atomic_write_json(stage / "probe.json", summary)
    _plot(results, summary["chance"], stage / "probe.png",
          f"linear probes per cell, {cfg.stage} ({train_cfg.vlm.encoder} encoder)")  # fmt: skip
    print(f"wrote {stage / 'probe.json'} and {stage / 'probe.png'}")
    return summary


if __name__ == "__main__":
    main()
