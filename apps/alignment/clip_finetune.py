"""Fine-tune two towers on one MM-IMDb genre with BCE + clip_weight x InfoNCE; sweep the weight.

    uv run apps/alignment/clip_finetune.py --clip-weight 1 --out runs/cf-1      # one run, CPU
    uv run apps/alignment/clip_finetune.py --sweep 0 0.1 0.25 0.5 1 2 5 10 --out runs/cf-sweep
    uv run apps/alignment/clip_finetune.py --sweep 0 1 --launcher local --out runs/cf-local
    uv run apps/alignment/clip_finetune.py --preset paper --data-root data/mmimdb \\
        --sweep 0 0.1 0.25 0.5 1 2 5 10 --ray-address auto --trial-gpus 0.25 --out runs/cf-paper

One run: an image tower (timm) and a text tower (Hugging Face) with linear projections, a
Linear(embed_dim, 1) head on the normalised text embedding for the binary genre
``--class-idx`` (19 = Western), loss = BCE(head) + clip_weight x symmetric InfoNCE with a
learnable temperature; unlabelled pairs (``--unlabeled``) enter the contrastive term only
and clip_weight 0 trains on the labelled movies only. At the end a logistic-regression
probe on the text features (C chosen on dev macro-F1, refit on train + dev) gives the test
macro-F1 in DIR/summary.json. The data root defaults to a generated miniature in
MM-IMDb's layout (written on first use).

A sweep (``--sweep W...``) runs one trial per weight in OUT/cw<W>/, each a full run with
the run rules; a restarted sweep skips the trials that finished and resumes the others.
``--launcher ray`` (default) runs the trials in parallel as Ray tasks (``--ray-address``
joins a cluster, by default a local Ray instance starts in-process; ``--trial-cpus`` and
``--trial-gpus`` size each), ``--launcher local`` one after the other. Writes
OUT/sweep.csv, OUT/sweep.png and OUT/summary.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_config import FINETUNE_FILES, FinetuneConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(
        FinetuneConfig, argv, preset_dir=HERE / "presets" / "finetune", description=__doc__
    )
    if cfg.sweep:
        from finetune_tasks import run_sweep

        return run_sweep(cfg)
    return finetune(cfg)


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    # torch and the models load here, once the flags are checked: --help answers at once
    import torch
    from finetune_tasks import (
        MODEL_DIR,
        PROBE_FILE,
        TOKENIZER_DIR,
        Collate,
        build_model,
        load_splits,
        probe_f1,
        text_features,
        transforms,
    )

    from mm_models.text_tokenizer import load_or_train_tokenizer
    from mm_train import (
        atomic_write_json,
        build_adamw,
        build_scheduler,
        config_to_dict,
        fit,
        init_distributed,
        make_dataloader,
        seed_everything,
        start_run,
        updates_per_epoch,
    )

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device)
    if info.world_size > 1:
        raise SystemExit("clip_finetune.py runs one process per trial (sweep with --sweep)")
    train_tf, eval_tf = transforms(cfg.image_size)
    splits = load_splits(cfg, train_tf, eval_tf)  # bad data stops before anything is written
    out = start_run(cfg, info, global_batch=cfg.batch_size, files=FINETUNE_FILES)
    saved = out / TOKENIZER_DIR
    if saved.is_dir():
        tokenizer = load_or_train_tokenizer(str(saved))
    else:
        tokenizer = load_or_train_tokenizer(cfg.tokenizer or None,
                                            splits["train_labelled"].captions,
                                            vocab_size=cfg.vocab_size)  # fmt: skip
        tokenizer.save_pretrained(str(saved))
    seed_everything(cfg.seed)
    model = build_model(cfg, len(tokenizer)).to(info.device)
    collate = Collate(tokenizer, cfg.max_tokens)
    loader = make_dataloader(splits["train"], batch_size=cfg.batch_size, shuffle=True,
                             seed=cfg.seed, drop_last=len(splits["train"]) > cfg.batch_size,
                             info=info, num_workers=cfg.workers, collate_fn=collate)  # fmt: skip
    steps_per_epoch = updates_per_epoch(loader, 1)
    optimizer = build_adamw(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(cfg.warmup_epochs, cfg.epochs - 1)
    scheduler = build_scheduler(optimizer, "cosine", total=cfg.epochs, warmup=warmup,
                                warmup_lr=min(1e-6, cfg.lr), min_lr=min(1e-6, cfg.lr),
                                unit="epoch", steps_per_epoch=steps_per_epoch)  # fmt: skip

    def step_fn(model, batch):
        return model(batch, cfg.clip_weight)

    def probe(model, step: int | None = None) -> dict[str, Any]:
        feats = {name: text_features(model, splits[key], collate, info.device)
                 for name, key in (("train", "train_labelled"), ("dev", "dev"), ("test", "test"))}  # fmt: skip
        n = splits["n_labelled"]
        labels = {"train": splits["train_labelled"].labels[:n, cfg.class_idx],
                  "dev": splits["dev"].labels[:, cfg.class_idx],
                  "test": splits["test"].labels[:, cfg.class_idx]}  # fmt: skip
        return probe_f1(feats["train"][:n].numpy(), labels["train"].numpy(),
                        feats["dev"].numpy(), labels["dev"].numpy(),
                        feats["test"].numpy(), labels["test"].numpy())  # fmt: skip

    def eval_fn(model, step: int) -> dict[str, float]:
        return {k: v for k, v in probe(model).items() if isinstance(v, float)}

    result = fit(
        model, step_fn, loader, optimizer, scheduler=scheduler, epochs=cfg.epochs,
        device=info.device, out_dir=out, log_every=cfg.log_every, eval_fn=eval_fn,
        checkpoint_every=steps_per_epoch, keep_last=cfg.keep_last, resume=cfg.resume,
        loggers=cfg.loggers, config=config_to_dict(cfg), seed=cfg.seed,
        desc=f"clip_finetune cw={cfg.clip_weight:g}",
    )  # fmt: skip
    details = probe(model)
    atomic_write_json(out / PROBE_FILE, details)
    model.encoder.save_pretrained(str(out / MODEL_DIR))
    torch.save(model.head.state_dict(), out / MODEL_DIR / "head.pt")
    summary = {
        **{k: v for k, v in details.items() if not isinstance(v, dict)},
        "clip_weight": cfg.clip_weight,
        "class_idx": cfg.class_idx,
        "train_labelled": splits["n_labelled"],
        "train_pairs": len(splits["train"]),
        "tau": float(model.contrastive.diagnostics().get("tau", float("nan"))),
        "train_loss": result.metrics.get("loss"),
        "steps": result.step,
        "epochs": result.epoch,
        "train_seconds": result.elapsed_s,
    }
    atomic_write_json(out / "summary.json", summary)
    print(f"clip_weight {cfg.clip_weight:g}: test macro-F1 {summary['test_f1']:.3f} "
          f"(dev {summary['dev_f1']:.3f}, C {summary['probe_C']:g}) -> {out}")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
