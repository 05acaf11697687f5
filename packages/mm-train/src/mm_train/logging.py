"""Run outputs that a person or a script reads: metrics, summary and progress.

- ``RunLogger`` appends one JSON object per log call to ``OUT/metrics.jsonl`` (flushed
  line by line, so a killed run keeps what it logged), sends the same metrics to the
  loggers asked for (TensorBoard, Weights & Biases offline: the ``MetricLogger``
  protocol) and writes ``OUT/summary.json`` atomically. On resume it first drops what
  was logged after the resumed step, so no sink holds two versions of a step.
- ``plot_curves`` draws the loss and learning-rate curves of ``metrics.jsonl`` to a PNG.
- ``Progress`` is a tqdm bar with loss, samples/s and ETA on a terminal; when stderr is
  not a terminal (a log file, a cluster job) it prints a plain status line at most every
  ~10% of the run or every 30 s instead of redrawing a bar.
- ``atomic_write_text`` / ``atomic_write_json`` write a temp file in the target's
  directory, fsync it and ``os.replace`` it over the target: readers see the old file or
  the new one, never half of one.

Every class takes ``enabled``; pass ``enabled=(rank == 0)`` under DDP so only one
process writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

from tqdm import tqdm

__all__ = [
    "LOGGER_NAMES",
    "JsonlLogger",
    "MetricLogger",
    "Progress",
    "RunLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "atomic_write_json",
    "atomic_write_text",
    "plot_curves",
]

# Indirection so tests can drive the plain-progress timer without sleeping.
_clock = time.monotonic


# --------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (POSIX only; a no-op where unsupported)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, ``os.replace`` it over
    ``path`` and fsync the directory: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # os.open with 0o666 lets the umask decide the final permissions, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically; numpy/torch scalars become numbers."""
    text = json.dumps(obj, indent=indent, default=_json_default)
    atomic_write_text(path, text + "\n")


def _json_default(value: Any) -> Any:
    """``json.dumps`` fallback for paths and numpy/torch scalars."""
    if isinstance(value, Path):
        return str(value)
    try:
        return _to_scalar(value, "value")
    except TypeError:
        raise TypeError(f"object of type {type(value).__name__} is not JSON serializable") from None


# --------------------------------------------------------------------------- metrics


