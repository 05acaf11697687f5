"""The fit loop: accumulation, clipping, NaN detection, hooks, checkpoints, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mm_train.checkpoint import list_checkpoints, load_checkpoint
from mm_train.loop import (
    NonFiniteLossError,
    OnlineSampler,
    fit,
    move_to_device,
    updates_per_epoch,
)
from mm_train.optim import build_adamw
from mm_train.schedules import Cosine, build_scheduler


def _batches(n: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(size, 3, generator=generator)
        out.append(
            (x, x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(size, 1, generator=generator))
        )
    return out


def _merge(pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def mse_step(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def _fit(model, data, **kw):
    optimizer = kw.pop("optimizer", None) or build_adamw(model, lr=0.01, weight_decay=0.1)
    kw.setdefault("progress", False)
    return fit(model, mse_step, data, optimizer, **kw), optimizer


def _assert_same_params(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=atol, rtol=0), name


def test_grad_accum_equals_one_step_on_the_merged_batch() -> None:
    batches = _batches(8, 4)
    accumulated, merged = _model(), _model()
    _fit(accumulated, batches, epochs=2, grad_accum=2)
    _fit(merged, [_merge(batches[i : i + 2]) for i in range(0, 8, 2)], epochs=2)
    _assert_same_params(accumulated, merged)


def test_partial_window_at_epoch_end_averages_over_the_batches_it_has() -> None:
    batches = _batches(3, 4)  # grad_accum=2: steps use 2 then 1 micro-batches
    accumulated, merged = _model(), _model()
    result, _ = _fit(accumulated, batches, epochs=2, grad_accum=2)
    _fit(merged, [_merge(batches[:2]), batches[2]], epochs=2)
    assert result.step == 4 == 2 * updates_per_epoch(batches, 2)
    _assert_same_params(accumulated, merged)


def test_clipping_bounds_the_gradient_norm() -> None:
    batches = [(100 * x, 100 * y) for x, y in _batches(4, 4)]  # large gradients
    model = _model()
    norms = []

    def record(step: int) -> None:
        grads = [p.grad for p in model.parameters()]
        norms.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))

    result, _ = _fit(model, batches, max_steps=4, clip_grad_norm=0.5, on_step_end=record)
    assert len(norms) == 4
    assert max(norms) <= 0.5 * (1 + 1e-5)
    assert result.metrics["grad_norm"] > 0.5  # the norm before clipping is logged


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_raises_naming_the_step(bad: float) -> None:
    calls = []

    def step_fn(model: nn.Module, batch) -> torch.Tensor:
        calls.append(1)
        loss = mse_step(model, batch)
        return loss * bad if len(calls) == 5 else loss  # micro-batch 5 = step 3

    model = _model()
    optimizer = build_adamw(model, lr=0.01)
    with pytest.raises(NonFiniteLossError, match="at step 3 "):
        fit(model, step_fn, _batches(8, 2), optimizer, epochs=1, grad_accum=2, progress=False)
    assert issubclass(NonFiniteLossError, RuntimeError)


def test_eval_hook_runs_at_the_right_steps_in_eval_mode(tmp_path) -> None:
    seen = []

    def eval_fn(model: nn.Module, step: int) -> dict[str, float]:
        seen.append((step, model.training))
        return {"val/score": float(step)}

    model = _model()
    result, _ = _fit(
        model, _batches(4, 2), max_steps=10, eval_every=3, eval_fn=eval_fn, out_dir=tmp_path
    )
    assert seen == [(3, False), (6, False), (9, False), (10, False)]
    assert model.training
    assert result.eval_metrics == {"val/score": 10.0}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/score" in r] == [3, 6, 9, 10]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"] == 10 and summary["val/score"] == 10.0 and "loss" in summary


def test_eval_without_eval_every_runs_once_at_the_end() -> None:
    seen = []
    _fit(_model(), _batches(2, 2), max_steps=5, eval_fn=lambda m, s: seen.append(s))
    assert seen == [5]


def test_logging_every_n_steps_with_metrics_and_lr(tmp_path) -> None:
    def step_fn(model, batch):
        loss = mse_step(model, batch)
        return loss, {"half": loss.detach() / 2, "const": 3.0}

    model = _model()
    optimizer = build_adamw(model, lr=0.1)
    scheduler = build_scheduler(optimizer, "cosine", total=7)
    fit(
        model,
        step_fn,
        _batches(3, 2),
        optimizer,
        scheduler=scheduler,
        max_steps=7,
        log_every=3,
        out_dir=tmp_path,
        progress=False,
    )
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 7]
    for record in records:
        assert record["half"] == pytest.approx(record["loss"] / 2)
        assert record["const"] == 3.0
        assert record["lr"] == pytest.approx(Cosine(0.1, 7)(record["step"]))
    assert records[-1]["epoch"] == 2  # step 7 is the first batch of the third epoch


class EpochCounter(nn.Module):
    """A stateful module with a buffer and the on_epoch_end hook."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))
        self.calls: list[int] = []

    def on_epoch_end(self, epoch: int) -> None:
        self.calls.append(epoch)
        self.epochs_done += 1

    def diagnostics(self) -> dict[str, float]:
        return {"epochs_done": float(self.epochs_done)}


