"""apps/sogclr default preset: mm_train.fit against a bare PyTorch loop, and the data wait.

    uv run python experiments/bench/bench_sogclr_trainer.py                 # 2 workers, 150 steps
    uv run python experiments/bench/bench_sogclr_trainer.py --workers 0 --steps 100

Both loops train the default preset's model (ResNet-18 image tower at 32 px, tiny text
transformer) with its loss (sogclr), optimiser (AdamW, wd groups) and schedule on the
synthetic corpus through the same DataLoader (the app's collate, the training transform
with RandAugment, ``--workers`` processes). The bare loop is what one writes by hand:
next batch, to device, forward, loss, backward, step, scheduler step, ``loss.item()``.
``fit`` adds its logging, finiteness check, progress, signal handling and the per-batch
seeding of worker randomness, and writes a checkpoint (with the loss state) at the end.
Runs alternate (bare, fit, bare, fit) after a warm-up; printed: samples/s of each, the
ratio, and the share of step time spent waiting for the next batch (time inside
``next(iterator)``), for both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "apps" / "sogclr"))


class TimedLoader:
    """A DataLoader whose iterators record the time spent waiting in next()."""

    def __init__(self, loader) -> None:
        self.loader, self.waited = loader, 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waited += time.perf_counter() - start
            yield batch


def setup(args):
    """(config, dataset, tokenizer, model, loss, optimizer, scheduler, loader) of the preset."""
    import torch
    from sogclr_config import SogCLRConfig
    from sogclr_tasks import Collate, build_loss, ensure_corpus, model_config, train_dataset

    from mm_models.dual_encoder import DualEncoder
    from mm_models.text_tokenizer import load_or_train_tokenizer
    from mm_train import (
        build_adamw,
        build_scheduler,
        make_dataloader,
        parse_config,
        seed_everything,
    )

    cfg = parse_config(
        SogCLRConfig,
        ["--data.root", args.data, "--data.synthetic-train", str(args.samples),
         "--workers", str(args.workers)],
        preset_dir=ROOT / "apps" / "sogclr" / "presets",
        exit_on_error=False,
    )  # fmt: skip
    ensure_corpus(cfg.data, quiet=True)
    dataset = train_dataset(cfg)
    tokenizer = load_or_train_tokenizer(None, dataset.captions, vocab_size=cfg.vocab_size)
    seed_everything(0)
    model = DualEncoder(model_config(cfg, len(tokenizer)))
    loss = build_loss(cfg, len(dataset))
    optimizer = build_adamw(
        torch.nn.ModuleDict({"model": model, "loss": loss}),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    scheduler = build_scheduler(
        optimizer, "cosine", total=args.steps, warmup=min(20, args.steps), warmup_lr=1e-5
    )
    loader = make_dataloader(
        dataset, batch_size=cfg.batch_size, seed=0, drop_last=True, num_workers=cfg.workers,
        collate_fn=Collate(tokenizer, cfg.max_tokens),
    )  # fmt: skip
    return cfg, model, loss, optimizer, scheduler, loader


def bare(args) -> tuple[float, float]:
    """(samples/s, data-wait share) of a hand-written loop."""
    cfg, model, loss, optimizer, scheduler, loader = setup(args)
    timed = TimedLoader(loader)
    model.train()
    started, done = time.perf_counter(), 0
    for batch in timed:
        if done == args.steps:
            break
        image, text = model(batch["images"], batch["input_ids"], batch["attention_mask"])
        value = loss(image, text, batch["index"])
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        scheduler.step()
        value.item()
        done += 1
    elapsed = time.perf_counter() - started
    return done * cfg.batch_size / elapsed, timed.waited / elapsed


def with_fit(args) -> tuple[float, float]:
    """(samples/s, data-wait share) of mm_train.fit on the same parts."""
    from sogclr_tasks import make_step_fn

    from mm_train import fit

    cfg, model, loss, optimizer, scheduler, loader = setup(args)
    timed = TimedLoader(loader)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        fit(
            model, make_step_fn(loss), timed, optimizer, scheduler=scheduler,
            max_steps=args.steps, out_dir=out, log_every=50, stateful={"loss": loss},
            progress=False, curves=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    return args.steps * cfg.batch_size / elapsed, timed.waited / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=6000, help="synthetic corpus size")
    parser.add_argument("--data", default="data/sogclr-bench")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.workers} workers, "
          f"{args.steps} steps of batch 32 per run, {args.repeats} runs each")  # fmt: skip
    args_warm = argparse.Namespace(**{**vars(args), "steps": 10})
    bare(args_warm), with_fit(args_warm)
    runs = {"bare": [], "fit": []}
    for _ in range(args.repeats):
        runs["bare"].append(bare(args))
        runs["fit"].append(with_fit(args))
    b = statistics.median(r for r, _ in runs["bare"])
    f = statistics.median(r for r, _ in runs["fit"])
    wait_b = statistics.median(w for _, w in runs["bare"])
    wait_f = statistics.median(w for _, w in runs["fit"])
    print("\n| loop | samples/s | data wait (share of time) |")
    print("|---|---|---|")
    print(f"| bare PyTorch | {b:.1f} | {100 * wait_b:.1f}% |")
    print(f"| mm_train.fit | {f:.1f} | {100 * wait_f:.1f}% |")
    print(f"\nfit / bare throughput: {f / b:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
