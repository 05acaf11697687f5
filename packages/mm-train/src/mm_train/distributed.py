"""One process or many: torchrun setup, DDP wrapping, a resumable sampler and collectives.

Under ``torchrun --nproc_per_node N`` every process reads ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` from the environment; ``init_distributed`` joins the process group (gloo
on CPU, nccl on CUDA) and returns a ``DistInfo``. Started as a plain script it is a
no-op returning rank 0 of 1, and every helper here then degrades to the identity, so an
app has one code path. Only the main process (rank 0) should log and save: pass
``enabled=info.is_main`` to ``RunLogger`` and ``Progress`` (``fit`` does this itself).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from mm_train.seeding import resolve_device, sample_seed, seeded


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among ``world_size`` and the device it trains on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    is_main: bool = True

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _env_int(name: str) -> int:
    """Read an integer torchrun variable, or raise ValueError naming it."""
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"WORLD_SIZE > 1 but {name} is not set; start the script with torchrun")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(device_kind: str = "auto") -> DistInfo:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA); a no-op for one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=resolve_device(device_kind))
    rank = _env_int("RANK")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = resolve_device(device_kind)  # cuda:LOCAL_RANK under torchrun
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        # device_id binds nccl to this rank's GPU (no guessing in barrier / object collectives)
        device_id = device if device.type == "cuda" else None
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, device_id=device_id
        )
    return DistInfo(rank, local_rank, world_size, device, is_main=rank == 0)


def wrap_ddp(model: nn.Module, info: DistInfo, **ddp_kwargs: Any) -> nn.Module:
    """Wrap ``model`` (already on ``info.device``) in DDP when distributed, else return it."""
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (no-op if none was joined); call it on the success path.

    The barrier first lets every rank finish its last collective before any rank tears
    down its connections: a gloo peer that closes early can abort the other rank's
    background thread ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        barrier()
        dist.destroy_process_group()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over processes, as a new tensor (a copy in a single process)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every process concatenated along dim 0 in rank order (sizes may
    differ), on ``tensor``'s device; the tensor itself in a single process."""
    if not is_distributed():
        return tensor
    parts: list[torch.Tensor | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.detach().cpu())
    return torch.cat([p for p in parts if p is not None]).to(tensor.device)


class ResumableDistributedSampler(Sampler[int]):
    """Each rank's share of a per-epoch permutation, which can start part-way into an epoch.

    The epoch's order is a permutation drawn from ``seed + epoch`` (as torch's
    ``DistributedSampler``): the index list is padded by wrapping around (or cut, with
    ``drop_last``) to a multiple of ``num_replicas`` and rank ``r`` takes every
    ``num_replicas``-th index from position ``r``. ``skip(n)`` drops this rank's first ``n``
    samples of the current epoch, so a resumed run sees exactly the batches the
    interrupted run had not reached; ``set_epoch`` starts a new epoch from its beginning.
    """

    def __init__(
        self,
        dataset: Sized | int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.dataset_size = dataset if isinstance(dataset, int) else len(dataset)
        self.num_replicas = get_world_size() if num_replicas is None else int(num_replicas)
        self.rank = get_rank() if rank is None else int(rank)
        if self.num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {self.num_replicas}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}")
        if self.dataset_size < 1:
            raise ValueError("the dataset is empty")
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        if drop_last:
            self.num_samples = self.dataset_size // self.num_replicas
            if self.num_samples == 0:
                raise ValueError(
                    f"drop_last with {self.dataset_size} samples and {self.num_replicas} "
                    "ranks leaves no sample per rank"
                )
        else:
            self.num_samples = math.ceil(self.dataset_size / self.num_replicas)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` and start from its first sample."""
        self.epoch = int(epoch)
        self.start = 0

    def skip(self, num_samples: int) -> None:
        """Start the current epoch after this rank's first ``num_samples`` samples."""
        if not 0 <= num_samples <= self.num_samples:
            raise ValueError(
                f"can skip between 0 and {self.num_samples} samples of an epoch, got {num_samples}"
            )
        self.start = int(num_samples)

    def epoch_indices(self) -> list[int]:
        """This rank's full index list for the current epoch (ignoring ``skip``)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            order = list(range(self.dataset_size))
        total = self.num_samples * self.num_replicas
        if total > len(order):
            order += (order * math.ceil(total / len(order)))[: total - len(order)]
        order = order[:total]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


class SeededDataset(Dataset):
    """A dataset whose random draws depend only on (seed, epoch, which samples are loaded).

    A ``DataLoader`` fetches a batch with ``__getitems__(indices)``: every global generator
    (torch, numpy, Python's ``random``) is seeded from (seed, epoch, the batch's indices),
    then the samples are loaded in order. Random augmentation inside ``__getitem__``
    (torchvision, timm, numpy, ``random``) then does not depend on which worker process
    loads the batch or what it loaded before, so a run resumed mid-epoch, with any
    ``num_workers``, draws exactly the augmentations of the uninterrupted run. One seeding
    per batch costs ~0.1 ms. ``dataset[i]`` alone is seeded from (seed, epoch, i). The
    caller's generators are restored afterwards. ``fit`` calls ``set_epoch`` at the start
    of each epoch. Attributes of the wrapped dataset are reachable on the wrapper.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentations of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with seeded(sample_seed(self.seed, self.epoch, int(index))):
            return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        key = hash(tuple(int(i) for i in indices))  # ints hash alike in every process
        with seeded(sample_seed(self.seed, self.epoch, key & 0xFFFFFFFFFFFFFFFF)):
            inner = getattr(self.dataset, "__getitems__", None)
            return list(inner(indices)) if inner else [self.dataset[i] for i in indices]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def make_dataloader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    info: DistInfo | None = None,
    seed_samples: bool | None = None,
    **loader_kwargs: Any,
) -> DataLoader:
    """A DataLoader over this rank's share of ``dataset`` with a ``ResumableDistributedSampler``.

    ``batch_size`` is per process. ``drop_last`` drops the incomplete last batch as well as
    the samples that do not divide evenly between ranks. Extra keyword arguments
    (``num_workers``, ``collate_fn``, ``pin_memory``, ...) go to ``DataLoader``.

    Exact resume with random augmentation: in the main process (``num_workers=0``) the
    dataset draws from the generators that checkpoints save, so nothing is needed. Worker
    processes have generators of their own that no checkpoint holds, so with
    ``num_workers > 0`` (``seed_samples=None``, the default) or ``seed_samples=True`` the
    dataset is wrapped in ``SeededDataset``: each batch's randomness is a function of
    (seed, epoch, its indices). ``persistent_workers`` is refused then (the workers would
    keep the first epoch's seeds).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if "sampler" in loader_kwargs or "batch_sampler" in loader_kwargs:
        raise ValueError("make_dataloader builds its own sampler; do not pass `sampler`")
    if seed_samples is None:
        seed_samples = loader_kwargs.get("num_workers", 0) > 0
    if seed_samples and loader_kwargs.get("persistent_workers"):
        raise ValueError(
            "persistent_workers=True keeps the dataset of the first epoch in the workers, so "
            "per-sample seeds would not follow the epoch; pass seed_samples=False to use it"
        )
    info = info if info is not None else DistInfo(rank=get_rank(), world_size=get_world_size())
    sampler = ResumableDistributedSampler(
        dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    if seed_samples:
        dataset = SeededDataset(dataset, seed)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **loader_kwargs
    )
