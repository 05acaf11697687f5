"""Train contrastive encoders for the identifiability experiments (Daunhawer et al., ICLR 2023).

    uv run apps/identifiability/train.py                           # default: mlp simulation, CPU minutes
    uv run apps/identifiability/train.py --style-change-prob 0.75 \\
        --statistical-dependence --content-dependent-style --out runs/ident-dep
    uv run apps/identifiability/prepare_data.py --out data/m3di-small
    uv run apps/identifiability/train.py --preset imgtxt --datapath data/m3di-small
    torchrun --nproc_per_node 4 apps/identifiability/train.py --preset paper --batch-size 1536 --device cuda

Recipe: config -> data (latent model + frozen mixing, or an image/text folder) -> encoders ->
loss (Lp-SimCLR or NT-Xent) -> fit. Writes DIR/config.json, metrics.jsonl, summary.json and
checkpoints/; mlp runs also DIR/mixing.pt (the frozen f1, f2 and the latent config), imgtxt
runs DIR/vocab.json and DIR/text_meta.json. Evaluate with eval.py --run DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runpy / importers

from identifiability_config import IdentifiabilityConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(
        IdentifiabilityConfig, argv, preset_dir=HERE / "presets", description=__doc__
    )
    return train(cfg)


def train(cfg: IdentifiabilityConfig) -> dict[str, Any]:
    # torch and the models load here, once the flags are checked: --help answers at once
    import torch
    from identifiability_tasks import (
        RUN_FILES,
        encoding_size,
        imgtxt_parts,
        learning_rate,
        simulation_parts,
    )

    from mm_train import (
        atomic_write_json,
        build_scheduler,
        cleanup,
        config_to_dict,
        fit,
        init_distributed,
        seed_everything,
        start_run,
        wrap_ddp,
    )

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device)
    out = start_run(cfg, info, global_batch=cfg.batch_size * info.world_size, files=RUN_FILES)
    seed_everything(cfg.seed)
    if cfg.experiment == "mlp":
        parts = simulation_parts(cfg, out, info.rank, info.is_main, info.device)
        model, data, step_fn, stateful = parts
    else:
        model, data, step_fn, stateful = imgtxt_parts(cfg, out, info.is_main)
    model = model.to(info.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate(cfg))
    scheduler = build_scheduler(
        optimizer, cfg.lr_schedule, total=cfg.steps, min_lr=learning_rate(cfg) / 100
    )
    result = fit(
        wrap_ddp(model, info),
        step_fn,
        data,
        optimizer,
        scheduler=scheduler,
        max_steps=cfg.steps,
        clip_grad_norm=cfg.clip_grad,
        amp=cfg.amp,
        device=info.device,
        out_dir=out,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        keep_last=cfg.keep_last,
        resume=cfg.resume,
        loggers=cfg.loggers,
        config=config_to_dict(cfg),
        stateful=stateful,
        seed=cfg.seed,
        desc=f"identifiability {cfg.experiment}",
    )
    summary = {
        **result.metrics,
        "experiment": cfg.experiment,
        "encoding_size": encoding_size(cfg),
        "lr": learning_rate(cfg),
        "step": result.step,
        "train_seconds": result.elapsed_s,
    }
    if info.is_main:
        atomic_write_json(out / "summary.json", summary)
        print(
            f"{cfg.experiment}: {result.step} steps, final loss {summary.get('loss', float('nan')):.4f} "
            f"in {result.elapsed_s:.0f} s -> {out}; evaluate with "
            f"apps/identifiability/eval.py --run {out}"
        )
    cleanup()
    return summary


if __name__ == "__main__":
    main()
