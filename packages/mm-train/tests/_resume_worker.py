"""Training runs for test_resume.py, each in its own process.

Usage: ``python _resume_worker.py REPORT STAGE [STAGE ...]``. A STAGE is a comma-separated
list of JOBs run in parallel, each in a process forked from this one (so torch is
imported once); stages run one after the other. A JOB is ``MODE:OUT_DIR:ACTION``: MODE is
``loader`` (DataLoader, epochs), ``workers`` (the same with 2 worker processes and a
random augmentation drawn in them) or ``online`` (a sampler drawing fresh batches);
ACTION is ``fresh`` (train to the end), ``kill`` (SIGKILL itself at step ``KILL_AT``,
after the checkpoint at ``CHECKPOINT_EVERY``), ``term`` (send itself SIGTERM at step
``KILL_AT``: fit checkpoints after the next step and exits) or ``resume`` (continue from
OUT_DIR's newest readable checkpoint). A finished job saves its final parameters to ``OUT_DIR/result.pt``; each
job's exit status (negative: killed by that signal) goes to the JSON file REPORT.

The runs use every source of randomness a resume must continue: dropout (torch), a
random loss factor from Python's ``random`` and numpy, a shuffled epoch order, an online
``torch.Generator``, and a stateful module whose buffers change every step and epoch.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import sys
import traceback

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from mm_train.distributed import make_dataloader
from mm_train.loop import OnlineSampler, fit
from mm_train.optim import build_adamw
from mm_train.schedules import build_scheduler
from mm_train.seeding import seed_everything

NUM_SAMPLES = 22
CHECKPOINT_EVERY = 4
KILL_AT = 6


class SampleTracker(nn.Module):
    """A loss with per-sample state (an EMA of each sample's loss) and an epoch schedule."""

    def __init__(self, num_samples: int) -> None:
        super().__init__()
        self.register_buffer("ema", torch.zeros(num_samples))
        self.register_buffer("gamma", torch.tensor(0.9))

    def forward(self, index: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:
        self.ema[index] = self.gamma * self.ema[index] + (1 - self.gamma) * per_sample.detach()
        return (per_sample / (1 + self.ema[index])).mean()

    def on_epoch_end(self, epoch: int) -> None:
        self.gamma.mul_(0.5)


class Augmented(Dataset):
    """A dataset whose samples get random noise from torch, numpy and Python's random."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        noise = 0.1 * torch.randn(4) + 0.01 * float(np.random.rand()) + 0.01 * random.random()
        return self.x[i] + noise, self.y[i], torch.tensor(i)


def run(mode: str, out_dir: str, action: str) -> None:
    seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 2))
    tracker = SampleTracker(NUM_SAMPLES)
    optimizer = build_adamw(model, lr=0.05, weight_decay=0.01)
    weights = torch.randn(4, 2)

    def step_fn(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
        x, y, index = batch
        per_sample = ((model(x) - y) ** 2).mean(dim=1)
        factor = 1 + 0.05 * random.random() + 0.05 * float(np.random.rand())
        return tracker(index, per_sample) * factor, {"ema_mean": tracker.ema.mean()}

    if mode in ("loader", "workers"):
        x = torch.randn(NUM_SAMPLES, 4)
        if mode == "loader":
            dataset = TensorDataset(x, x @ weights, torch.arange(NUM_SAMPLES))
            workers = 0
        else:
            dataset, workers = Augmented(x, x @ weights), 2
        data = make_dataloader(  # 6 batches
            dataset, batch_size=4, shuffle=True, seed=7, num_workers=workers
        )
        length = {"epochs": 4}  # 3 steps per epoch with grad_accum=2: 12 steps
        scheduler = build_scheduler(optimizer, "cosine", total=12, warmup=2, min_lr=1e-3)
    else:

        def sample(generator: torch.Generator, index: int) -> tuple[torch.Tensor, ...]:
            x = torch.randn(5, 4, generator=generator)
            noise = 0.1 * torch.randn(5, 2, generator=generator)
            return x, x @ weights + noise, torch.randperm(NUM_SAMPLES, generator=generator)[:5]

        data = OnlineSampler(sample, seed=11)
        length = {"max_steps": 10}
        scheduler = build_scheduler(optimizer, "timm_cosine", total=10, warmup=3, warmup_lr=1e-3)

    def maybe_die(step: int) -> None:
        if action == "kill" and step == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "term" and step == KILL_AT:
            os.kill(os.getpid(), signal.SIGTERM)

    result = fit(
        model,
        step_fn,
        data,
        optimizer,
        scheduler=scheduler,
        grad_accum=2,
        clip_grad_norm=1.0,
        out_dir=out_dir,
        log_every=1,
        checkpoint_every=CHECKPOINT_EVERY,
        keep_last=2,
        resume=action == "resume",
        stateful={"tracker": tracker},
        progress=False,
        seed=123,
        on_step_end=maybe_die,
        **length,
    )
    torch.save(
        {
            "model": model.state_dict(),
            "tracker": tracker.state_dict(),
            "step": result.step,
            "resumed_from": str(result.resumed_from),
        },
        os.path.join(out_dir, "result.pt"),
    )


def run_forked(job: str) -> int:
    """Fork a process that runs ``job``; return its pid."""
    pid = os.fork()
    if pid == 0:  # the child never returns into the parent's code
        code = 0
        try:
            run(*job.split(":"))
        except SystemExit as exc:  # mm_train.Interrupted after SIGTERM: 128 + 15
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return pid


def main(report: str, stages: list[str]) -> None:
    torch.set_num_threads(1)  # no thread pool in the parent, so forking is safe
    importlib.import_module("torch._dynamo")  # optimizers import it on first use: once, here

    status: dict[str, int] = {}
    for stage in stages:
        pids = {run_forked(job): job for job in stage.split(",")}
        for pid, job in pids.items():
            _, wait_status = os.waitpid(pid, 0)
            status[job] = os.waitstatus_to_exitcode(wait_status)
    with open(report, "w") as f:
        json.dump(status, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
