"""Train one stage of the grid study: GPT-2 on text grids, then its VLM on image grids.

    uv run apps/gridvlm/train.py --stage pretrain --out runs/gridvlm     # LM on text grids
    uv run apps/gridvlm/train.py --stage sft --out runs/gridvlm          # answers-only SFT
    uv run apps/gridvlm/train.py --stage vision --out runs/gridvlm       # CLIP image tower
    uv run apps/gridvlm/train.py --stage vlm --out runs/gridvlm          # GPT-2v on images
    uv run apps/gridvlm/train.py --stage vlm --vlm.encoder onehot --tag onehot --out runs/gridvlm
    uv run apps/gridvlm/eval.py --run runs/gridvlm                        # text vs image accuracy

Recipe: config -> grid corpus (written on first use) -> the earlier stages this one reads
(a missing or unfinished one stops the run, named) -> the stage's model and data ->
mm_train.fit with greedy-decoding evaluation every epoch -> model/ (save_pretrained),
tokenizer/ and summary.json in OUT/<stage>[-tag]/, under mm_train's run rules (a refused
--out, --resume, --overwrite, SIGTERM checkpoints, --loggers).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gridvlm_config import GridVLMConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(GridVLMConfig, argv, preset_dir=HERE / "presets", description=__doc__)
    return train(cfg)


def train(cfg: GridVLMConfig) -> dict[str, Any]:
    # torch and the models load here, once the flags are checked: --help answers at once
    import gridvlm_stages as stages
    import torch
    from gridvlm_tasks import RUN_FILES, ensure_corpus, needed_stages, require_finished, stage_name

    from mm_train import (
        atomic_write_json,
        build_adamw,
        build_scheduler,
        cleanup,
        config_to_dict,
        fit,
        init_distributed,
        make_dataloader,
        seed_everything,
        start_run,
        unwrap_model,
        updates_per_epoch,
        wrap_ddp,
    )

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device)
    root = Path(cfg.out)
    # the earlier stages and the corpus first: a missing stage or a bad corpus stops the run
    # before anything is written
    earlier = {name: require_finished(root, name, cfg.stage) for name in needed_stages(cfg)}
    corpus = ensure_corpus(cfg.data, cfg.vlm.grids if cfg.stage == "vlm" else None)
    name = stage_name(cfg.stage, cfg.tag)
    stage_cfg = dataclasses.replace(cfg, out=str(root / name))
    seed_everything(cfg.seed)  # the same initial weights on every rank
    # the stage's parts are built before anything is written: a sample too long for the
    # context or a changed encoder stops here
    plan = getattr(stages, cfg.stage)(cfg, corpus, root / name, info.device, earlier)
    out = start_run(stage_cfg, info, global_batch=plan.batch_size * info.world_size,
                    files=RUN_FILES)  # fmt: skip
    if info.is_main:
        plan.start(out)
    model = plan.model.to(info.device)
    loader = make_dataloader(
        plan.dataset, batch_size=plan.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
        info=info, num_workers=cfg.workers, collate_fn=plan.collate,
    )  # fmt: skip
    steps_per_epoch = updates_per_epoch(loader)
    total = plan.epochs * steps_per_epoch
    optimizer = build_adamw(model, lr=plan.lr, weight_decay=plan.weight_decay,
                            lr_scales=plan.lr_scales)  # fmt: skip
    scheduler = build_scheduler(optimizer, "cosine", total=total,
                                warmup=min(plan.warmup_steps, total))  # fmt: skip

    def eval_fn(model, step: int) -> dict[str, float]:
        return plan.evaluate(unwrap_model(model)) if info.is_main else {}

    result = fit(
        wrap_ddp(model, info), plan.step_fn, loader, optimizer, scheduler=scheduler,
        epochs=plan.epochs, device=info.device, out_dir=out, log_every=cfg.log_every,
        eval_every=cfg.eval_every or steps_per_epoch, eval_fn=eval_fn, checkpoint_every=steps_per_epoch,
        keep_last=cfg.keep_last, resume=cfg.resume, loggers=cfg.loggers,
        config=config_to_dict(stage_cfg), seed=cfg.seed, desc=f"gridvlm {name}",
    )  # fmt: skip
    summary = {
        **result.eval_metrics,
        "stage": cfg.stage,
        "tag": cfg.tag,
        "train_loss": result.metrics.get("loss"),
        "epochs": result.epoch,
        "steps": result.step,
        "batch_size": plan.batch_size,
        "global_batch": plan.batch_size * info.world_size,
        "train_samples": len(plan.dataset),
        "train_seconds": result.elapsed_s,
        **plan.info,
    }
    if info.is_main:
        plan.save(unwrap_model(model), out)
        atomic_write_json(out / "summary.json", summary)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in result.eval_metrics.items()
                          if isinstance(v, float))  # fmt: skip
        print(f"gridvlm {name}: {result.step} steps -> {shown}  ({out / 'summary.json'})")
    cleanup()
    return summary


if __name__ == "__main__":
    main()