def test_epoch_hooks_and_stateful_modules(tmp_path) -> None:
    counter = EpochCounter()
    user_calls = []
    result, _ = _fit(
        _model(),
        _batches(4, 2),
        epochs=3,
        grad_accum=3,
        out_dir=tmp_path,
        log_every=1,
        stateful={"counter": counter},
        on_epoch_end=user_calls.append,
    )
    assert counter.calls == user_calls == [0, 1, 2]
    assert result.epoch == 3 and result.step == 6
    state = load_checkpoint(result.checkpoint)
    assert int(state["stateful"][0]["counter"]["epochs_done"]) == 3
    assert (state["step"], state["epoch"], state["batches_in_epoch"]) == (6, 3, 0)
    assert "counter/epochs_done" in result.metrics


def test_checkpoints_every_n_steps_keep_last_k(tmp_path) -> None:
    result, _ = _fit(
        _model(), _batches(3, 2), max_steps=7, checkpoint_every=2, keep_last=2, out_dir=tmp_path
    )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000006.pt", "step_00000007.pt"]
    assert result.checkpoint == tmp_path / "checkpoints" / "step_00000007.pt"
    state = load_checkpoint(result.checkpoint)
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "data", "step"}
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_resume_continues_to_the_same_parameters(tmp_path) -> None:
    batches = _batches(5, 2)
    straight = _model()
    _fit(straight, batches, epochs=3, grad_accum=2, seed=1)
    first = _model()
    _fit(first, batches, max_steps=4, grad_accum=2, seed=1, out_dir=tmp_path)
    resumed = _model(seed=99)  # a different init: everything comes from the checkpoint
    result, _ = _fit(
        resumed, batches, epochs=3, grad_accum=2, seed=1, out_dir=tmp_path, resume=True
    )
    assert result.resumed_from.name == "step_00000004.pt" and result.step == 9
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_resume_without_checkpoint_starts_fresh_with_a_note(tmp_path, capsys) -> None:
    result, _ = _fit(_model(), _batches(2, 2), max_steps=2, out_dir=tmp_path, resume=True)
    assert result.resumed_from is None and result.step == 2
    assert "has no checkpoint; starting fresh" in capsys.readouterr().err


def test_resume_from_a_missing_path_is_an_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        _fit(_model(), _batches(2, 2), max_steps=2, resume=tmp_path / "step_00000009.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint in that directory"):
        _fit(_model(), _batches(2, 2), max_steps=2, resume=tmp_path)


def test_resume_with_a_scheduler_mismatch_is_an_error(tmp_path) -> None:
    _fit(_model(), _batches(2, 2), max_steps=2, out_dir=tmp_path)
    model = _model()
    optimizer = build_adamw(model, lr=0.1)
    scheduler = build_scheduler(optimizer, "constant")
    with pytest.raises(ValueError, match="has no scheduler state"):
        _fit(
            model,
            _batches(2, 2),
            max_steps=4,
            optimizer=optimizer,
            scheduler=scheduler,
            out_dir=tmp_path,
            resume=True,
        )


def test_online_data_is_called_with_micro_batch_indices() -> None:
    seen = []

    def sample(generator: torch.Generator, index: int):
        seen.append(index)
        x = torch.randn(4, 3, generator=generator)
        return x, x.sum(dim=1, keepdim=True)

    result, _ = _fit(_model(), OnlineSampler(sample, seed=0), max_steps=3, grad_accum=2)
    assert seen == [0, 1, 2, 3, 4, 5] and result.step == 3


def test_amp_is_off_on_cpu_with_a_note(capsys) -> None:
    result, _ = _fit(_model(), _batches(2, 2), max_steps=2, amp="bf16")
    assert result.step == 2
    assert "ignored on cpu" in capsys.readouterr().err


