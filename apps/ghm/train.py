"""Train a transformer on a GHM task and compare its risk with the exact Bayes risk.

    uv run apps/ghm/train.py                      # default preset: CLIP task, small tree, CPU minutes
    uv run apps/ghm/train.py --preset paper --task dns --variant shallow
    torchrun --nproc_per_node 4 apps/ghm/train.py --preset paper --device cuda

Recipe: config -> GHM (data model) -> model -> loss -> fit on fresh samples -> risk vs Bayes.
Writes DIR/config.json, run.json, metrics.jsonl, summary.json (risk, bayes_risk,
excess_risk), curves.png and checkpoints under DIR/checkpoints/. An --out that holds a run
needs --resume (continue) or --overwrite (start again); SIGTERM checkpoints and exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ghm_config import GHMAppConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(GHMAppConfig, argv, preset_dir=HERE / "presets", description=__doc__)
    return train(cfg)


def train(cfg: GHMAppConfig) -> dict[str, float]:
    # torch and the models load here, once the flags are checked: --help and flag errors
    # answer at once
    import torch
    from ghm_tasks import (
        DATA_TASK,
        build_ghm,
        build_model,
        learning_rate,
        load_frozen_clip,
        make_step_fn,
        sample_fn,
    )

    from mm_data.ghm import bayes_risk_samples, standard_error
    from mm_train import (
        OnlineSampler,
        RecentLosses,
        RunLogger,
        all_gather_cat,
        build_adamw,
        build_scheduler,
        cleanup,
        config_to_dict,
        fit,
        init_distributed,
        seed_everything,
        start_run,
        worker_seed,
        wrap_ddp,
    )

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device)
    out = start_run(cfg, info, global_batch=cfg.batch_size * info.world_size)
    seed_everything(cfg.seed)

    ghm = build_ghm(cfg, info.device)
    clip = load_frozen_clip(cfg, info.device) if cfg.task in ("sdns", "snwp") else None
    model = build_model(cfg).to(info.device)
    lr = learning_rate(cfg)
    optimizer = build_adamw(model, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, "cosine", total=cfg.steps, min_lr=lr / 1000)
    sampler = OnlineSampler(
        sample_fn(cfg, ghm), seed=worker_seed(cfg.seed, info.rank), device=info.device
    )
    recent = RecentLosses(cfg.risk_window)
    task_step = make_step_fn(cfg, ghm, clip)

    def step_fn(model, batch):
        loss, metrics = task_step(model, batch)
        recent.add(metrics["task_loss"])
        return loss, metrics

    result = fit(
        wrap_ddp(model, info),
        step_fn,
        sampler,
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
        stateful={"data": sampler, "recent_losses": recent},
        seed=cfg.seed,
        desc=f"ghm {cfg.task}/{cfg.variant}",
    )

    # the risk window and the Bayes samples are shared out over the ranks and gathered:
    # the same numbers whatever the number of processes
    share = cfg.bayes_samples // info.world_size + (info.rank < cfg.bayes_samples % info.world_size)
    generator = torch.Generator(device=info.device).manual_seed(
        worker_seed(10_000 + cfg.seed, info.rank)
    )
    bayes = all_gather_cat(
        bayes_risk_samples(
            ghm, DATA_TASK[cfg.task], share, generator=generator, k=cfg.num_negatives
        )
        if share
        else torch.empty(0, device=info.device)
    )
    risk, bayes_mean = recent.mean_over_ranks(), float(bayes.double().mean())
    summary = {
        "task": cfg.task,
        "variant": cfg.variant,
        "attention": cfg.attention,
        "p": cfg.p,
        "d_model": model.config.d_model,
        "depth": model.config.n_layer,
        "n_head": model.config.n_head,
        "lr": lr,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "global_batch": cfg.batch_size * info.world_size,
        "steps": result.step,
        "risk": risk,
        "bayes_risk": bayes_mean,
        "bayes_risk_stderr": standard_error(bayes),
        "bayes_samples": bayes.numel(),
        "excess_risk": risk - bayes_mean,
        "relative_excess_risk": (risk - bayes_mean) / bayes_mean,
        "train_seconds": result.elapsed_s,
    }
    if info.is_main:
        RunLogger(out, resume_step=result.step).write_summary(summary)
        print(
            f"{cfg.task}/{cfg.variant} at p={cfg.p}: risk {risk:.4f} (mean of the last "
            f"{min(recent.count, cfg.risk_window)} training losses), Bayes risk {bayes_mean:.4f} "
            f"+- {summary['bayes_risk_stderr']:.4f}, excess {risk - bayes_mean:.4f} "
            f"({100 * summary['relative_excess_risk']:.1f}%)  -> {out / 'summary.json'}"
        )
    cleanup()
    return summary


if __name__ == "__main__":
    main()
