"""Run under ``torchrun --nproc_per_node 2`` by test_distributed.py (gloo, CPU).

Usage: ``torchrun ... _ddp_worker.py OUT_DIR``. Every rank:

1. trains ``build_model()`` with DDP for ``EPOCHS`` epochs on ``make_dataset()`` (per-rank
   batch ``BATCH``, ``GRAD_ACCUM`` micro-batches per step) with ``fit``; rank 0 writes
   ``OUT_DIR/ddp`` (metrics and checkpoints);
   its step_fn reports a rank-dependent metric (logged as the mean over ranks), a
   ``RankCounter`` holds per-rank state (checkpointed per rank) and an ``eval_fn``
   records whether that stateful module was in eval mode;
2. saves an ``all_reduce_mean``, its sampler indices and what eval_fn saw to
   ``OUT_DIR/rank<r>.pt``.

The test repeats both in one process and compares.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from mm_train.distributed import (
    ResumableDistributedSampler,
    all_gather_cat,
    all_reduce_mean,
    cleanup,
    init_distributed,
    make_dataloader,
    wrap_ddp,
)
from mm_train.loop import RecentLosses, fit
from mm_train.optim import build_adamw
from mm_train.schedules import build_scheduler
from mm_train.seeding import seed_everything

BATCH = 4
GRAD_ACCUM = 2
EPOCHS = 3
NUM_SAMPLES = 32
SAMPLER_SEED = 5


class RankCounter(nn.Module):
    """Per-rank state: the number of samples this rank saw and its rank (a buffer)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("rank", torch.tensor(rank))

    def add(self, n: int) -> None:
        if self.training:
            self.seen += n


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
    # a parameter outside the DDP module that nothing synchronises (it gets no gradient, so
    # training is unchanged): fit must warn about it under DDP
    stray = nn.Parameter(torch.zeros(3))
    optimizer.add_param_group({"params": [stray], "param_names": ["stray.weight"]})
    return optimizer, build_scheduler(optimizer, "cosine", total=steps, warmup=2)


def mse_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def main(out_dir: Path) -> None:
    info = init_distributed("cpu")
    assert info.world_size == 2 and info.device.type == "cpu"

    model = build_model()
    loader = make_dataloader(make_dataset(), batch_size=BATCH, seed=SAMPLER_SEED, info=info)
    steps = EPOCHS * len(loader) // GRAD_ACCUM
    optimizer, scheduler = build_optimizer(model, steps)
    counter = RankCounter(info.rank)
    eval_modes: list[bool] = []

    def step_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        counter.add(batch[0].shape[0])
        return mse_step(model, batch), {"rank_metric": float(info.rank)}

    def eval_fn(model: nn.Module, step: int) -> dict[str, float]:
        eval_modes.append(counter.training)
        counter.add(1000)  # must not count: the module is in eval mode
        return {"eval_rank": float(info.rank)}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(
            wrap_ddp(model, info),
            step_fn,
            loader,
            optimizer,
            scheduler=scheduler,
            epochs=EPOCHS,
            grad_accum=GRAD_ACCUM,
            clip_grad_norm=0.5,
            out_dir=out_dir / "ddp",
            log_every=1,
            eval_fn=eval_fn,
            stateful={"counter": counter},
            progress=False,
            seed=1,
        )

    sampler = ResumableDistributedSampler(NUM_SAMPLES + 3, seed=SAMPLER_SEED)  # pads
    window = RecentLosses(3)
    for value in range(info.rank * 10, info.rank * 10 + 1 + info.rank):  # rank 0: 1 value, 1: 2
        window.add(value)
    torch.save(
        {
            "eval_modes": eval_modes,
            "warnings": [str(w.message) for w in caught],
            "seen": int(counter.seen),
            "mean": all_reduce_mean(torch.tensor([info.rank + 1.0])),
            "gathered": all_gather_cat(torch.arange(info.rank + 1) + 10 * info.rank),
            "window_mean": window.mean(),
            "window_mean_over_ranks": window.mean_over_ranks(),
            "sampler_rank": sampler.rank,
            "indices": sampler.epoch_indices(),
        },
        out_dir / f"rank{info.rank}.pt",
    )
    cleanup()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
