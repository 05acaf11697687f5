"""Seeding, determinism and device selection.

A run is reproducible when every random number generator it draws from is seeded
(``seed_everything``), when kernels that may pick nondeterministic algorithms are told
not to (``enable_determinism``), and when a resumed run continues every generator from
where the interrupted run left it (``rng_state`` / ``set_rng_state``, stored in
checkpoints). ``worker_seed`` derives distinct per-rank / per-worker seeds from one base
seed, and ``resolve_device`` turns the ``--device auto|cpu|cuda`` flag into a
``torch.device`` (``cuda:LOCAL_RANK`` under torchrun).
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = [
    "DEVICE_CHOICES",
    "enable_determinism",
    "resolve_device",
    "rng_state",
    "sample_seed",
    "seed_everything",
    "seeded",
    "set_rng_state",
    "worker_seed",
]

DEVICE_CHOICES = ("auto", "cpu", "cuda")

_MAX_SEED = 2**32  # numpy's legacy seeding accepts [0, 2**32)
_CUBLAS_WORKSPACE = ":4096:8"


def _check_seed(seed: int, name: str = "seed") -> int:
    """Return ``seed`` as an int in [0, 2**32) or raise ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < _MAX_SEED:
        raise ValueError(f"{name} must be in [0, 2**32), got {seed}")
    return int(seed)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator, torch (CPU) and every CUDA device."""
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, if CUDA is not up yet)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def enable_determinism(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (errors on ops that have none) and stable cuDNN.

    Sets ``CUBLAS_WORKSPACE_CONFIG`` (unless already set), which cuBLAS reads when CUDA
    starts: call this before the first CUDA operation.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def rng_state() -> dict[str, Any]:
    """Snapshot of the Python, numpy, torch CPU and (if available) every CUDA generator.

    Holds only tensors, lists, tuples, ints, floats and strings, so it survives
    ``torch.save`` and loads with ``torch.load(weights_only=True)`` as well as ``False``.
    """
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }
    return state


def _to_python_state(value: Any) -> tuple:
    """Python ``random`` state with its inner sequence as a tuple (JSON/pickle may list it)."""
    version, internal, gauss = value
    return (int(version), tuple(int(x) for x in internal), gauss)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators from ``rng_state()``; keys missing from ``state`` are left alone.

    CUDA states are restored for as many devices as both the snapshot and this machine
    have; a snapshot taken with CUDA restores on a CPU-only machine with a warning.
    """
    unknown = set(state) - {"python", "numpy", "torch", "cuda"}
    if unknown:
        raise ValueError(f"unknown keys in rng state: {sorted(unknown)}")
    if "python" in state:
        random.setstate(_to_python_state(state["python"]))
    if "numpy" in state:
        np_state = state["numpy"]
        if isinstance(np_state, dict) and "key" in np_state:
            key = np_state["key"]
            key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
            np.random.set_state(
                (
                    np_state["bit_generator"],
                    key.astype(np.uint32),
                    int(np_state["pos"]),
                    int(np_state["has_gauss"]),
                    float(np_state["gauss"]),
                )
            )
        else:  # the tuple from np.random.get_state()
            np.random.set_state(np_state)
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    cuda_states = list(state.get("cuda") or [])
    if cuda_states:
        if not torch.cuda.is_available():
            warnings.warn(
                "rng state holds CUDA generator states but CUDA is not available; "
                "they were not restored",
                stacklevel=2,
            )
            return
        count = torch.cuda.device_count()
        if len(cuda_states) != count:
            warnings.warn(
                f"rng state holds {len(cuda_states)} CUDA generator states but this "
                f"machine has {count} CUDA devices; restoring the first "
                f"{min(count, len(cuda_states))}",
                stacklevel=2,
            )
        for device, cuda_state in enumerate(cuda_states[:count]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


def resolve_device(name: str) -> torch.device:
    """Turn ``auto|cpu|cuda`` into a device; under torchrun ``cuda`` means ``cuda:LOCAL_RANK``."""
    if name not in DEVICE_CHOICES:
        allowed = ", ".join(repr(c) for c in DEVICE_CHOICES)
        raise ValueError(f"unknown device {name!r}; allowed values are {allowed}")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name == "auto":
            return torch.device("cpu")
        raise ValueError(
            "device 'cuda' was requested but CUDA is not available "
            "(no GPU visible, or torch was built without CUDA); use --device cpu or auto"
        )
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        return torch.device("cuda")
    index = int(local_rank)
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise ValueError(
            f"LOCAL_RANK={index} but only {count} CUDA device(s) are visible; "
            "start at most that many processes per node"
        )
    return torch.device("cuda", index)


def _mix32(x: int) -> int:
    """A bijective 32-bit integer hash (xor-shift / odd-multiply rounds)."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def worker_seed(base_seed: int, rank: int, worker: int = 0) -> int:
    """Seed in [0, 2**32) for (rank, worker); distinct across pairs for a fixed base seed.

    ``rank`` and ``worker`` must be in [0, 65536). Pairs map injectively to 32 bits and
    are then mixed with a bijection keyed by the base seed, so no two (rank, worker) pairs
    of one run share a seed and neighbouring pairs get unrelated-looking seeds.
    """
    base = _check_seed(base_seed, "base_seed")
    for label, value in (("rank", rank), ("worker", worker)):
        if not 0 <= int(value) < 2**16:
            raise ValueError(f"{label} must be in [0, 65536), got {value}")
    index = (int(rank) << 16) | int(worker)
    return _mix32(index ^ _mix32(base ^ 0x9E3779B9))


def sample_seed(base_seed: int, epoch: int, index: int) -> int:
    """Seed in [0, 2**32) of one sample's randomness in one epoch (see ``seeded``)."""
    base = _check_seed(base_seed, "base_seed")
    mixed = _mix32(int(epoch) ^ _mix32(base ^ 0x85EBCA6B))
    return _mix32((int(index) & 0xFFFFFFFF) ^ _mix32(mixed ^ (int(index) >> 32)))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python's ``random``, numpy's global generator and torch's CPU generator with
    ``seed`` inside the block, and put the three states back afterwards.

    In a DataLoader worker process the states are not put back (nothing else in the
    worker draws from them, and each batch seeds them again), which halves the cost.
    """
    seed = _check_seed(seed)
    in_worker = get_worker_info() is not None
    saved = None if in_worker else (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators are untouched
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def replaying(generator: torch.Generator) -> Callable[[], torch.Generator]:
    """Draw one seed from ``generator``; each call of the result is a fresh generator on
    that seed (same device), so estimators given one each see the same samples (common
    random numbers: paired differences with a small standard error)."""
    seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    return lambda: torch.Generator(device=generator.device).manual_seed(seed)
