"""Train a CLIP-style dual encoder with any loss of the SogCLR family (or CLIP, SigLIP, ...).

    uv run apps/sogclr/train.py                                  # default: sogclr, synthetic corpus, CPU
    uv run apps/sogclr/train.py --loss clip --batch-size 32 --epochs 6 --seed 1 --out runs/clip
    uv run apps/sogclr/train.py --preset cc3m --data.root DATA --device cuda    # the paper's setup
    torchrun --nproc_per_node 4 apps/sogclr/train.py --preset cc3m --device cuda

Recipe: config -> image-caption data (generated on first use) -> tokenizer -> dual encoder
-> loss -> mm_train.fit with retrieval + zero-shot evaluation and a checkpoint (with the
loss's per-sample state) every epoch. Writes DIR/config.json, run.json, metrics.jsonl,
summary.json (r_mean, txt_r1, img_r1, zeroshot_top1, ...), curves.png, checkpoints/,
tokenizer/, dataset.json and model/ (the trained encoder, for eval.py and from_pretrained).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sogclr_config import SogCLRConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(SogCLRConfig, argv, preset_dir=HERE / "presets", description=__doc__)
    return train(cfg)


def train(cfg: SogCLRConfig) -> dict[str, Any]:
    # torch and the models load here, once the flags are checked: --help answers at once
    import torch
    from sogclr_tasks import (
        MODEL_DIR,
        RUN_FILES,
        Collate,
        Evaluation,
        ShardLoader,
        build_loss,
        build_tokenizer,
        check_dataset_record,
        dataset_record,
        ensure_corpus,
        load_initial_weights,
        make_step_fn,
        model_config,
        train_dataset,
        training_captions,
        write_dataset_record,
    )

    from mm_models.dual_encoder import DualEncoder
    from mm_train import (
        atomic_write_json,
        barrier,
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
    global_batch = cfg.batch_size * info.world_size * cfg.grad_accum
    # the data first: a bad annotation file stops the run before anything is written
    try:
        if info.is_main:
            ensure_corpus(cfg.data)
        barrier()
        dataset = train_dataset(cfg)
    except (ValueError, FileNotFoundError) as exc:
        if info.is_main:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    out = start_run(cfg, info, global_batch=global_batch, files=RUN_FILES)
    record = dataset_record(cfg, dataset)
    if cfg.resume:
        check_dataset_record(out, record)
    if info.is_main:
        write_dataset_record(out, record)
        build_tokenizer(cfg, out, training_captions(cfg, dataset), write=True)
    barrier()  # rank 0 trained and saved the tokenizer; every rank loads the same one
    tokenizer = build_tokenizer(cfg, out, None, write=False)

    seed_everything(cfg.seed)  # the same initial weights on every rank
    model = DualEncoder(model_config(cfg, len(tokenizer)))
    if cfg.init_from:
        load_initial_weights(model, cfg.init_from)
    model = model.to(info.device)
    loss = build_loss(cfg, record["num_samples"]).to(info.device)
    collate = Collate(tokenizer, cfg.max_tokens)
    loader_kwargs = {"num_workers": cfg.workers, "collate_fn": collate}
    if info.device.type == "cuda":
        loader_kwargs["pin_memory"] = True
    if cfg.data.shards:
        loader = ShardLoader(dataset, record["num_samples"], cfg.batch_size, info, **loader_kwargs)
    else:
        loader = make_dataloader(
            dataset, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
            info=info, **loader_kwargs,
        )  # fmt: skip
    steps_per_epoch = updates_per_epoch(loader, cfg.grad_accum)
    # AdamW over the model and the loss's own parameters (learnable temperatures), weight
    # decay on >= 2-D weights only; the loss stays outside DDP and averages its gradients
    optimizer = build_adamw(
        torch.nn.ModuleDict({"model": model, "loss": loss}),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    scheduler = build_scheduler(
        optimizer, "cosine", total=cfg.epochs * steps_per_epoch,
        warmup=min(cfg.warmup_steps, cfg.epochs * steps_per_epoch),
        warmup_lr=min(cfg.warmup_lr, cfg.lr), min_lr=min(cfg.min_lr, cfg.lr),
    )  # fmt: skip
    evaluation = Evaluation(
        cfg.data, cfg.image_size, tokenizer, cfg.max_tokens, cfg.max_words, workers=cfg.workers
    )

    def eval_fn(model, step: int) -> dict[str, float]:
        return evaluation(model) if info.is_main else {}  # rank 0 evaluates; fit shares it

    result = fit(
        wrap_ddp(model, info),
        make_step_fn(loss),
        loader,
        optimizer,
        scheduler=scheduler,
        epochs=cfg.epochs,
        grad_accum=cfg.grad_accum,
        clip_grad_norm=cfg.clip_grad or None,
        amp=cfg.amp,
        device=info.device,
        out_dir=out,
        log_every=cfg.log_every,
        eval_every=steps_per_epoch * cfg.eval_every_epochs,
        eval_fn=eval_fn,
        checkpoint_every=steps_per_epoch,
        keep_last=cfg.keep_last,
        resume=cfg.resume,
        stateful={"loss": loss},
        loggers=cfg.loggers,
        config=config_to_dict(cfg),
        seed=cfg.seed,
        desc=f"sogclr {cfg.loss}",
    )
    summary = {
        **result.eval_metrics,
        "loss_name": cfg.loss,
        "train_loss": result.metrics.get("loss"),
        "epochs": result.epoch,
        "steps": result.step,
        "batch_size": cfg.batch_size,
        "global_batch": global_batch,
        "num_samples": record["num_samples"],
        "train_seconds": result.elapsed_s,
    }
    if info.is_main:
        unwrap_model(model).save_pretrained(str(out / MODEL_DIR))
        atomic_write_json(out / "summary.json", summary)
        shown = ", ".join(
            f"{k} {summary[k]:.2f}" for k in ("r_mean", "txt_r1", "img_r1", "zeroshot_top1")
            if isinstance(summary.get(k), float)
        )  # fmt: skip
        print(f"{cfg.loss}: {result.step} steps -> {shown}  ({out / 'summary.json'})")
    cleanup()
    return summary


if __name__ == "__main__":
    main()
