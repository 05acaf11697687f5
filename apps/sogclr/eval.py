"""Evaluate a trained sogclr run: retrieval both ways and zero-shot classification.

    uv run apps/sogclr/eval.py --checkpoint runs/sogclr                 # the run's final model
    uv run apps/sogclr/eval.py --checkpoint runs/sogclr/checkpoints/step_00000750.pt
    uv run apps/sogclr/eval.py --checkpoint RUN --no-use-run-data --data.root DATA \\
        --data.eval-file coco_val.json --data.eval-images mscoco_val --data.zeroshot-dir imagenet/val

Writes OUT/summary.json (txt_r1/5/10, img_r1/5/10, r_mean, rsum, mean/median ranks,
zeroshot_top1, zeroshot_top5), OUT/config.json of this evaluation; OUT defaults to the run
directory (eval_summary.json there, so the training summary stays).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sogclr_config import EvalConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(EvalConfig, argv, preset_dir=HERE / "presets" / "eval", description=__doc__)
    return evaluate(cfg)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    import torch
    from sogclr_config import SogCLRConfig
    from sogclr_tasks import TOKENIZER_DIR, Evaluation, model_config

    from mm_models.dual_encoder import DualEncoder
    from mm_models.text_tokenizer import load_or_train_tokenizer
    from mm_train import (
        atomic_write_json,
        load_config,
        load_model_weights,
        resolve_device,
        save_config,
    )

    path = Path(cfg.checkpoint)
    run = path if path.is_dir() else path.parent.parent  # RUN/checkpoints/step_X.pt
    if not (run / "config.json").is_file():
        raise SystemExit(
            f"error: --checkpoint {path}: no config.json in {run}; is it a train.py run?"
        )
    train_cfg = load_config(SogCLRConfig, run / "config.json")
    device = resolve_device(cfg.device)
    tokenizer = load_or_train_tokenizer(str(run / TOKENIZER_DIR), [])
    model = DualEncoder(model_config(train_cfg, len(tokenizer)))
    load_model_weights(model, path, map_location="cpu")
    model = model.to(device).eval()
    data = train_cfg.data if cfg.use_run_data else cfg.data
    evaluation = Evaluation(
        data, train_cfg.image_size, tokenizer, train_cfg.max_tokens, train_cfg.max_words,
        batch_size=cfg.batch_size, workers=cfg.workers,
    )  # fmt: skip
    if evaluation.retrieval is None and evaluation.zeroshot is None:
        raise SystemExit(
            f"error: {data.root} has neither {data.eval_file!r} nor {data.zeroshot_dir!r}"
        )
    with torch.no_grad():
        metrics = evaluation(model)
    out = Path(cfg.out) if cfg.out else run
    name = "summary.json" if cfg.out else "eval_summary.json"
    summary = {"checkpoint": str(path), "loss_name": train_cfg.loss, **metrics}
    save_config(cfg, out / ("config.json" if cfg.out else "eval_config.json"))
    atomic_write_json(out / name, summary)
    shown = ", ".join(
        f"{k} {v:.2f}"
        for k, v in metrics.items()
        if k in ("r_mean", "txt_r1", "img_r1", "zeroshot_top1")
    )
    print(f"{path}: {shown} -> {out / name}")
    return summary


if __name__ == "__main__":
    main()