def _to_scalar(value: Any, key: str) -> Any:
    """Return ``value`` as a plain Python number (or str/bool/None), or raise TypeError."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    # numpy and torch are looked up, not imported: if a module was never imported, no
    # value can be one of its types, and config.py stays importable without torch.
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.ndim != 0:
            raise TypeError(
                f"metric {key!r} is a tensor of shape {tuple(value.shape)}; log a scalar "
                "(a 0-dim tensor, e.g. loss.detach() or x.mean())"
            )
        return value.detach().cpu().item()
    if np is not None and isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise TypeError(f"metric {key!r} is an array of shape {value.shape}; log a scalar")
        return value.item()
    if np is not None and isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"metric {key!r} has type {type(value).__name__}; expected a number")


def _flatten(mapping: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Flatten nested mappings into one level with ``sep``-joined keys."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + sep, sep))
        elif isinstance(value, (list, tuple)):
            flat[name] = [_to_scalar(v, name) for v in value]
        else:
            flat[name] = _to_scalar(value, name)
    return flat


def _keep_until(path: Path, last_step: int) -> None:
    """Rewrite ``path`` keeping only well-formed lines whose step is <= ``last_step``."""
    if not path.exists():
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line from a killed run
            if not isinstance(record, dict):
                continue
            step = record.get("step")
            if isinstance(step, (int, float)) and step > last_step:
                continue
            kept.append(json.dumps(record) + "\n")
    atomic_write_text(path, "".join(kept))


LOGGER_NAMES = ("tensorboard", "wandb")


class MetricLogger(Protocol):
    """A sink for step metrics: ``RunLogger`` fans every ``log`` call out to these."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """``OUT/metrics.jsonl``: one JSON object per ``log``, flushed line by line.

    ``resume_step=None`` starts a fresh file; ``resume_step=N`` keeps the existing
    file's lines with ``step <= N`` (dropping a half-written last line) and appends.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        if resume_step is None:
            mode = "w"
        else:
            _keep_until(path, int(resume_step))
            mode = "a"
        self._file: TextIO | None = open(path, mode, encoding="utf-8")  # noqa: SIM115

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._file is None:
            raise ValueError("RunLogger.log called after close()")
        self._file.write(json.dumps({"step": int(step), **metrics}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardLogger:
    """TensorBoard event files under ``OUT/tensorboard`` (``torch.utils.tensorboard``).

    On resume at step N the events after N are purged, so curves have no doubled steps.
    """

    def __init__(self, log_dir: Path, resume_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is an optional dependency
            raise ImportError(
                "--loggers tensorboard needs the tensorboard package: "
                "pip install 'mm-train[tensorboard]'"
            ) from exc
        purge = None if resume_step is None else int(resume_step) + 1
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbLogger:
    """Weights & Biases in offline mode (no network): ``OUT/wandb/offline-run-*``.

    ``wandb sync OUT/wandb/offline-run-*`` uploads a run later. The run id is kept in
    ``OUT/wandb/run_id`` so a resumed run continues the same W&B run. ``WANDB_MODE``
    (e.g. ``online``) and ``WANDB_PROJECT`` in the environment take precedence.
    """

    def __init__(
        self, out_dir: Path, resume_step: int | None = None, config: Mapping | None = None
    ) -> None:
        try:
            import wandb
        except ImportError as exc:  # wandb is an optional dependency
            raise ImportError(
                "--loggers wandb needs the wandb package: pip install 'mm-train[wandb]'"
            ) from exc
        folder = out_dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "run_id"
        if resume_step is not None and id_file.is_file():
            run_id = id_file.read_text(encoding="utf-8").strip()
        else:
            run_id = uuid.uuid4().hex[:12]
            atomic_write_text(id_file, run_id + "\n")
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "mm-toolkit"),
            name=out_dir.name,
            id=run_id,
            dir=str(out_dir),
            mode=os.environ.get("WANDB_MODE", "offline"),
            resume="allow",
            config=dict(config or {}),
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self._run.log(dict(metrics), step=int(step))

    def close(self) -> None:
        self._run.finish()


class RunLogger:
    """Step metrics to ``metrics.jsonl`` (always) and the chosen loggers; ``summary.json``.

    ``loggers`` names extra sinks (``"tensorboard"``, ``"wandb"``); ``config`` is shown by
    W&B. ``resume_step=None`` starts fresh; ``resume_step=N`` continues after step N
    (later lines and events are dropped first). With ``enabled=False`` (non-zero DDP
    ranks) or ``out_dir=None`` every method is a no-op.
    """

    def __init__(
        self,
        out_dir: str | Path | None,
        enabled: bool = True,
        resume_step: int | None = None,
        *,
        loggers: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.enabled = bool(enabled) and out_dir is not None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.sinks: list[MetricLogger] = []
        unknown = [name for name in loggers if name not in LOGGER_NAMES]
        if unknown:
            raise ValueError(f"unknown logger(s) {unknown}; choose from {LOGGER_NAMES}")
        if not self.enabled:
            return
        assert self.out_dir is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.sinks.append(JsonlLogger(self.metrics_path, resume_step))
        for name in dict.fromkeys(loggers):
            if name == "tensorboard":
                self.sinks.append(TensorBoardLogger(self.out_dir / "tensorboard", resume_step))
            else:
                self.sinks.append(WandbLogger(self.out_dir, resume_step, config))

    @property
    def metrics_path(self) -> Path:
        """Path of ``metrics.jsonl``."""
        if self.out_dir is None:
            raise ValueError("RunLogger has no out_dir")
        return self.out_dir / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        """Path of ``summary.json``."""
        if self.out_dir is None:
            raise ValueError("RunLogger has no out_dir")
        return self.out_dir / "summary.json"

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Send ``{"step": step, **metrics}`` to every sink (metrics.jsonl is flushed)."""
        if not self.enabled:
            return
        if not self.sinks:
            raise ValueError("RunLogger.log called after close()")
        if "step" in metrics:
            raise ValueError("metrics must not contain the key 'step'; pass it as `step`")
        record = {str(key): _to_scalar(value, str(key)) for key, value in metrics.items()}
        for sink in self.sinks:
            sink.log(step, record)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically; nested mappings are flattened to ``a/b`` keys."""
        if not self.enabled:
            return
        atomic_write_json(self.summary_path, _flatten(summary))

    def close(self) -> None:
        """Close every sink; safe to call twice."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plot_curves(out_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Plot ``loss`` (and the other step metrics) and ``lr`` of ``metrics.jsonl`` to a PNG.

    Writes ``OUT/curves.png`` (or ``path``); returns it, or None when nothing was logged.
    """
    out_dir = Path(out_dir)
    rows = []
    metrics = out_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
    rows = [r for r in rows if isinstance(r, dict) and "loss" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    has_lr = any("lr" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if has_lr else 1, figsize=(10 if has_lr else 5, 3.5))
    axes = list(axes) if has_lr else [axes]
    extra = [k for k in ("task_loss", "eval_loss", "val_loss") if any(k in r for r in rows)]
    for key in ["loss", *extra]:
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        axes[0].plot(*zip(*points), label=key)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    if has_lr:
        axes[1].plot(steps, [r.get("lr", float("nan")) for r in rows], color="tab:orange")
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("learning rate")
        axes[1].grid(alpha=0.3)
    fig.suptitle(out_dir.name)
    fig.tight_layout()
    target = Path(path) if path is not None else out_dir / "curves.png"
    atomic_write(target, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return target


# --------------------------------------------------------------------------- progress


def _format_seconds(seconds: float) -> str:
    """Format a duration as ``M:SS`` or ``H:MM:SS`` (``?`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _format_value(value: Any) -> str:
    """Short form of a postfix value (4 significant digits for floats)."""
    value = _to_scalar(value, "postfix")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _isatty(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress over ``total`` units: a tqdm bar on a terminal, sparse plain lines otherwise.

    ``update(n, samples=B, loss=...)`` advances by ``n`` units; ``samples`` counts the
    samples processed in that update (shown as samples/s) and keyword values are shown
    next to the bar. Off a terminal a one-line status is printed each time another
    ``plain_every`` fraction of ``total`` is done or ``plain_interval_s`` seconds have
    passed, and once more on ``close()``. ``enabled=False`` prints nothing.
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        initial: int = 0,
        enabled: bool = True,
        unit: str = "step",
        *,
        file: TextIO | None = None,
        plain_every: float = 0.1,
        plain_interval_s: float = 30.0,
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.initial = int(initial)
        self.n = int(initial)
        self.enabled = bool(enabled)
        self.postfix: dict[str, Any] = {}
        self._stream = file if file is not None else sys.stderr
        self._plain_every = plain_every
        self._plain_interval_s = plain_interval_s
        self._samples = 0
        self._start = _clock()
        self._last_print_time = self._start
        self._last_print_n = self.n
        self._closed = False
        self._bar: tqdm | None = None
        if self.enabled and _isatty(self._stream):
            self._bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc=desc or None,
                unit=unit,
                file=self._stream,
                dynamic_ncols=True,
                smoothing=0.1,
                mininterval=0.2,
            )

    def _bucket(self, n: int) -> int:
        """Index of the ``plain_every``-sized slice of ``total`` that ``n`` falls in."""
        if self.total <= 0 or self._plain_every <= 0:
            return n
        return math.floor(n / (self._plain_every * self.total) + 1e-9)

    def samples_per_second(self) -> float | None:
        """Samples per second since this Progress started (None if none were counted)."""
        elapsed = _clock() - self._start
        if self._samples == 0 or elapsed <= 0:
            return None
        return self._samples / elapsed

    def _postfix_text(self) -> str:
        """The ``loss=0.123, 512 samples/s`` text shown after the counts."""
        parts = [f"{key}={_format_value(value)}" for key, value in self.postfix.items()]
        rate = self.samples_per_second()
        if rate is not None:
            parts.append(f"{rate:.4g} samples/s")
        return ", ".join(parts)

    def _plain_line(self) -> str:
        """One status line for logs: counts, percent, postfix, rates, elapsed and ETA."""
        elapsed = _clock() - self._start
        done = self.n - self.initial
        unit_rate = done / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total > 0:
            pct = 100.0 * self.n / self.total
            counts = f"{self.n}/{self.total} {self.unit} ({pct:.0f}%)"
            remaining = (self.total - self.n) / unit_rate if unit_rate > 0 else math.inf
        else:
            counts = f"{self.n} {self.unit}"
            remaining = math.inf
        parts = [head + counts]
        postfix = self._postfix_text()
        if postfix:
            parts.append(postfix)
        parts.append(f"{unit_rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {_format_seconds(elapsed)}")
        parts.append(f"eta {_format_seconds(0.0 if self.n >= self.total else remaining)}")
        return " | ".join(parts)

    def _print_plain(self) -> None:
        """Print the status line and remember when and where it was printed."""
        print(self._plain_line(), file=self._stream, flush=True)
        self._last_print_time = _clock()
        self._last_print_n = self.n

    def update(self, n: int = 1, samples: int | None = None, **postfix: float) -> None:
        """Advance by ``n`` units; ``samples`` feeds the samples/s rate, ``postfix`` the display."""
        if not self.enabled or self._closed:
            return
        self.n += int(n)
        if samples is not None:
            self._samples += int(samples)
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix_text(), refresh=False)
            self._bar.update(int(n))
            return
        if self.n == self._last_print_n:
            return
        crossed = self._bucket(self.n) > self._bucket(self._last_print_n)
        stale = _clock() - self._last_print_time >= self._plain_interval_s
        if crossed or stale:
            self._print_plain()

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self._stream)
        else:
            print(message, file=self._stream, flush=True)

    def close(self) -> None:
        """Finish the bar (or print a last status line if progress was made since the last)."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.n != self._last_print_n:
            self._print_plain()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
