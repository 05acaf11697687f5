"""Run directories that cannot be mixed up or lost: refuse, overwrite, or resume checked.

Every training script starts with

    cfg = parse_config(MyConfig, preset_dir=...)      # bad values: exit 2, nothing written
    info = init_distributed(cfg.device)
    out = start_run(cfg, info, global_batch=cfg.batch_size * info.world_size)

and ``start_run`` applies the rules, on every rank, before any file is written:

- ``--out`` holding a run (``config.json``, ``metrics.jsonl``, ``checkpoints/``, ...) is
  refused unless ``--resume`` (continue it) or ``--overwrite`` (delete that run's files,
  then start again); exit status 2 and a message naming the directory and both flags.
- ``--resume`` compares the resolved config with the saved ``config.json``: every field
  not declared ``may_change`` (see :func:`mm_train.config.arg`) must match, otherwise exit
  2 listing each differing flag with both values. Fields that may change (steps to extend,
  logging and checkpoint cadence, device, threads, loggers) are accepted, and the resume
  is recorded in ``run.json``.
- ``run.json`` records what ran: the command, the git commit (and whether the tree was
  dirty), the versions of the workspace packages, torch and CUDA, the world size and the
  global batch.

``RunOptions`` holds the fields every script shares (``--out``, ``--device``, ``--seed``,
``--resume``, ``--overwrite``, ``--loggers``); app configs inherit from it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mm_train.config import ConfigError, _exit_with, arg, config_to_dict, flag, leaf_fields
from mm_train.logging import LOGGER_NAMES, atomic_write_json

__all__ = ["RUN_FILES", "RunOptions", "provenance", "start_run"]

# What a run directory holds; the presence of any of these means "a run lives here".
RUN_FILES = (
    "config.json",
    "run.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
    "tensorboard",
    "wandb",
    "curves.png",
)
PACKAGES = ("mm-data", "mm-models", "mm-losses", "mm-eval", "mm-train")


@dataclass
class RunOptions:
    """The flags every training script has; an app's config dataclass inherits them."""

    out: str = arg("runs/run", "run directory (config, metrics, checkpoints)", may_change=True)
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device", may_change=True)
    seed: int = arg(0, "random seed")
    resume: bool = arg(
        False,
        "continue the run in --out from its newest readable checkpoint",
        may_change=True,
    )
    overwrite: bool = arg(
        False, "delete the run in --out (its files only) and start again", may_change=True
    )
    loggers: tuple[Literal["tensorboard", "wandb"], ...] = arg(
        (), "loggers beside metrics.jsonl: tensorboard, wandb (offline)", may_change=True
    )


# --------------------------------------------------------------------------- provenance


