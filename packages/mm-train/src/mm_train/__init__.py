"""mm-train: a small typed training library.

Dataclass configs with a tyro CLI and TOML presets, run directories that refuse to be
mixed up (``start_run``), a ``fit`` loop (gradient accumulation, clipping, AMP,
evaluation hooks, NaN detection, SIGTERM checkpoints), AdamW parameter groups and
schedules, atomic checkpoints with exact resume, metrics to JSONL / TensorBoard / W&B
with a progress bar, and DDP helpers. No dependency on the other workspace packages.

Names are loaded on first use (PEP 562): ``from mm_train import parse_config, RunOptions``
does not import torch, so a script's ``--help`` and its flag errors answer at once.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "checkpoint": (
        "atomic_torch_save",
        "checkpoint_dir",
        "checkpoint_name",
        "latest_checkpoint",
        "list_checkpoints",
        "load_checkpoint",
        "load_model_weights",
        "load_newest_readable",
        "save_checkpoint",
        "unwrap_model",
    ),
    "config": (
        "ConfigError",
        "arg",
        "check_config",
        "config_from_dict",
        "config_to_dict",
        "flag",
        "load_config",
        "load_preset",
        "parse_config",
        "save_config",
    ),
    "distributed": (
        "DistInfo",
        "ResumableDistributedSampler",
        "SeededDataset",
        "all_gather_cat",
        "all_reduce_mean",
        "barrier",
        "cleanup",
        "get_rank",
        "get_world_size",
        "init_distributed",
        "is_distributed",
        "make_dataloader",
        "wrap_ddp",
    ),
    "logging": (
        "LOGGER_NAMES",
        "JsonlLogger",
        "MetricLogger",
        "Progress",
        "RunLogger",
        "TensorBoardLogger",
        "WandbLogger",
        "atomic_write",
        "atomic_write_json",
        "atomic_write_text",
        "plot_curves",
    ),
    "loop": (
        "FitResult",
        "Interrupted",
        "NonFiniteLossError",
        "OnlineSampler",
        "RecentLosses",
        "fit",
        "move_to_device",
        "updates_per_epoch",
    ),
    "optim": (
        "build_adamw",
        "param_groups",
    ),
    "run": (
        "RunOptions",
        "provenance",
        "start_run",
    ),
    "schedules": (
        "SCHEDULES",
        "Constant",
        "Cosine",
        "LRScheduler",
        "TimmCosine",
        "build_scheduler",
    ),
    "seeding": (
        "enable_determinism",
        "replaying",
        "resolve_device",
        "rng_state",
        "sample_seed",
        "seed_everything",
        "seeded",
        "set_rng_state",
        "worker_seed",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__version__ = "0.2.0"
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'mm_train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mm_train.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
