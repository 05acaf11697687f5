"""Run under ``torchrun --nproc_per_node 2`` by test_distributed.py (gloo, CPU).

Usage: ``torchrun ... _ddp_worker.py OUT_DIR``. Every rank:

1. trains ``build_model()`` with DDP for ``EPOCHS`` epochs on ``make_dataset()`` (per-rank
   batch ``BATCH``, ``GRAD_ACCUM`` micro-batches per step) with ``fit``; rank 0 writes
   ``OUT_DIR/ddp`` (metrics and checkpoints);
2. gathers a per-rank tensor of uneven size with ``all_gather_with_grad``, backpropagates
   a rank-dependent loss of the gathered rows and saves the gathered tensor, its input's
   gradient, an ``all_reduce_mean`` and its sampler indices to ``OUT_DIR/rank<r>.pt``.

The test repeats both in one process and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from mm_train.distributed import (
    ResumableDistributedSampler,
    all_gather_with_grad,
    all_reduce_mean,
    cleanup,
    init_distributed,
    make_dataloader,
    wrap_ddp,
)
from mm_train.loop import fit
from mm_train.optim import build_adamw
from mm_train.schedules import build_scheduler
from mm_train.seeding import seed_everything

BATCH = 4
GRAD_ACCUM = 2
EPOCHS = 3
NUM_SAMPLES = 32
SAMPLER_SEED = 5
GATHER_SIZES = (3, 2)


def make_dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_SAMPLES, 5, generator=generator)
    y = torch.sin(x[:, :2]) + 0.1 * torch.randn(NUM_SAMPLES, 2, generator=generator)
    return TensorDataset(x, y)


def build_model() -> nn.Module:
    seed_everything(0)
    return nn.Sequential(nn.Linear(5, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 2))


def build_optimizer(model: nn.Module, steps: int) -> tuple:
    optimizer = build_adamw(model, lr=0.02, weight_decay=0.05, lr_scales={"3": 0.5})
    return optimizer, build_scheduler(optimizer, "cosine", total=steps, warmup=2)


def mse_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def gather_input(rank: int) -> torch.Tensor:
    rows = GATHER_SIZES[rank]
    return (torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3) + 10 * rank) / 7


def rank_loss(gathered: torch.Tensor, rank: int) -> torch.Tensor:
    """A loss of every gathered row that differs between ranks."""
    weights = torch.linspace(-1, 1, gathered.numel()).reshape(gathered.shape) * (rank + 1)
    return (torch.tanh(gathered) * weights).sum() ** 2 / 10


def main(out_dir: Path) -> None:
    info = init_distributed("cpu")
    assert info.world_size == 2 and info.device.type == "cpu"

    model = build_model()
    loader = make_dataloader(make_dataset(), batch_size=BATCH, seed=SAMPLER_SEED, info=info)
    steps = EPOCHS * len(loader) // GRAD_ACCUM
    optimizer, scheduler = build_optimizer(model, steps)
    fit(
        wrap_ddp(model, info),
        mse_step,
        loader,
        optimizer,
        scheduler=scheduler,
        epochs=EPOCHS,
        grad_accum=GRAD_ACCUM,
        clip_grad_norm=0.5,
        out_dir=out_dir / "ddp",
        log_every=1,
        progress=False,
        seed=1,
    )

    x = gather_input(info.rank).requires_grad_(True)
    gathered = all_gather_with_grad(x)
    rank_loss(gathered, info.rank).backward()
    sampler = ResumableDistributedSampler(NUM_SAMPLES + 3, seed=SAMPLER_SEED)  # pads
    torch.save(
        {
            "gathered": gathered.detach(),
            "grad": x.grad,
            "mean": all_reduce_mean(torch.tensor([info.rank + 1.0])),
            "sampler_rank": sampler.rank,
            "indices": sampler.epoch_indices(),
        },
        out_dir / f"rank{info.rank}.pt",
    )
    cleanup()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
