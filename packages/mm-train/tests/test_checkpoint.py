"""Checkpoint files: names, the latest pointer, pruning, atomic writes, unwrapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mm_train.checkpoint import (
    atomic_torch_save,
    checkpoint_dir,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    unwrap_model,
)


def test_names_sort_by_step() -> None:
    assert checkpoint_name(1000) == "step_00001000.pt"
    assert checkpoint_name(123456789) == "step_123456789.pt"
    with pytest.raises(ValueError, match="step must be >= 0"):
        checkpoint_name(-1)


def test_save_writes_file_and_latest_pointer(tmp_path) -> None:
    path = save_checkpoint(tmp_path, {"step": 5, "w": torch.arange(3)}, 5)
    assert path == tmp_path / "checkpoints" / "step_00000005.pt"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000005.pt"
    assert latest_checkpoint(tmp_path) == path
    state = load_checkpoint(path)
    assert state["step"] == 5 and torch.equal(state["w"], torch.arange(3))
    assert load_checkpoint(tmp_path)["step"] == 5  # a run directory means its latest
    assert load_checkpoint(tmp_path / "checkpoints")["step"] == 5


def test_keep_last_leaves_exactly_k_files(tmp_path) -> None:
    for step in range(1, 8):
        save_checkpoint(tmp_path, {"step": step}, step, keep_last=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_00000005.pt",
        "step_00000006.pt",
        "step_00000007.pt",
    ]
    files = sorted(p.name for p in checkpoint_dir(tmp_path).iterdir())
    assert files == ["latest", "step_00000005.pt", "step_00000006.pt", "step_00000007.pt"]


def test_keep_last_none_keeps_everything_and_zero_is_rejected(tmp_path) -> None:
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, {"step": step}, step)
    assert len(list_checkpoints(tmp_path)) == 3
    with pytest.raises(ValueError, match="keep_last"):
        save_checkpoint(tmp_path, {}, 40, keep_last=0)


def test_atomic_save_leaves_no_temp_files(tmp_path) -> None:
    for step in range(3):
        save_checkpoint(tmp_path, {"x": torch.randn(10)}, step, keep_last=2)
    hidden = [p.name for p in checkpoint_dir(tmp_path).iterdir() if p.name.startswith(".")]
    assert hidden == []


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_failed_save_keeps_the_old_file_and_removes_the_temp_file(tmp_path) -> None:
    target = tmp_path / "state.pt"
    atomic_torch_save({"version": 1}, target)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"version": 2, "bad": Unpicklable()}, target)
    assert torch.load(target)["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_latest_falls_back_to_highest_step_when_pointer_is_stale(tmp_path) -> None:
    save_checkpoint(tmp_path, {"step": 2}, 2)
    save_checkpoint(tmp_path, {"step": 3}, 3)
    (checkpoint_dir(tmp_path) / "step_00000003.pt").unlink()
    assert latest_checkpoint(tmp_path).name == "step_00000002.pt"
    (checkpoint_dir(tmp_path) / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step_00000002.pt"
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        load_checkpoint(tmp_path)


def test_unwrap_and_load_model_weights(tmp_path) -> None:
    model = nn.Linear(3, 2)
    wrapped = nn.DataParallel(model)  # same .module convention as DDP
    assert unwrap_model(wrapped) is model
    assert unwrap_model(model) is model
    save_checkpoint(tmp_path, {"model": unwrap_model(wrapped).state_dict()}, 1)
    other = nn.Linear(3, 2)
    load_model_weights(nn.DataParallel(other), tmp_path)
    assert torch.equal(other.weight, model.weight)
    save_checkpoint(tmp_path, {"weights": 1}, 2)
    with pytest.raises(ValueError, match="no 'model' entry"):
        load_model_weights(other, tmp_path)
