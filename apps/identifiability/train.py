"""Train contrastive encoders for the identifiability experiments (Daunhawer et al., ICLR 2023).

    uv run apps/identifiability/train.py                           # default: mlp simulation, CPU minutes
    uv run apps/identifiability/train.py --style-change-prob 0.75 \\
        --statistical-dependence --content-dependent-style --out runs/ident-dep
    uv run apps/identifiability/prepare_data.py --out data/m3di-small
    uv run apps/identifiability/train.py --preset imgtxt --datapath data/m3di-small
    torchrun --nproc_per_node 4 apps/identifiability/train.py --preset paper --device cuda

Recipe: config -> data (latent model + frozen mixing, or an image/text folder) -> encoders ->
loss (Lp-SimCLR or NT-Xent) -> fit. Writes DIR/config.json, metrics.jsonl, summary.json and
checkpoints/; mlp runs also DIR/mixing.pt (the frozen f1, f2 and the latent config), imgtxt
runs DIR/vocab.json and DIR/text_meta.json. Evaluate with eval.py --run DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identifiability_tasks import (
    VOCAB_FILE,
    IdentifiabilityConfig,
    ImageTextEncoders,
    PairDataset,
    SimulationEncoders,
    check_config,
    encoding_size,
    imgtxt_step_fn,
    latent_config,
    learning_rate,
    mixing_for_run,
    open_split,
    save_text_meta,
    simulation_sample_fn,
    simulation_step_fn,
)

from mm_data.identifiability import LatentModel, Vocabulary
from mm_train import (
    OnlineSampler,
    atomic_write_json,
    cleanup,
    fit,
    init_distributed,
    make_dataloader,
    parse_config,
    save_config,
    seed_everything,
    worker_seed,
    wrap_ddp,
)

HERE = Path(__file__).resolve().parent


def simulation_parts(cfg: IdentifiabilityConfig, out: Path, rank: int, is_main: bool):
    """(model, online sampler, step_fn, stateful) of the numerical simulation."""
    f1, f2 = mixing_for_run(cfg, out, write=is_main)
    latents = LatentModel(latent_config(cfg))
    sampler = OnlineSampler(
        simulation_sample_fn(cfg, latents, f1, f2), seed=worker_seed(cfg.seed, rank)
    )
    return SimulationEncoders(cfg), sampler, simulation_step_fn(cfg), {"data": sampler}


def imgtxt_parts(cfg: IdentifiabilityConfig, out: Path, is_main: bool):
    """(model, data loader, step_fn, stateful) of the image/text experiment."""
    saved_vocab = out / VOCAB_FILE
    vocab = Vocabulary.load(saved_vocab) if cfg.resume and saved_vocab.is_file() else None
    train = open_split(cfg, "train", vocab=vocab)
    if is_main:
        save_text_meta(out, train.vocab, train.max_len)
    loader = make_dataloader(
        PairDataset(train),
        batch_size=cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        drop_last=len(train) > cfg.batch_size,
        num_workers=cfg.workers,
    )
    model = ImageTextEncoders(cfg, train.vocab_size, train.max_len)
    return model, loader, imgtxt_step_fn(cfg), {}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(
        IdentifiabilityConfig, argv, preset_dir=HERE / "presets", description=__doc__
    )
    check_config(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device)
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # Data first: a bad data folder or a clashing saved mixing fails before config.json of an
    # existing run is overwritten.
    if cfg.experiment == "mlp":
        model, data, step_fn, stateful = simulation_parts(cfg, out, info.rank, info.is_main)
    else:
        model, data, step_fn, stateful = imgtxt_parts(cfg, out, info.is_main)
    if info.is_main:
        save_config(cfg, out / "config.json")
    model = model.to(info.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate(cfg))
    result = fit(
        wrap_ddp(model, info),
        step_fn,
        data,
        optimizer,
        max_steps=cfg.steps,
        clip_grad_norm=cfg.clip_grad,
        amp=cfg.amp,
        device=info.device,
        out_dir=out,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        keep_last=cfg.keep_last,
        resume=cfg.resume,
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
