"""Trainer overhead: steps/s of mm_train.fit against a bare PyTorch loop doing the same work.

    uv run python experiments/bench/bench_fit_overhead.py                 # 1 torch thread
    uv run python experiments/bench/bench_fit_overhead.py --threads 2 --repeats 7

Both train the same MLP on the same shuffled in-memory data (a DataLoader over a
TensorDataset) with AdamW, a cosine schedule and gradient clipping at 1.0. The bare loop
is what one would write by hand: zero_grad, forward, backward, clip, step, scheduler step,
and ``loss.item()`` every step. ``fit`` adds what it always does (device moves, autocast
context, finiteness check, windowed metrics, progress, a metrics.jsonl line every
``--log-every`` steps, per-batch seeding of the data (``make_dataloader``), signal
handlers, and at the end a checkpoint, summary.json and curves.png). Runs are
interleaved (bare, fit, bare, fit, ...) after a warm-up. The table gives, as medians over
the repeats, the steady-state time per step (from step 10 to the last) of both and their
ratio (the trainer's overhead; the target is <= 1.10), and the one-off end-of-run cost of
fit (checkpoint with fsync, summary, curves.png). Sizes: "tiny" is overhead-bound
(~1 ms steps), "small" a realistic small model (~8 ms steps).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mm_train import build_adamw, build_scheduler, fit, make_dataloader, seed_everything

SIZES = {"tiny": (32, 64, 64), "small": (256, 512, 256)}  # in/hidden dim, hidden, batch


def _setup(size: str, steps: int):
    dim, hidden, batch = SIZES[size]
    seed_everything(0)
    x = torch.randn(batch * steps, dim)
    y = x[:, :8].sin()
    model = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
    model.append(nn.GELU()).append(nn.Linear(hidden, 8))
    optimizer = build_adamw(model, lr=1e-3, weight_decay=0.05)
    scheduler = build_scheduler(optimizer, "cosine", total=steps, warmup=steps // 10)
    return TensorDataset(x, y), batch, model, optimizer, scheduler


def _loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


WARM = 10  # steady state is timed from this step on


def bare(size: str, steps: int) -> tuple[float, float]:
    """(seconds per step from step WARM to the end, 0: no end-of-run work)."""
    dataset, batch, model, optimizer, scheduler = _setup(size, steps)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True)
    model.train()
    for step, (x, y) in enumerate(loader, 1):
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(model, (x, y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss.item()
        if step == WARM:
            started = time.perf_counter()
    return (time.perf_counter() - started) / (steps - WARM), 0.0


def with_fit(size: str, steps: int, log_every: int) -> tuple[float, float]:
    """(seconds per step from step WARM to the last, seconds after the last step)."""
    dataset, batch, model, optimizer, scheduler = _setup(size, steps)
    loader = make_dataloader(dataset, batch_size=batch, shuffle=True, seed=0)
    marks = {}

    def mark(step: int) -> None:
        if step in (WARM, steps):
            marks[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        fit(
            model,
            _loss,
            loader,
            optimizer,
            scheduler=scheduler,
            epochs=1,
            clip_grad_norm=1.0,
            out_dir=Path(out),
            log_every=log_every,
            progress=False,
            on_step_end=mark,
        )
        done = time.perf_counter()
    return (marks[steps] - marks[WARM]) / (steps - WARM), done - marks[steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps} steps per run")
    print("\n| size | bare loop (ms/step) | fit (ms/step) | fit / bare | fit end of run (s) |")
    print("|---|---|---|---|---|")
    for size in SIZES:
        bare(size, 2 * WARM), with_fit(size, 2 * WARM, args.log_every)  # warm-up
        runs = {"bare": [], "fit": []}
        for _ in range(args.repeats):
            runs["bare"].append(bare(size, args.steps))
            runs["fit"].append(with_fit(size, args.steps, args.log_every))
        b = statistics.median(t for t, _ in runs["bare"])
        f = statistics.median(t for t, _ in runs["fit"])
        end = statistics.median(e for _, e in runs["fit"])
        print(f"| {size} | {1e3 * b:.3f} | {1e3 * f:.3f} | {f / b:.3f} | {end:.2f} |")


if __name__ == "__main__":
    main()
