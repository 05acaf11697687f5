"""Checkpoint files: atomic writes, ``step_XXXXXXXX.pt`` names, a ``latest`` pointer, pruning.

Layout under a run directory::

    OUT/checkpoints/step_00001000.pt
    OUT/checkpoints/step_00002000.pt
    OUT/checkpoints/latest            <- text file holding "step_00002000.pt"

Every file is written to a temporary name in the same directory and moved over its
target with ``os.replace``, so a run killed mid-write leaves the previous checkpoint and
pointer intact. ``fit`` decides what goes into a checkpoint (model, optimizer, scheduler,
scaler, stateful modules, step, RNG and data position); this module only stores dicts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mm_train.logging import atomic_write, atomic_write_text

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    """The directory that holds a run's checkpoints (``OUT/checkpoints``)."""
    return Path(out_dir) / CHECKPOINT_DIR


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint taken after ``step`` optimizer steps."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"step_{step:08d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest (lowest step) first."""
    folder = checkpoint_dir(out_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint named by ``latest`` (or, if that is missing, the highest step), or None."""
    pointer = checkpoint_dir(out_dir) / LATEST
    if pointer.is_file():
        target = checkpoint_dir(out_dir) / pointer.read_text(encoding="utf-8").strip()
        if target.is_file():
            return target
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (temp file, fsync, ``os.replace``)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(
    out_dir: str | Path, state: dict[str, Any], step: int, *, keep_last: int | None = None
) -> Path:
    """Write ``state`` as ``step_<step>.pt``, point ``latest`` at it, keep the newest ``keep_last``."""
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 (or None to keep all), got {keep_last}")
    path = checkpoint_dir(out_dir) / checkpoint_name(step)
    atomic_torch_save(state, path)
    atomic_write_text(checkpoint_dir(out_dir) / LATEST, path.name + "\n")
    if keep_last is not None:
        for old in list_checkpoints(out_dir)[:-keep_last]:
            if old != path:
                old.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | Path,
    *,
    map_location: str | torch.device | None = "cpu",
    weights_only: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint file (or a run directory's latest) onto ``map_location``."""
    path = Path(path)
    if path.is_dir():
        run_dir = path.parent if path.name == CHECKPOINT_DIR else path
        found = latest_checkpoint(run_dir)
        if found is None:
            raise FileNotFoundError(f"no checkpoint found in {path}")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=weights_only)


def load_newest_readable(
    out_dir: str | Path, *, map_location: str | torch.device | None = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that loads, as ``(path, state)``; None if there is none.

    Tries the ``latest`` pointer's file first, then the others from the highest step down.
    An unreadable file (truncated, corrupt) is skipped with a warning naming it; if every
    checkpoint is unreadable a ``RuntimeError`` lists them (starting fresh would discard
    the run).
    """
    first = latest_checkpoint(out_dir)
    ordered = [first] if first is not None else []
    ordered += [p for p in reversed(list_checkpoints(out_dir)) if p != first]
    failures = []
    for path in ordered:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            failures.append(f"{path} ({reason})")
            print(
                f"[mm_train] warning: checkpoint {path} is unreadable ({reason}); "
                "trying the next older one",
                file=sys.stderr,
                flush=True,
            )
            continue
        if not isinstance(state, dict):
            failures.append(f"{path} (not a checkpoint dict)")
            continue
        return path, state
    if failures:
        raise RuntimeError("no readable checkpoint: " + "; ".join(failures))
    return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def load_model_weights(
    model: nn.Module, path: str | Path, *, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load the ``model`` entry of a checkpoint (file or run directory) into ``model``; returns it."""
    state = load_checkpoint(path, map_location=map_location)
    if "model" not in state:
        raise ValueError(f"{path} holds no 'model' entry; keys: {sorted(state)}")
    unwrap_model(model).load_state_dict(state["model"])
    return state
