"""mm-train: a small typed training library.

Dataclass configs with a generated CLI and TOML presets, a ``fit`` loop (gradient
accumulation, clipping, AMP, evaluation hooks, NaN detection), AdamW parameter groups and
schedules, atomic checkpoints with exact resume, run logging with a progress bar, and DDP
helpers. No dependency on the other workspace packages.
"""

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
from mm_train.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    load_preset,
    parse_config,
    save_config,
)
from mm_train.distributed import (
    DistInfo,
    ResumableDistributedSampler,
    all_gather_with_grad,
    all_reduce_mean,
    barrier,
    cleanup,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    make_dataloader,
    wrap_ddp,
)
from mm_train.logging import Progress, RunLogger, atomic_write, atomic_write_json, atomic_write_text
from mm_train.loop import (
    FitResult,
    NonFiniteLossError,
    OnlineSampler,
    fit,
    move_to_device,
    updates_per_epoch,
)
from mm_train.optim import build_adamw, param_groups
from mm_train.schedules import SCHEDULES, Constant, Cosine, LRScheduler, TimmCosine, build_scheduler
from mm_train.seeding import (
    enable_determinism,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    worker_seed,
)

__version__ = "0.1.0"

__all__ = [
    "SCHEDULES",
    "ConfigError",
    "Constant",
    "Cosine",
    "DistInfo",
    "FitResult",
    "LRScheduler",
    "NonFiniteLossError",
    "OnlineSampler",
    "Progress",
    "ResumableDistributedSampler",
    "RunLogger",
    "TimmCosine",
    "all_gather_with_grad",
    "all_reduce_mean",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "barrier",
    "build_adamw",
    "build_scheduler",
    "checkpoint_dir",
    "checkpoint_name",
    "cleanup",
    "config_from_dict",
    "config_to_dict",
    "enable_determinism",
    "fit",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "load_model_weights",
    "load_preset",
    "make_dataloader",
    "move_to_device",
    "param_groups",
    "parse_config",
    "resolve_device",
    "rng_state",
    "save_checkpoint",
    "save_config",
    "seed_everything",
    "set_rng_state",
    "unwrap_model",
    "updates_per_epoch",
    "worker_seed",
    "wrap_ddp",
]
