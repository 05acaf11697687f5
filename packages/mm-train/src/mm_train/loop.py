"""The training loop: ``fit`` a model by steps or epochs, and resume it bit-exactly.

``fit(model, step_fn, data, optimizer, ...)`` repeats: take ``grad_accum`` micro-batches,
run ``step_fn(model, batch) -> loss`` (or ``(loss, metrics)``) under autocast, backpropagate
``loss / grad_accum``, clip the gradient norm, step the optimizer and the scheduler. Around
that it logs (``metrics.jsonl``), evaluates every N steps, checks the loss is finite, calls
epoch hooks (stateful losses advance their schedules in ``on_epoch_end``) and writes
checkpoints from which ``resume=True`` continues with bit-identical results.

Data comes in two kinds:

- a sized iterable, usually a ``DataLoader`` (see :func:`mm_train.distributed.make_dataloader`):
  trained for ``epochs`` or ``max_steps``. With a ``ResumableDistributedSampler`` the
  resumed epoch starts at the first batch not yet seen; other loaders are fast-forwarded.
- a callable ``sample(i) -> batch`` drawing fresh data (online-sampled synthetic data),
  called with the global micro-batch index ``i = step * grad_accum + k``; trained for
  ``max_steps``. If it has ``state_dict``/``load_state_dict`` (e.g. a
  :class:`OnlineSampler` around a ``torch.Generator``) that state is checkpointed too.

A checkpoint holds the model (unwrapped from DDP), optimizer, scheduler, GradScaler, every
``stateful`` object of every rank, the step and epoch, the data position, the partial
logging window and the RNG state of every rank. ``resume=True`` loads the newest
readable checkpoint (an unreadable newest file is skipped with a warning). SIGTERM or
SIGUSR1 (a cluster's preemption or time limit) lets the current step finish, writes a
checkpoint and exits; ``--resume`` then continues as if nothing had happened.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import RandomSampler

from mm_train.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_newest_readable,
    save_checkpoint,
    unwrap_model,
)
from mm_train.distributed import ResumableDistributedSampler, barrier, get_rank, get_world_size
from mm_train.logging import Progress, RunLogger, plot_curves
from mm_train.seeding import rng_state, seed_everything, set_rng_state, worker_seed

AMP_MODES = ("off", "bf16", "fp16")
CHECKPOINT_FORMAT = 2  # 2: stateful objects and the logging window per rank
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

StepOutput = torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]
StepFn = Callable[[nn.Module, Any], StepOutput]
EvalFn = Callable[[nn.Module, int], Mapping[str, Any] | None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step."""


class Interrupted(SystemExit):
    """SIGTERM/SIGUSR1 stopped ``fit`` after a step and a checkpoint; exit code 128 + signal."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(128 + signum)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class _StopRequest:
    """Remembers a stop signal; while ``installed()``, SIGTERM/SIGUSR1 only set it."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@dataclass
class FitResult:
    """What ``fit`` did: where it stopped, the last logged metrics and checkpoint."""

    step: int
    epoch: int
    total_steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    resumed_from: Path | None = None
    elapsed_s: float = 0.0


class OnlineSampler:
    """Online data with checkpointable randomness: ``sampler(i) = sample_fn(generator, i)``.

    The ``torch.Generator`` (seeded with ``seed``, on ``device``) is the only source of
    randomness ``sample_fn`` should draw from; its state is saved in checkpoints so a
    resumed run draws the same batches. Under DDP give each rank its own seed (e.g.
    ``worker_seed(seed, rank)``).
    """

    def __init__(
        self,
        sample_fn: Callable[[torch.Generator, int], Any],
        seed: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.sample_fn = sample_fn
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))

    def __call__(self, index: int) -> Any:
        return self.sample_fn(self.generator, index)

    def state_dict(self) -> dict[str, Any]:
        """The generator state."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the generator state."""
        self.generator.set_state(state["generator"].cpu())


