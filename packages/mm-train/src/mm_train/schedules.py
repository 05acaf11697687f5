"""Learning-rate schedules: pure functions of progress, applied by a small stateful scheduler.

A schedule (``Cosine``, ``Constant``, ``TimmCosine``) maps progress ``t`` (optimizer steps
taken, or whole epochs completed) to a learning rate for the base group. ``LRScheduler``
is torch's ``LambdaLR`` applying it to every parameter group in proportion to the group's
initial lr, so per-group scales (``lr_scale`` from :func:`mm_train.optim.param_groups`)
are kept, and a min or warmup lr is scaled with its group. ``fit`` calls
``scheduler.step()`` after each optimizer step; the state is the step count, so resume
is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


def _check(base_lr: float, total: int | None, warmup: int, min_lr: float, warmup_lr: float) -> None:
    """Validate the common schedule arguments (raises ValueError naming the problem)."""
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if total is not None:
        if total <= 0:
            raise ValueError(f"total must be > 0, got {total}")
        if warmup > total:
            raise ValueError(f"warmup ({warmup}) must not exceed total ({total})")
    if not 0 <= min_lr <= base_lr:
        raise ValueError(f"min_lr must lie in [0, base_lr={base_lr}], got {min_lr}")
    if warmup_lr < 0:
        raise ValueError(f"warmup_lr must be >= 0, got {warmup_lr}")


def _linear_warmup(t: float, warmup: int, warmup_lr: float, base_lr: float) -> float:
    """Linear ramp from ``warmup_lr`` at t=0 towards ``base_lr`` at t=warmup."""
    return warmup_lr + (base_lr - warmup_lr) * t / warmup


@dataclass(frozen=True)
class Cosine:
    """Linear warmup over ``warmup``, then half-cosine from ``base_lr`` to ``min_lr`` at ``total``.

    The cosine phase spans ``[warmup, total]`` (Loshchilov & Hutter 2017, SGDR eq. 5 with
    one cycle); after ``total`` the lr stays at ``min_lr``.
    """

    base_lr: float
    total: int
    warmup: int = 0
    min_lr: float = 0.0
    warmup_lr: float = 0.0

    def __post_init__(self) -> None:
        _check(self.base_lr, self.total, self.warmup, self.min_lr, self.warmup_lr)

    def __call__(self, t: float) -> float:
        """Learning rate at progress ``t``."""
        if t < self.warmup:
            return _linear_warmup(t, self.warmup, self.warmup_lr, self.base_lr)
        if t >= self.total:
            return self.min_lr
        progress = (t - self.warmup) / (self.total - self.warmup)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Constant:
    """``base_lr`` throughout, after an optional linear warmup from ``warmup_lr``."""

    base_lr: float
    warmup: int = 0
    warmup_lr: float = 0.0

    def __post_init__(self) -> None:
        _check(self.base_lr, None, self.warmup, 0.0, self.warmup_lr)

    def __call__(self, t: float) -> float:
        """Learning rate at progress ``t``."""
        if t < self.warmup:
            return _linear_warmup(t, self.warmup, self.warmup_lr, self.base_lr)
        return self.base_lr


@dataclass(frozen=True)
class TimmCosine:
    """timm-style: warmup from ``warmup_lr`` to ``base_lr``, cosine on the full horizon.

    As timm's ``CosineLRScheduler`` with one cycle and ``warmup_prefix=False``: the cosine
    is measured from t=0 over ``total`` (``min + (base - min) * (1 + cos(pi t / total)) / 2``)
    and the warmup replaces its first ``warmup`` values, so the lr reached after warmup is
    the cosine's value there, slightly below ``base_lr``.
    """

    base_lr: float
    total: int
    warmup: int = 0
    min_lr: float = 0.0
    warmup_lr: float = 0.0

    def __post_init__(self) -> None:
        _check(self.base_lr, self.total, self.warmup, self.min_lr, self.warmup_lr)

    def __call__(self, t: float) -> float:
        """Learning rate at progress ``t``."""
        if t < self.warmup:
            return _linear_warmup(t, self.warmup, self.warmup_lr, self.base_lr)
        if t >= self.total:
            return self.min_lr
        cosine = 0.5 * (1 + math.cos(math.pi * t / self.total))
        return self.min_lr + (self.base_lr - self.min_lr) * cosine


class LRScheduler(torch.optim.lr_scheduler.LambdaLR):
    """torch's ``LambdaLR`` with a schedule: each group's lr is ``initial_lr * schedule(t) /
    schedule.base_lr``, so per-group scales are kept.

    ``t`` is the number of optimizer steps taken, or with ``steps_per_epoch`` the number of
    whole epochs completed (the lr then changes once per epoch, as in timm). The state is
    ``LambdaLR``'s (the step count and base lrs); the schedule is rebuilt from the config.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Cosine | Constant | TimmCosine,
        *,
        steps_per_epoch: int | None = None,
    ) -> None:
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch

        def factor(step: int) -> float:  # a function, so LambdaLR does not pickle it
            t = step if steps_per_epoch is None else step // steps_per_epoch
            return schedule(float(t)) / schedule.base_lr

        super().__init__(optimizer, factor)

    def state_dict(self) -> dict:
        """``LambdaLR``'s state without the schedule (plain numbers, ``weights_only``-safe)."""
        state = super().state_dict()
        for name in ("schedule", "steps_per_epoch"):
            state.pop(name, None)
        return state

    @property
    def step_count(self) -> int:
        """Optimizer steps taken (``LambdaLR.last_epoch``)."""
        return int(self.last_epoch)


SCHEDULES = ("cosine", "constant", "timm_cosine")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: Literal["cosine", "constant", "timm_cosine"],
    *,
    total: int | None = None,
    warmup: int = 0,
    min_lr: float = 0.0,
    warmup_lr: float = 0.0,
    unit: Literal["step", "epoch"] = "step",
    steps_per_epoch: int | None = None,
) -> LRScheduler:
    """Build a named schedule around ``optimizer`` (base lr = ``optimizer.defaults['lr']``).

    ``total`` and ``warmup`` are counted in ``unit``s; ``unit="epoch"`` needs
    ``steps_per_epoch`` (optimizer steps per epoch, see :func:`mm_train.loop.updates_per_epoch`).
    """
    base_lr = float(optimizer.defaults["lr"])
    if unit not in ("step", "epoch"):
        raise ValueError(f"unit must be 'step' or 'epoch', got {unit!r}")
    if unit == "epoch" and steps_per_epoch is None:
        raise ValueError("unit='epoch' needs steps_per_epoch (optimizer steps per epoch)")
    if unit == "step" and steps_per_epoch is not None:
        raise ValueError("steps_per_epoch is only meaningful with unit='epoch'")
    if name in ("cosine", "timm_cosine") and total is None:
        raise ValueError(f"schedule {name!r} needs total (the horizon in {unit}s)")
    schedule: Cosine | Constant | TimmCosine
    if name == "cosine":
        schedule = Cosine(base_lr, total, warmup, min_lr, warmup_lr)
    elif name == "timm_cosine":
        schedule = TimmCosine(base_lr, total, warmup, min_lr, warmup_lr)
    elif name == "constant":
        schedule = Constant(base_lr, warmup, warmup_lr)
    else:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return LRScheduler(optimizer, schedule, steps_per_epoch=steps_per_epoch)
