"""Small argument checks and state_dict file I/O shared by the gridvlm modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def check_int(name: str, value: Any, low: int = 1) -> None:
    """ValueError unless value is an int (not a bool) >= low."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def check_float(name: str, value: Any, ok: Callable[[float], bool], what: str) -> float:
    """float(value); ValueError "<name> must be <what>" unless it is a number (not a bool)
    for which ok holds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def save_state(module: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write module.state_dict() as safetensors (tensors copied, so tied ones save too)."""
    from safetensors.torch import save_file

    state = {
        key: value.detach().cpu().contiguous().clone() for key, value in module.state_dict().items()
    }
    save_file(state, str(path), metadata=metadata)


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = dict(handle.metadata() or {})
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return state, metadata