class RecentLosses:
    """The last ``window`` values of a training loss, checkpointable (pass it in ``fit``'s
    ``stateful``), so that a resumed run reports exactly the risk of an uninterrupted one.

    ``mean()`` is this process's window; ``mean_over_ranks()`` averages the windows of all
    DDP ranks (every rank must call it), the risk of the global batch.
    """

    def __init__(self, window: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.values = torch.full((window,), float("nan"), dtype=torch.float64)
        self.count = 0

    def add(self, value: float) -> None:
        self.values[self.count % self.values.numel()] = float(value)
        self.count += 1

    def mean(self) -> float:
        """Mean of the stored values (NaN before the first ``add``)."""
        kept = self.values[~self.values.isnan()]
        return float(kept.mean()) if kept.numel() else float("nan")

    def mean_over_ranks(self) -> float:
        """The mean over every rank's stored values (``mean()`` in one process)."""
        if get_world_size() == 1:
            return self.mean()
        kept = self.values[~self.values.isnan()]
        parts = _gather_objects((float(kept.sum()), kept.numel()))
        return sum(total for total, _ in parts) / max(1, sum(n for _, n in parts))

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values.clone(), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        values = torch.as_tensor(state["values"], dtype=torch.float64)
        if values.shape != self.values.shape:
            raise ValueError(
                f"checkpointed loss window has {values.numel()} values, this run keeps "
                f"{self.values.numel()}"
            )
        self.values = values.clone()
        self.count = int(state["count"])


def updates_per_epoch(data: Sized, grad_accum: int = 1) -> int:
    """Optimizer steps in one epoch of ``data`` (the last step may use fewer micro-batches)."""
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
    return math.ceil(len(data) / grad_accum)


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in a (nested) dict / list / tuple batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


def _batch_size(batch: Any) -> int:
    """Number of samples in a batch: dim 0 of its first tensor (0 if it has none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, Iterable) and not isinstance(values, str | bytes):
        for value in values:
            size = _batch_size(value)
            if size:
                return size
    return 0


def _note(message: str) -> None:
    """Print a note from the main process."""
    if get_rank() == 0:
        print(f"[mm_train] {message}", file=sys.stderr, flush=True)


def _split_output(output: StepOutput, index: int) -> tuple[torch.Tensor, Mapping[str, Any]]:
    """Check ``step_fn``'s output and split it into (scalar loss, metrics)."""
    if isinstance(output, tuple):
        if len(output) != 2 or not isinstance(output[1], Mapping):
            raise ValueError("step_fn must return a loss tensor or a (loss, metrics dict) pair")
        loss, metrics = output
    else:
        loss, metrics = output, {}
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"step_fn must return a scalar loss tensor, got {shape} at step {index}")
    if not loss.requires_grad:
        raise ValueError(f"the loss returned by step_fn at step {index} does not require grad")
    return loss, metrics