def _git(args: list[str], cwd: Path) -> str | None:
    """Output of a git command in ``cwd`` (None when git or the repository is missing)."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(distribution: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(*, world_size: int = 1, global_batch: int | None = None) -> dict[str, Any]:
    """What produced a run: command, git commit and dirty flag, versions, world size, batch."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path.cwd()
    where = script.parent if script.is_file() else Path.cwd()
    commit = _git(["rev-parse", "HEAD"], where)
    status = _git(["status", "--porcelain", "--untracked-files=no"], where) if commit else None
    import torch

    return {
        "command": [sys.executable, *sys.argv],
        "cwd": str(Path.cwd()),
        "host": socket.gethostname(),
        "git_commit": commit,
        "git_dirty": bool(status) if commit else None,
        "versions": {
            **{name: _version(name) for name in PACKAGES},
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
        },
        "world_size": world_size,
        "global_batch": global_batch,
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the rules


def _present(out: Path, extra: tuple[str, ...]) -> list[str]:
    """The run files (standard and the app's own) that exist in ``out``."""
    if not out.is_dir():
        return []
    return [name for name in (*RUN_FILES, *extra) if (out / name).exists()]


_MISSING = object()


def _differences(saved: dict[str, Any], current: Any) -> list[str]:
    """``--flag: saved X, now Y`` for each field that must match on resume and does not."""
    now = config_to_dict(current)
    lines = []
    for leaf in leaf_fields(type(current)):
        if leaf.may_change:
            continue
        old, new = saved, now
        for part in leaf.path.split("."):
            old = old.get(part, _MISSING) if isinstance(old, dict) else _MISSING
            new = new[part]
        if old is _MISSING:
            lines.append(f"  {flag(leaf.path)}: not in the saved config, now {json.dumps(new)}")
        elif old != new:
            lines.append(f"  {flag(leaf.path)}: saved {json.dumps(old)}, now {json.dumps(new)}")
    return lines


def _changed(saved: dict[str, Any], current: Any) -> dict[str, list[Any]]:
    """``{flag: [saved, now]}`` for the may-change fields a resume changes."""
    now = config_to_dict(current)
    out = {}
    for leaf in leaf_fields(type(current)):
        old, new = saved, now
        for part in leaf.path.split("."):
            old = old.get(part) if isinstance(old, dict) else None
            new = new[part]
        if leaf.may_change and old != new and leaf.path not in ("resume", "overwrite"):
            out[flag(leaf.path)] = [old, new]
    return out


def _check(cfg: Any, out: Path, files: tuple[str, ...]) -> dict[str, Any] | None:
    """Apply the rules without writing; returns the saved config on resume (or None)."""
    resume, overwrite = bool(getattr(cfg, "resume", False)), bool(getattr(cfg, "overwrite", False))
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue or start again?")
    for name in getattr(cfg, "loggers", ()):
        if name not in LOGGER_NAMES:
            raise ConfigError(f"--loggers: unknown logger {name!r}; choose from {LOGGER_NAMES}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    present = _present(out, files)
    if present and not (resume or overwrite):
        raise ConfigError(
            f"--out {out} already holds a run ({', '.join(present)}); pass --resume to "
            "continue it or --overwrite to delete its files and start again"
        )
    if not resume or not (out / "config.json").is_file():
        return None
    try:
        saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--resume: cannot read {out / 'config.json'}: {exc}") from None
    lines = _differences(saved, cfg)
    if lines:
        may = ", ".join(flag(leaf.path) for leaf in leaf_fields(type(cfg)) if leaf.may_change)
        raise ConfigError(
            f"--resume: the config differs from the run in {out} "
            f"({out / 'config.json'}):\n" + "\n".join(lines) + f"\nOnly these may change on "
            f"resume: {may}. Start a new run with another --out, or --overwrite this one."
        )
    return saved


def _remove_run(out: Path, files: tuple[str, ...]) -> None:
    """Delete the run files (standard and the app's) in ``out``; other files stay."""
    for name in (*RUN_FILES, *files):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def start_run(
    cfg: Any,
    info: Any = None,
    *,
    global_batch: int | None = None,
    files: tuple[str, ...] = (),
    exit_on_error: bool = True,
) -> Path:
    """Apply the run-directory rules to ``cfg.out`` and write ``config.json`` and ``run.json``.

    ``info`` is the ``DistInfo`` of :func:`mm_train.init_distributed` (every rank checks,
    rank 0 writes). ``global_batch`` (samples per optimizer step over all ranks) is
    recorded. ``files`` names app-specific files of the run (e.g. ``mixing.pt``) that
    ``--overwrite`` deletes too. Errors print and exit with status 2, leaving the directory
    unchanged (``exit_on_error=False`` raises ``ConfigError``). Returns ``Path(cfg.out)``.
    """
    from mm_train.distributed import barrier

    out = Path(cfg.out)
    is_main = True if info is None else bool(info.is_main)
    world_size = 1 if info is None else int(info.world_size)
    try:
        saved = _check(cfg, out, tuple(files))
    except ConfigError as exc:
        if not exit_on_error:
            raise
        if is_main:
            _exit_with(str(exc))
        raise SystemExit(2) from None
    barrier()  # every rank has checked before rank 0 writes
    if is_main:
        record_path = out / "run.json"
        previous: dict[str, Any] = {}
        if saved is not None and record_path.is_file():
            try:
                previous = json.loads(record_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                previous = {}
        if getattr(cfg, "overwrite", False):
            _remove_run(out, tuple(files))
        out.mkdir(parents=True, exist_ok=True)
        here = provenance(world_size=world_size, global_batch=global_batch)
        if saved is not None:
            record = previous or {"started": None, **here}
            record.setdefault("resumes", []).append(
                {"at": _now(), "changed": _changed(saved, cfg), **here}
            )
        else:
            record = {"started": _now(), **here, "resumes": []}
        atomic_write_json(record_path, record)
        atomic_write_json(out / "config.json", config_to_dict(cfg))
    barrier()
    return out
