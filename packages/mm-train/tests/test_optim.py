"""AdamW parameter groups: decay only on matrices, per-module lr scales, frozen params left out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mm_train.optim import build_adamw, param_groups


class TwoTower(nn.Module):
    """Image and text towers with biases, norms, an embedding, a scalar and a frozen part."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.text_encoder = nn.ModuleDict(
            {
                "embed": nn.Embedding(10, 4),
                "norm": nn.LayerNorm(4),
                "head": nn.Linear(4, 4),
            }
        )
        self.text_encoder_extra = nn.Linear(4, 4, bias=False)  # shares a prefix, not a module
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))


def _by_name(groups: list[dict]) -> dict[str, tuple[float, float]]:
    """name -> (weight_decay, lr) from a list of groups."""
    out = {}
    for group in groups:
        for name in group["param_names"]:
            assert name not in out, f"{name} in two groups"
            out[name] = (group["weight_decay"], group["lr"])
    return out


def test_groups_match_a_hand_written_assignment() -> None:
    model = TwoTower()
    groups = param_groups(
        model,
        lr=1.0,
        weight_decay=0.1,
        lr_scales={"text_encoder": 0.1, "text_encoder.head": 0.5},
    )
    expected = {
        "image.0.weight": (0.1, 1.0),  # conv kernel: decayed
        "image.0.bias": (0.0, 1.0),
        "image.1.weight": (0.0, 1.0),  # batch-norm scale
        "image.1.bias": (0.0, 1.0),
        "text_encoder.embed.weight": (0.1, 0.1),
        "text_encoder.norm.weight": (0.0, 0.1),
        "text_encoder.norm.bias": (0.0, 0.1),
        "text_encoder.head.weight": (0.1, 0.5),  # the longest prefix wins
        "text_encoder.head.bias": (0.0, 0.5),
        "text_encoder_extra.weight": (0.1, 1.0),  # "text_encoder" matches at dots only
        "logit_scale": (0.0, 1.0),  # a scalar is not decayed
    }
    assert _by_name(groups) == expected  # lr = 1.0 * scale is exact
    assert "frozen.weight" not in _by_name(groups)
    assert len(groups) == len({(g["weight_decay"], g["lr"]) for g in groups})


def test_groups_carry_their_scale_and_extra_no_decay_names() -> None:
    model = TwoTower()
    groups = param_groups(
        model, lr=2.0, weight_decay=0.5, lr_scales={"image": 0.25}, no_decay=["image.0.weight"]
    )
    assert _by_name(groups)["image.0.weight"] == (0.0, 0.5)
    for group in groups:
        assert group["lr"] == pytest.approx(2.0 * group["lr_scale"])


def test_adamw_step_decays_only_the_decay_group() -> None:
    """With zero gradients AdamW's only change is decoupled decay: p <- p (1 - lr wd)."""
    model = TwoTower()
    lr, wd = 0.1, 0.5
    optimizer = build_adamw(model, lr=lr, weight_decay=wd, lr_scales={"text_encoder": 0.1})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    decays = _by_name(optimizer.param_groups)
    for name, param in model.named_parameters():
        if name not in decays:  # frozen: untouched and not in the optimizer
            assert torch.equal(param, before[name])
            continue
        group_wd, group_lr = decays[name]
        assert torch.allclose(param, before[name] * (1 - group_lr * group_wd), atol=1e-7), name


def test_no_weight_decay_puts_everything_in_no_decay_groups() -> None:
    groups = param_groups(TwoTower(), lr=1.0, weight_decay=0.0)
    assert [g["weight_decay"] for g in groups] == [0.0]


def test_bad_arguments_raise_value_errors() -> None:
    model = TwoTower()
    with pytest.raises(ValueError, match="lr_scales names no module"):
        param_groups(model, lr=1.0, weight_decay=0.1, lr_scales={"vision": 0.1})
    with pytest.raises(ValueError, match="must be >= 0"):
        param_groups(model, lr=1.0, weight_decay=0.1, lr_scales={"image": -1.0})
    with pytest.raises(ValueError, match="lr must be > 0"):
        build_adamw(model, lr=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        build_adamw(model, lr=1.0, weight_decay=-0.1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), lr=1.0, weight_decay=0.1)


def test_optimizer_state_dict_round_trips_with_group_names() -> None:
    model = TwoTower()
    optimizer = build_adamw(model, lr=0.1, weight_decay=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    fresh = build_adamw(TwoTower(), lr=0.1, weight_decay=0.1)
    fresh.load_state_dict(optimizer.state_dict())
    assert [g["group_name"] for g in fresh.param_groups] == [
        g["group_name"] for g in optimizer.param_groups
    ]


class ThreeComponents(nn.Module):
    """A VLM's parts: language model, vision encoder, projector."""

    def __init__(self) -> None:
        super().__init__()
        self.lm = nn.Linear(6, 6)
        self.vision = nn.Linear(5, 5)
        self.projector = nn.Linear(5, 6)


def test_each_component_trains_at_its_own_rate_through_the_schedule() -> None:
    """AdamW's first step moves every element by lr (m / sqrt(v) = sign(g)), so the size
    of each parameter's move reads back its group's learning rate; a warmup + cosine
    schedule keeps the ratios between the groups at every step."""
    from mm_train.schedules import build_scheduler

    torch.manual_seed(0)
    model = ThreeComponents().double()  # float64: the moves of ~1e-5 read back exactly
    lr, scales = 5e-3, {"lm": 2e-3, "vision": 0.1}
    optimizer = build_adamw(model, lr=lr, lr_scales=scales, eps=1e-12)
    scheduler = build_scheduler(optimizer, "cosine", total=10, warmup=3)
    expected_scale = {"lm": 2e-3, "vision": 0.1, "projector": 1.0}
    for step in range(6):
        scheduler_lr = lr * scheduler.lr_lambdas[0](step)  # the schedule's factor at this step
        for group in optimizer.param_groups:  # fresh state: every step is a "first" step
            for p in group["params"]:
                optimizer.state.pop(p, None)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        optimizer.step()
        for name, param in model.named_parameters():
            component = name.split(".")[0]
            moved = (param - before[name]).abs()
            want = scheduler_lr * expected_scale[component]
            assert torch.allclose(moved, torch.full_like(moved, want), rtol=1e-6), (name, step)
        scheduler.step()