def _amp_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether to use a GradScaler) for an amp mode on a device."""
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if amp == "off":
        return None, False
    if device.type != "cuda":
        _note(f"amp={amp!r} is ignored on {device.type}: mixed precision is used on CUDA only")
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    return torch.float16, True


def _gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` in a single process)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, _to_cpu(obj))
    return out


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor (in nested dicts/lists/tuples) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _mean_over_ranks(metrics: Mapping[str, float]) -> dict[str, float]:
    """Each metric averaged over the ranks that report it (the identity in one process)."""
    if get_world_size() == 1:
        return dict(metrics)
    gathered = _gather_objects(dict(metrics))
    keys = list(dict.fromkeys(k for m in gathered for k in m))
    return {k: sum(m[k] for m in gathered if k in m) / sum(k in m for m in gathered) for k in keys}


def _check_positive(name: str, value: int | float | None, allow_none: bool = True) -> None:
    """Raise ValueError unless ``value`` is a positive number (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass
class _Window:
    """Running sums over the steps since the last log line."""

    steps: int = 0
    loss: float = 0.0
    samples: int = 0
    grad_norm: torch.Tensor | float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Add one micro-batch's metrics (tensors stay on device until the log line)."""
        for key, value in metrics.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self.metrics[key] = self.metrics.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def state_dict(self) -> dict[str, Any]:
        """The sums and counts (not the timer), so a resumed run logs the same means."""
        return _to_cpu(
            {
                "steps": self.steps,
                "loss": self.loss,
                "samples": self.samples,
                "grad_norm": self.grad_norm,
                "metrics": dict(self.metrics),
                "counts": dict(self.counts),
            }
        )

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None, device: torch.device) -> _Window:
        """A window continuing ``state`` (a fresh one for None)."""
        if not state:
            return cls()

        def on_device(v: Any) -> Any:
            return v.to(device) if isinstance(v, torch.Tensor) else v

        return cls(
            steps=int(state["steps"]),
            loss=float(state["loss"]),
            samples=int(state["samples"]),
            grad_norm=on_device(state["grad_norm"]),
            metrics={k: on_device(v) for k, v in state["metrics"].items()},
            counts=dict(state["counts"]),
        )

    def means(self) -> dict[str, float]:
        """Mean loss, grad norm and metrics over the window, plus throughput."""
        out = {"loss": self.loss / max(self.steps, 1)}
        for key, total in self.metrics.items():
            out[key] = float(total) / self.counts[key]
        if isinstance(self.grad_norm, torch.Tensor):
            out["grad_norm"] = float(self.grad_norm) / max(self.steps, 1)
        elapsed = time.perf_counter() - self.started
        if self.samples and elapsed > 0:
            out["samples_per_s"] = self.samples / elapsed
        return out


