"""Learning-rate schedules: pure functions of progress, applied by a small stateful scheduler.

A schedule (``Cosine``, ``Constant``, ``TimmCosine``) maps progress ``t`` (optimizer steps
taken, or whole epochs completed) to a learning rate for the base group. ``LRScheduler``
applies it to every parameter group in proportion to the group's initial lr, so per-group
scales (``lr_scale`` from :func:`mm_train.optim.param_groups`) are kept, and a min or
warmup lr is scaled with its group. ``fit`` calls ``scheduler.step()`` after each optimizer
step; the scheduler's only state is the number of steps, so resume is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

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


class LRScheduler:
    """Set each group's lr to ``initial_lr * schedule(t) / schedule.base_lr`` after each step.

    ``t`` is the number of optimizer steps taken, or with ``steps_per_epoch`` the number of
    whole epochs completed (the lr then changes once per epoch, as in timm).
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
        self.optimizer = optimizer
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.step_count = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    @property
    def progress(self) -> float:
        """Current ``t`` fed to the schedule (steps, or completed epochs)."""
        if self.steps_per_epoch is None:
            return float(self.step_count)
        return float(self.step_count // self.steps_per_epoch)

    def _apply(self) -> None:
        ratio = self.schedule(self.progress) / self.schedule.base_lr
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * ratio

    def step(self) -> None:
        """Advance by one optimizer step and update the groups' learning rates."""
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The learning rate of every group, as set by the last step."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (only the step count; the schedule is rebuilt from config)."""
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count and re-apply the schedule."""
        self.step_count = int(state["step_count"])
        self._apply()


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
