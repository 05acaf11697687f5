"""Learning-rate schedules against hand-written formulas and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mm_train.optim import build_adamw
from mm_train.schedules import Constant, Cosine, LRScheduler, TimmCosine, build_scheduler


def cosine_reference(t: int, base: float, total: int, warmup: int, lo: float, start: float):
    """Linear warmup from ``start``, then a half cosine over [warmup, total] down to ``lo``."""
    if t < warmup:
        return start + (base - start) * t / warmup
    if t >= total:
        return lo
    return lo + (base - lo) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2


def timm_reference(t: int, base: float, total: int, warmup: int, lo: float, start: float):
    """timm CosineLRScheduler (one cycle, warmup_prefix=False, t_in_epochs)."""
    if t < warmup:
        return start + t * (base - start) / warmup
    if t >= total:
        return lo
    return lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * t / total))


def test_cosine_hand_computed_values() -> None:
    schedule = Cosine(base_lr=1.0, total=10, warmup=2, min_lr=0.1)
    assert schedule(0) == pytest.approx(0.0)
    assert schedule(1) == pytest.approx(0.5)
    assert schedule(2) == pytest.approx(1.0)
    assert schedule(6) == pytest.approx(0.55)  # halfway through the cosine
    assert schedule(10) == pytest.approx(0.1)
    assert schedule(25) == pytest.approx(0.1)


@pytest.mark.parametrize("warmup,start", [(0, 0.0), (3, 0.0), (5, 0.02)])
def test_cosine_matches_formula(warmup: int, start: float) -> None:
    schedule = Cosine(base_lr=0.3, total=20, warmup=warmup, min_lr=0.01, warmup_lr=start)
    for t in range(25):
        assert schedule(t) == pytest.approx(cosine_reference(t, 0.3, 20, warmup, 0.01, start))


def test_constant_hand_computed_values() -> None:
    schedule = Constant(base_lr=0.4, warmup=4, warmup_lr=0.0)
    assert [schedule(t) for t in range(6)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    assert Constant(base_lr=0.4)(0) == 0.4
    assert Constant(base_lr=0.4, warmup=2, warmup_lr=0.2)(1) == pytest.approx(0.3)


def test_timm_cosine_hand_computed_values() -> None:
    schedule = TimmCosine(base_lr=1.0, total=10, warmup=2, warmup_lr=0.1)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(1) == pytest.approx(0.55)
    assert schedule(2) == pytest.approx(0.5 * (1 + math.cos(0.2 * math.pi)))  # not 1.0
    assert schedule(5) == pytest.approx(0.5)
    assert schedule(10) == pytest.approx(0.0)


@pytest.mark.parametrize("warmup", [0, 3])
def test_timm_cosine_matches_formula(warmup: int) -> None:
    schedule = TimmCosine(base_lr=0.5, total=12, warmup=warmup, min_lr=1e-3, warmup_lr=1e-4)
    for t in range(15):
        assert schedule(t) == pytest.approx(timm_reference(t, 0.5, 12, warmup, 1e-3, 1e-4))


def _model() -> nn.Module:
    return nn.ModuleDict({"image": nn.Linear(3, 3), "text": nn.Linear(3, 3)})


def test_scheduler_sets_every_group_in_proportion_to_its_scale() -> None:
    optimizer = build_adamw(_model(), lr=0.2, weight_decay=0.1, lr_scales={"text": 0.1})
    scheduler = build_scheduler(optimizer, "cosine", total=8, warmup=2, min_lr=0.02)
    reference = Cosine(base_lr=0.2, total=8, warmup=2, min_lr=0.02)
    for step in range(10):
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(reference(step) * group["lr_scale"])
        optimizer.step()
        scheduler.step()


def test_epoch_unit_changes_lr_once_per_epoch() -> None:
    optimizer = torch.optim.SGD(_model().parameters(), lr=1.0)
    scheduler = build_scheduler(
        optimizer, "timm_cosine", total=4, warmup=1, warmup_lr=0.1, unit="epoch", steps_per_epoch=3
    )
    lrs = []
    for _ in range(12):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    epochs = [timm_reference(e, 1.0, 4, 1, 0.0, 0.1) for e in range(4)]
    assert lrs == pytest.approx([lr for lr in epochs for _ in range(3)])


def test_state_dict_round_trip_restores_the_lr() -> None:
    optimizer = torch.optim.SGD(_model().parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, "cosine", total=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    other = torch.optim.SGD(_model().parameters(), lr=1.0)
    restored = build_scheduler(other, "cosine", total=10)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    assert restored.get_last_lr()[0] == pytest.approx(cosine_reference(4, 1.0, 10, 0, 0.0, 0.0))
    assert restored.step_count == 4


def test_scheduler_is_torch_lambda_lr_and_its_state_loads_weights_only(tmp_path) -> None:
    optimizer = torch.optim.SGD(_model().parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, "cosine", total=10, warmup=2)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    torch.save(scheduler.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert "schedule" not in state and state["last_epoch"] == 0


def test_bad_arguments_raise_value_errors() -> None:
    optimizer = torch.optim.SGD(_model().parameters(), lr=1.0)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        build_scheduler(optimizer, "linear", total=3)
    with pytest.raises(ValueError, match="needs total"):
        build_scheduler(optimizer, "cosine")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_scheduler(optimizer, "cosine", total=3, unit="epoch")
    with pytest.raises(ValueError, match="unit must be"):
        build_scheduler(optimizer, "cosine", total=3, unit="minute")
    with pytest.raises(ValueError, match=r"warmup \(4\) must not exceed total"):
        Cosine(base_lr=1.0, total=3, warmup=4)
    with pytest.raises(ValueError, match="min_lr"):
        Cosine(base_lr=1.0, total=3, min_lr=2.0)
    with pytest.raises(ValueError, match="base_lr"):
        Constant(base_lr=0.0)
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        LRScheduler(optimizer, Constant(1.0), steps_per_epoch=0)