@dataclass
class _Position:
    """Where training is: optimizer steps done, epoch in progress, its batches consumed."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


@dataclass
class _Trainer:
    """The state of one ``fit`` call; see ``fit`` for the meaning of the fields."""

    model: nn.Module
    step_fn: StepFn
    data: Any
    online: bool
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    scaler: torch.amp.GradScaler | None
    total_steps: int
    grad_accum: int
    clip_grad_norm: float | None
    amp_dtype: torch.dtype | None
    device: torch.device
    out_dir: Path | None
    log_every: int
    eval_every: int | None
    eval_fn: EvalFn | None
    checkpoint_every: int | None
    keep_last: int | None
    stateful: dict[str, Any]
    on_epoch_end: Callable[[int], None] | None
    on_step_end: Callable[[int], None] | None
    rank: int
    world_size: int
    logger: RunLogger = field(default_factory=lambda: RunLogger(None))
    progress_bar: Progress = field(default_factory=lambda: Progress(0, enabled=False))
    pos: _Position = field(default_factory=_Position)
    window: _Window = field(default_factory=_Window)
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    pending_rng: dict[str, Any] | None = None
    stop: _StopRequest = field(default_factory=_StopRequest)
    stop_now: bool = False
    sync_checked: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def params(self) -> list[torch.Tensor]:
        """Every parameter the optimizer updates (what gradient clipping sees)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @property
    def is_ddp(self) -> bool:
        """Whether the model is wrapped in DistributedDataParallel."""
        return isinstance(self.model, nn.parallel.DistributedDataParallel)

    # ---------------------------------------------------------------- one optimizer step

    def update(self, micro_batches: Iterator[Any], window: int) -> tuple[float, int]:
        """Accumulate ``window`` micro-batches, then clip and step; returns (mean loss, samples)."""
        step = self.pos.step + 1
        samples = 0
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        for k in range(window):
            try:
                batch = next(micro_batches)
            except StopIteration:
                raise RuntimeError(
                    f"data ran out of batches at step {step}: it yielded fewer batches "
                    "than len(data) says"
                ) from None
            batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
            last = k == window - 1
            sync = nullcontext() if last or not self.is_ddp else self.model.no_sync()
            autocast = (
                torch.autocast(self.device.type, dtype=self.amp_dtype)
                if self.amp_dtype is not None
                else nullcontext()
            )
            with sync:
                with autocast:
                    loss, metrics = _split_output(self.step_fn(self.model, batch), step)
                scaled = loss.float() / window
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            loss_sum += loss.detach().float()
            self.window.add_metrics(metrics)
            samples += _batch_size(batch) * self.world_size
        step_loss = loss_sum / window
        stop = self.stop.signum is not None
        if self.world_size > 1:
            # one collective: the mean loss (every rank sees the same value, so all of them
            # stop together on NaN) and whether any rank was asked to stop
            both = torch.stack([step_loss, torch.tensor(float(stop), device=self.device)])
            dist.all_reduce(both, op=dist.ReduceOp.SUM)
            step_loss, stop = both[0] / self.world_size, bool(both[1] > 0)
        self.stop_now = stop
        value = float(step_loss)
        if not math.isfinite(value):
            where = f"step {step}" if self.online else f"step {step} (epoch {self.pos.epoch})"
            raise NonFiniteLossError(
                f"loss is {value} at {where}; lower the learning rate, "
                "enable clip_grad_norm or check the data"
            )
        if self.clip_grad_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
            self.window.grad_norm = self.window.grad_norm + norm.detach().float()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.window.steps += 1
        self.window.loss += value
        self.window.samples += samples
        return value, samples

    def check_rank_sync(self) -> None:
        """Warn about optimiser parameters whose gradients nothing averages over ranks.

        A parameter is synchronised when it belongs to the DDP-wrapped model or carries
        ``grad_averaged_over_ranks`` (set by mm_losses on the parameters of its losses,
        which average their own gradients). Any other parameter drifts apart across ranks.
        Checked once, after the first step (a loss marks its parameters on first use).
        """
        in_ddp = {id(p) for p in self.model.parameters()} if self.is_ddp else set()
        names = {
            id(p): name
            for group in self.optimizer.param_groups
            for p, name in zip(group["params"], group.get("param_names") or [])
        }
        stray = [
            names.get(id(p), f"<parameter of shape {tuple(p.shape)}>")
            for p in self.params
            if id(p) not in in_ddp and not getattr(p, "grad_averaged_over_ranks", False)
        ]
        if stray:
            warnings.warn(
                f"{len(stray)} optimiser parameter(s) are neither in the DDP-wrapped model "
                f"nor averaged over ranks by their owner ({', '.join(stray[:5])}"
                f"{', ...' if len(stray) > 5 else ''}): their values will drift apart "
                "across ranks; put them in the DDP module or all-reduce their gradients",
                stacklevel=2,
            )

    def after_update(self, loss: float, samples: int) -> None:
        """Progress, logging, evaluation, hooks and checkpoints after step ``pos.step``."""
        step = self.pos.step
        if self.world_size > 1 and not self.sync_checked:
            self.sync_checked = True
            self.check_rank_sync()
        lr = self.optimizer.param_groups[0]["lr"]
        self.progress_bar.update(1, samples=samples, loss=loss, lr=lr)
        if step % self.log_every == 0 or step == self.total_steps:
            metrics = self.window.means()
            for name, module in self.stateful.items():
                if hasattr(module, "diagnostics"):
                    for key, value in module.diagnostics().items():
                        metrics[f"{name}/{key}"] = float(value)
            metrics = _mean_over_ranks(metrics)
            metrics["lr"] = lr
            metrics["epoch"] = self.pos.epoch
            self.logger.log(step, metrics)
            self.last_metrics = metrics
            self.window = _Window()
        if self.eval_fn is not None and (
            (self.eval_every is not None and step % self.eval_every == 0)
            or step == self.total_steps
        ):
            self.evaluate(step)
        if self.on_step_end is not None:
            self.on_step_end(step)
        if self.stop_now and step != self.total_steps:
            self.interrupt()
        every = self.checkpoint_every
        if every is not None and step % every == 0 and step != self.total_steps:
            self.save()

    def interrupt(self) -> None:
        """Write a checkpoint after this step and exit (a stop signal arrived)."""
        signum = self.stop.signum or int(signal.SIGTERM)  # another rank got it
        if self.out_dir is not None:
            self.save()
        name = signal.Signals(signum).name
        if self.out_dir is not None:
            _note(
                f"{name}: stopped after step {self.pos.step}; checkpoint "
                f"{self.last_checkpoint} written; continue with --resume"
            )
        else:
            _note(f"{name}: stopped after step {self.pos.step} (no out_dir, no checkpoint)")
        raise Interrupted(signum, self.pos.step, self.last_checkpoint)

    def evaluate(self, step: int) -> None:
        """Run ``eval_fn`` on the unwrapped model in eval mode and log what it returns.

        Stateful modules (losses with per-sample state) are in eval mode too, so an
        evaluation pass that calls the loss does not write its state.
        """
        modules = [self.model] + [m for m in self.stateful.values() if isinstance(m, nn.Module)]
        modes = [(m, m.training) for m in modules]
        for m in modules:
            m.eval()
        try:
            result = self.eval_fn(unwrap_model(self.model), step) or {}
        finally:
            for m, training in modes:
                m.train(training)
        self.last_eval = _mean_over_ranks({k: float(v) for k, v in result.items()})
        if self.last_eval:
            self.logger.log(step, self.last_eval)

    def end_epoch(self) -> None:
        """Call stateful modules' and the user's ``on_epoch_end(epoch)``, then move on."""
        for module in self.stateful.values():
            if hasattr(module, "on_epoch_end"):
                module.on_epoch_end(self.pos.epoch)
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.pos.epoch)
        self.pos.epoch += 1
        self.pos.batches_in_epoch = 0

    # ---------------------------------------------------------------- data

    def sampler(self) -> Any:
        """The loader's sampler, if it has one."""
        return getattr(self.data, "sampler", None)

    def start_epoch(self) -> tuple[Iterator[Any], int]:
        """An iterator over the rest of the current epoch, and the epoch's length in batches."""
        sampler = self.sampler()
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.pos.epoch)
        dataset = getattr(self.data, "dataset", None)
        if hasattr(dataset, "set_epoch"):  # per-sample seeding (see make_dataloader)
            dataset.set_epoch(self.pos.epoch)
        num_batches = len(self.data)
        consumed = self.pos.batches_in_epoch
        batch_size = getattr(self.data, "batch_size", None)
        if consumed and isinstance(sampler, ResumableDistributedSampler) and batch_size:
            sampler.skip(min(consumed * batch_size, sampler.num_samples))
            iterator = iter(self.data)
        else:
            iterator = iter(self.data)
            if consumed and isinstance(sampler, RandomSampler):
                _note(
                    "resuming mid-epoch with a RandomSampler: its order is not reproducible, "
                    "so the rest of this epoch differs from the interrupted run; use "
                    "make_dataloader (ResumableDistributedSampler) for exact resume"
                )
            for _ in range(consumed):  # fast-forward (deterministic orders are exact)
                next(iterator)
        return iterator, num_batches

    def restore_rng(self) -> None:
        """Restore the RNG state saved with the checkpoint (after data iterators are built)."""
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None

    # ---------------------------------------------------------------- checkpoints

    def save(self) -> None:
        """Write a checkpoint of everything needed to continue bit-exactly (rank 0 writes)."""
        rng = _gather_objects(rng_state())
        data_state = (
            self.data.state_dict() if self.online and hasattr(self.data, "state_dict") else None
        )
        data_states = _gather_objects(data_state)
        stateful = _gather_objects({name: m.state_dict() for name, m in self.stateful.items()})
        windows = _gather_objects(self.window.state_dict())
        if self.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "step": self.pos.step,
                "epoch": self.pos.epoch,
                "batches_in_epoch": self.pos.batches_in_epoch,
                "world_size": self.world_size,
                "grad_accum": self.grad_accum,
                "model": unwrap_model(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "stateful": stateful,  # one dict per rank
                "window": windows,
                "rng": rng,
                "data": data_states,
                "metrics": dict(self.last_metrics),
            }
            self.last_checkpoint = save_checkpoint(
                self.out_dir, state, self.pos.step, keep_last=self.keep_last
            )
        barrier()

    def restore(self, path: Path, state: dict[str, Any]) -> None:
        """Load a checkpoint written by ``save`` into every object and the position."""
        if state.get("format") not in (1, CHECKPOINT_FORMAT):
            raise ValueError(f"{path} is not a checkpoint written by mm_train.fit")
        ranks = len(state["rng"])
        stateful = state["stateful"]  # format 1: rank 0's only
        stateful = [stateful] if isinstance(stateful, Mapping) else stateful
        stateful = stateful[self.rank % len(stateful)]
        missing = sorted(set(self.stateful) - set(stateful))
        if missing:
            raise ValueError(f"checkpoint {path} holds no state for stateful modules {missing}")
        if (self.scheduler is None) != (state["scheduler"] is None):
            has = "has" if state["scheduler"] is not None else "has no"
            raise ValueError(
                f"checkpoint {path} {has} scheduler state but fit was given "
                f"{'no scheduler' if self.scheduler is None else 'a scheduler'}"
            )
        unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        for name, module in self.stateful.items():
            module.load_state_dict(stateful[name])
        self.pos = _Position(state["step"], state["epoch"], state["batches_in_epoch"])
        self.last_metrics = dict(state.get("metrics") or {})
        windows = state.get("window") or [None]
        self.window = _Window.from_state(windows[self.rank % len(windows)], self.device)
        if ranks != self.world_size:
            _note(
                f"checkpoint was written by {ranks} processes, resuming with "
                f"{self.world_size}: random streams are not continued exactly"
            )
        self.pending_rng = state["rng"][self.rank % ranks]
        data_state = state["data"][self.rank % ranks]
        if self.online and data_state is not None and hasattr(self.data, "load_state_dict"):
            self.data.load_state_dict(data_state)

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        """Train from ``pos`` until ``total_steps``."""
        self.model.train()
        if self.online:
            self.restore_rng()
            accum = self.grad_accum
            while self.pos.step < self.total_steps:
                first = self.pos.step * accum
                batches = (self.data(first + k) for k in range(accum))
                loss, samples = self.update(batches, accum)
                self.pos.step += 1
                self.after_update(loss, samples)
            return
        while self.pos.step < self.total_steps:
            iterator, num_batches = self.start_epoch()
            self.restore_rng()
            while self.pos.batches_in_epoch < num_batches and self.pos.step < self.total_steps:
                window = min(self.grad_accum, num_batches - self.pos.batches_in_epoch)
                loss, samples = self.update(iterator, window)
                self.pos.batches_in_epoch += window
                self.pos.step += 1
                self.after_update(loss, samples)
            if self.pos.batches_in_epoch >= num_batches:
                self.end_epoch()