def test_move_to_device_walks_nested_batches() -> None:
    batch = {"x": torch.ones(2), "pair": (torch.zeros(1), [torch.ones(1)]), "name": "a"}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["name"] == "a" and torch.equal(moved["pair"][1][0], torch.ones(1))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "exactly one of max_steps and epochs"),
        ({"max_steps": 2, "epochs": 1}, "exactly one of max_steps and epochs"),
        ({"max_steps": 0}, "max_steps must be a positive"),
        ({"epochs": 1.5}, "epochs must be an int"),
        ({"max_steps": 2, "grad_accum": 0}, "grad_accum must be an int >= 1"),
        ({"max_steps": 2, "amp": "fp8"}, "unknown amp mode 'fp8'"),
        ({"max_steps": 2, "clip_grad_norm": -1.0}, "clip_grad_norm must be a positive"),
        ({"max_steps": 2, "eval_every": 2}, "eval_every is set but no eval_fn"),
        ({"max_steps": 2, "checkpoint_every": 2}, "checkpoint_every needs out_dir"),
        ({"max_steps": 2, "resume": True}, "resume=True needs out_dir"),
        ({"max_steps": 2, "stateful": {"x": object()}}, r"stateful\['x'\] has no state_dict"),
        ({"max_steps": 2, "log_every": 0}, "log_every must be a positive"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _fit(_model(), _batches(2, 2), **kwargs)


def test_bad_data_and_step_outputs_raise_value_errors() -> None:
    model = _model()
    optimizer = build_adamw(model, lr=0.1)
    with pytest.raises(ValueError, match="trains for max_steps, not epochs"):
        fit(model, mse_step, lambda i: None, optimizer, epochs=1)
    with pytest.raises(ValueError, match="sized iterable"):
        fit(model, mse_step, iter(_batches(2, 2)), optimizer, max_steps=1)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(_batches(2, 2))

    with pytest.raises(ValueError, match="data has no length"):
        fit(
            model,
            mse_step,
            torch.utils.data.DataLoader(Stream(), batch_size=None),
            optimizer,
            epochs=1,
        )
    with pytest.raises(ValueError, match="data is empty"):
        fit(model, mse_step, [], optimizer, epochs=1)
    with pytest.raises(ValueError, match="scalar loss"):
        fit(model, lambda m, b: m(b[0]), _batches(2, 2), optimizer, max_steps=1, progress=False)
    with pytest.raises(ValueError, match="does not require grad"):
        fit(
            model,
            lambda m, b: torch.tensor(1.0),
            _batches(2, 2),
            optimizer,
            max_steps=1,
            progress=False,
        )


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda_trains_and_checkpoints_the_scaler(tmp_path, amp: str) -> None:
    model = _model().cuda()
    batches = _batches(4, 8)
    result, _ = _fit(model, batches, max_steps=6, amp=amp, clip_grad_norm=1.0, out_dir=tmp_path)
    assert math.isfinite(result.metrics["loss"])
    assert next(model.parameters()).dtype == torch.float32
    state = load_checkpoint(result.checkpoint)
    assert (state["scaler"] is not None) == (amp == "fp16")
    resumed = _model(seed=3).cuda()
    again, _ = _fit(resumed, batches, max_steps=8, amp=amp, out_dir=tmp_path, resume=True)
    assert again.step == 8


def test_fresh_start_into_a_directory_with_checkpoints_is_refused(tmp_path) -> None:
    _fit(_model(), _batches(2, 4), epochs=1, out_dir=tmp_path)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(ValueError, match=r"already holds checkpoints.*resume=True"):
        _fit(_model(), _batches(2, 4), epochs=1, out_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    result, _ = _fit(_model(), _batches(2, 4), epochs=2, out_dir=tmp_path, resume=True)
    assert result.resumed_from is not None and result.step == 4


class _Visits(nn.Module):
    """A stateful loss that counts the samples it sees in training mode only."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> None:
        if self.training:
            self.count += x.shape[0]


def test_eval_fn_sees_stateful_modules_in_eval_mode_and_state_unchanged() -> None:
    visits = _Visits()
    modes: list[bool] = []

    def step_fn(model, batch):
        visits(batch[0])
        return mse_step(model, batch)

    def eval_fn(model, step):
        modes.append(visits.training)
        visits(torch.zeros(100, 3))  # a validation pass through the loss
        return {"val": 0.0}

    model = _model()
    optimizer = build_adamw(model, lr=0.01, weight_decay=0.0)
    fit(
        model,
        step_fn,
        _batches(3, 4),
        optimizer,
        epochs=2,
        eval_fn=eval_fn,
        eval_every=2,
        stateful={"loss": visits},
        progress=False,
    )
    assert modes == [False, False, False]  # steps 2, 4, 6
    assert int(visits.count) == 6 * 4 and visits.training


def test_fit_writes_curves_and_extra_loggers(tmp_path) -> None:
    _fit(
        _model(), _batches(4, 4), epochs=2, out_dir=tmp_path, log_every=1, loggers=("tensorboard",)
    )
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_recent_losses_keeps_the_last_window_and_resumes_exactly() -> None:
    from mm_train import RecentLosses

    window = RecentLosses(3)
    assert math.isnan(window.mean())
    for value in [5.0, 1.0, 2.0, 3.0]:
        window.add(value)
    assert window.mean() == pytest.approx(2.0)  # 5 dropped out of the window
    assert window.mean_over_ranks() == window.mean()  # one process
    restored = RecentLosses(3)
    restored.load_state_dict(window.state_dict())
    window.add(10.0)
    restored.add(10.0)
    assert restored.mean() == window.mean() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="3 values, this run keeps 4"):
        RecentLosses(4).load_state_dict(window.state_dict())
    with pytest.raises(ValueError, match="window must be a positive integer, got 0"):
        RecentLosses(0)