def _resolve_resume(
    resume: bool | str | Path, out_dir: Path | None
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from and its state: None for a fresh start.

    ``resume=True`` takes ``out_dir``'s newest readable checkpoint (an unreadable newer
    one is skipped with a warning). A fresh start into an ``out_dir`` that already has
    checkpoints is refused: it would mix two runs.
    """
    if resume is False or resume is None:
        if out_dir is not None and list_checkpoints(out_dir):
            raise ValueError(
                f"{out_dir} already holds checkpoints of a run; pass resume=True to continue "
                "it, or remove them first (scripts: --resume or --overwrite)"
            )
        return None
    if resume is True:
        if out_dir is None:
            raise ValueError("resume=True needs out_dir (where the checkpoints are)")
        found = load_newest_readable(out_dir)
        if found is None:
            _note(f"resume requested but {out_dir}/checkpoints has no checkpoint; starting fresh")
        return found
    path = Path(resume)
    if path.is_dir():
        found = load_newest_readable(path.parent if path.name == "checkpoints" else path)
        if found is None:
            raise FileNotFoundError(f"resume={str(path)!r}: no checkpoint in that directory")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"resume={str(path)!r}: no such checkpoint file")
    return path, load_checkpoint(path, map_location="cpu")


def fit(
    model: nn.Module,
    step_fn: StepFn,
    data: Iterable[Any] | Callable[[int], Any],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any | None = None,
    max_steps: int | None = None,
    epochs: int | None = None,
    grad_accum: int = 1,
    clip_grad_norm: float | None = None,
    amp: Literal["off", "bf16", "fp16"] = "off",
    device: str | torch.device | None = None,
    out_dir: str | Path | None = None,
    log_every: int = 10,
    eval_every: int | None = None,
    eval_fn: EvalFn | None = None,
    checkpoint_every: int | None = None,
    keep_last: int | None = 3,
    resume: bool | str | Path = False,
    stateful: Mapping[str, Any] | None = None,
    logger: RunLogger | None = None,
    loggers: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    curves: bool = True,
    progress: bool = True,
    seed: int | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    on_step_end: Callable[[int], None] | None = None,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` with ``step_fn`` on ``data`` for ``max_steps`` or ``epochs``.

    - ``step_fn(model, batch)`` returns the loss, or ``(loss, metrics)``; the batch is
      already on ``device``. ``model`` may be DDP-wrapped (see ``wrap_ddp``).
    - ``data``: a sized iterable (epochs) or ``sample(i) -> batch`` (online, ``max_steps``).
    - ``grad_accum`` micro-batches per optimizer step, each loss divided by their number.
    - ``clip_grad_norm``: max global L2 norm of the gradient; ``grad_norm`` (before
      clipping) is then logged.
    - ``amp``: autocast to bf16 or fp16 (with a GradScaler) on CUDA; off on CPU.
    - ``eval_fn(model, step) -> metrics`` runs every ``eval_every`` steps and at the end
      (at the end only when ``eval_every`` is None), on every rank, model in eval mode.
    - ``out_dir``: metrics.jsonl, summary.json and ``checkpoints/`` (every
      ``checkpoint_every`` steps, the newest ``keep_last`` kept, and one at the end).
    - ``resume``: True continues from ``out_dir``'s latest checkpoint (fresh start with a
      note if there is none); a path continues from that checkpoint (it must exist).
    - ``stateful``: named objects with ``state_dict``/``load_state_dict`` saved in
      checkpoints (losses with per-sample state); their ``on_epoch_end(epoch)`` and
      ``diagnostics()`` are called when present.
    - ``seed``: seeds every generator at the start (rank r of a DDP run uses
      ``worker_seed(seed, r)``); a resumed run then continues the saved RNG states.
    - ``loggers``: sinks beside ``metrics.jsonl`` (``"tensorboard"``, ``"wandb"``), shown
      ``config``; ``curves``: write ``out_dir/curves.png`` (loss and lr) at the end.
    - SIGTERM / SIGUSR1: the current step finishes, a checkpoint is written (with
      ``out_dir``) and ``Interrupted`` (a ``SystemExit``, code 128 + signal) is raised.
    - Only rank 0 logs, shows progress and writes files; logged metrics are means over
      ranks. Raises ``NonFiniteLossError`` naming the step when the loss is NaN or infinite.
    """
    if (max_steps is None) == (epochs is None):
        raise ValueError("give exactly one of max_steps and epochs")
    _check_positive("max_steps", max_steps)
    _check_positive("epochs", epochs)
    for name, value in (("max_steps", max_steps), ("epochs", epochs)):
        if value is not None and not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if not isinstance(grad_accum, int) or grad_accum < 1:
        raise ValueError(f"grad_accum must be an int >= 1, got {grad_accum!r}")
    _check_positive("clip_grad_norm", clip_grad_norm)
    _check_positive("log_every", log_every, allow_none=False)
    _check_positive("eval_every", eval_every)
    _check_positive("checkpoint_every", checkpoint_every)
    _check_positive("keep_last", keep_last)
    if eval_every is not None and eval_fn is None:
        raise ValueError("eval_every is set but no eval_fn was given")
    if checkpoint_every is not None and out_dir is None:
        raise ValueError("checkpoint_every needs out_dir (where checkpoints are written)")
    stateful = dict(stateful or {})
    for name, obj in stateful.items():
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise ValueError(f"stateful[{name!r}] has no state_dict/load_state_dict")
    online = callable(data) and not isinstance(data, Iterable)
    if online and epochs is not None:
        raise ValueError("online data (a callable sample(i)) trains for max_steps, not epochs")
    if not online and not isinstance(data, Sized):
        raise ValueError(
            "data must be a sized iterable (e.g. a DataLoader, len(data) known) or a "
            f"callable sample(i) -> batch; got {type(data).__name__}"
        )
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    amp_dtype, use_scaler = _amp_settings(amp, device)
    rank, world_size = get_rank(), get_world_size()
    is_main = rank == 0
    out_path = Path(out_dir) if out_dir is not None else None

    if seed is not None:
        seed_everything(seed if world_size == 1 else worker_seed(seed, rank))
    if online:
        total_steps = int(max_steps)
    else:
        sampler = getattr(data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(0)
        try:
            num_batches = len(data)
        except TypeError:  # e.g. a DataLoader over an IterableDataset without __len__
            raise ValueError(
                "data has no length; give a sized DataLoader or a callable sample(i) -> batch"
            ) from None
        if num_batches == 0:
            raise ValueError("data is empty (len(data) == 0)")
        total_steps = (
            max_steps if max_steps is not None else epochs * updates_per_epoch(data, grad_accum)
        )

    trainer = _Trainer(
        model=model,
        step_fn=step_fn,
        data=data,
        online=online,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda") if use_scaler else None,
        total_steps=total_steps,
        grad_accum=grad_accum,
        clip_grad_norm=clip_grad_norm,
        amp_dtype=amp_dtype,
        device=device,
        out_dir=out_path,
        log_every=log_every,
        eval_every=eval_every,
        eval_fn=eval_fn,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        stateful=stateful,
        on_epoch_end=on_epoch_end,
        on_step_end=on_step_end,
        rank=rank,
        world_size=world_size,
    )
    found = _resolve_resume(resume, out_path)
    resumed_from = found[0] if found is not None else None
    if found is not None:
        trainer.restore(*found)
        _note(f"resumed from {resumed_from} at step {trainer.pos.step}")
    start_step = trainer.pos.step
    own_logger = logger is None
    trainer.logger = (
        logger
        if logger is not None
        else RunLogger(
            out_path,
            enabled=is_main,
            resume_step=start_step if resumed_from else None,
            loggers=loggers,
            config=config,
        )
    )
    trainer.progress_bar = Progress(
        total_steps, desc=desc, initial=start_step, enabled=is_main and progress
    )
    started = time.perf_counter()
    try:
        with trainer.stop.installed():
            trainer.run()
            if out_path is not None and trainer.pos.step != start_step:
                trainer.save()
        elapsed = time.perf_counter() - started
        trainer.logger.write_summary(
            {
                **trainer.last_metrics,
                **trainer.last_eval,
                "step": trainer.pos.step,
                "epoch": trainer.pos.epoch,
                "elapsed_s": elapsed,
            }
        )
    finally:
        trainer.progress_bar.close()
        if own_logger:
            trainer.logger.close()
    if curves and is_main and out_path is not None:
        plot_curves(out_path)
    return FitResult(
        step=trainer.pos.step,
        epoch=trainer.pos.epoch,
        total_steps=total_steps,
        metrics=dict(trainer.last_metrics),
        eval_metrics=dict(trainer.last_eval),
        checkpoint=trainer.last_checkpoint,
        resumed_from=resumed_from,
        elapsed_s=elapsed,
    )
