"""Tests for mm_train.logging: metrics.jsonl, summary.json, atomic writes, Progress."""

import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mm_train.logging as run_logging
from mm_train.logging import Progress, RunLogger, atomic_write_json, atomic_write_text


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_text_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_atomic_write_cleans_temp_file_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "x.json"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(run_logging.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "data")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_json_converts_numpy_and_torch_scalars(tmp_path):
    target = tmp_path / "o.json"
    atomic_write_json(target, {"a": np.float32(0.5), "b": torch.tensor(2), "c": Path("p")})
    assert json.loads(target.read_text()) == {"a": 0.5, "b": 2, "c": "p"}


# ----------------------------------------------------------------------------- RunLogger


def test_log_writes_one_json_line_per_call_with_converted_scalars(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log(1, {"loss": torch.tensor(0.25), "lr": np.float64(1e-3), "n": 3})
    logger.log(2, {"loss": 0.125, "acc": np.float32(0.5)})
    # flushed per line: readable before close (a killed run keeps its metrics)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [
        {"step": 1, "loss": 0.25, "lr": 1e-3, "n": 3},
        {"step": 2, "loss": 0.125, "acc": 0.5},
    ]
    assert isinstance(rows[0]["loss"], float)
    logger.close()


def test_log_rejects_non_scalars_and_step_key(tmp_path):
    with RunLogger(tmp_path) as logger:
        with pytest.raises(TypeError, match=r"'emb'.*shape"):
            logger.log(1, {"emb": torch.zeros(3)})
        with pytest.raises(ValueError, match="step"):
            logger.log(1, {"step": 2})
        logger.log(1, {"nan": float("nan")})
    (row,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert math.isnan(row["nan"])


def test_fresh_logger_starts_new_file(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log(1, {"x": 1.0})
    with RunLogger(tmp_path) as logger:
        logger.log(1, {"x": 2.0})
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "x": 2.0}]


def test_resume_drops_lines_after_resumed_step_and_appends(tmp_path):
    with RunLogger(tmp_path) as logger:
        for step in range(1, 6):
            logger.log(step, {"loss": float(step)})
    # simulate a kill mid-write: a half line at the end
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')
    with RunLogger(tmp_path, resume_step=3) as logger:
        logger.log(4, {"loss": 40.0})
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] == 40.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_resume_without_existing_file_creates_it(tmp_path):
    with RunLogger(tmp_path / "new", resume_step=10) as logger:
        logger.log(11, {"a": 1})
    assert read_jsonl(tmp_path / "new" / "metrics.jsonl") == [{"step": 11, "a": 1}]


def test_write_summary_is_flat_and_atomic(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.write_summary({"loss": torch.tensor(0.5), "eval": {"r@1": np.float32(0.25)}})
        logger.write_summary({"loss": 0.1, "eval": {"r@1": 0.75}, "ranks": [1, 2]})
    assert json.loads((tmp_path / "summary.json").read_text()) == {
        "loss": 0.1,
        "eval/r@1": 0.75,
        "ranks": [1, 2],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "summary.json"]


def test_disabled_logger_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path / "rank1", enabled=False)
    logger.log(1, {"loss": 1.0})
    logger.write_summary({"loss": 1.0})
    logger.close()
    assert not (tmp_path / "rank1").exists()
    none_logger = RunLogger(None)
    none_logger.log(1, {"loss": 1.0})
    none_logger.write_summary({})


def test_log_after_close_raises(tmp_path):
    logger = RunLogger(tmp_path)
    logger.close()
    logger.close()
    with pytest.raises(ValueError, match="close"):
        logger.log(1, {"a": 1})


# ----------------------------------------------------------------------------- Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(run_logging, "_clock", fake)
    return fake


def test_progress_non_tty_prints_about_every_tenth(capsys, clock):
    progress = Progress(total=100, desc="train")
    for _ in range(100):
        clock.now += 0.01
        progress.update(1, samples=32, loss=0.5)
    progress.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 10
    assert "\r" not in err
    assert lines[0].startswith("train: 10/100 step (10%)")
    assert lines[-1].startswith("train: 100/100 step (100%)")
    assert "loss=0.5" in lines[0]
    # 32 samples per 0.01 s -> 3200 samples/s
    assert "3200 samples/s" in lines[0]
    assert "eta" in lines[0] and "elapsed" in lines[0]


def test_progress_non_tty_prints_after_30_seconds_without_ten_percent(capsys, clock):
    progress = Progress(total=1000, desc="slow")
    for _ in range(5):
        clock.now += 31.0
        progress.update(1, loss=1.0)
    clock.now += 1.0
    progress.update(1)  # neither 10% nor 30 s since the last line: silent
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 5
    progress.close()  # progress since the last line: one final line
    assert capsys.readouterr().err.startswith("slow: 6/1000 step (1%)")


def test_progress_resume_initial_and_eta(capsys, clock):
    progress = Progress(total=100, initial=50, unit="it")
    clock.now += 10.0
    progress.update(10)  # 10 it in 10 s, 40 left -> eta 0:40
    line = capsys.readouterr().err.strip()
    assert line.startswith("60/100 it (60%)")
    assert "1 it/s" in line
    assert "eta 0:40" in line


def test_progress_disabled_is_silent(capsys):
    progress = Progress(total=10, enabled=False)
    for _ in range(10):
        progress.update(1, loss=1.0)
    progress.write("hello")
    progress.close()
    assert capsys.readouterr() == ("", "")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_tty_draws_tqdm_bar_with_postfix():
    stream = FakeTTY()
    progress = Progress(total=4, desc="fit", file=stream)
    for _ in range(4):
        progress.update(1, samples=8, loss=0.123)
    progress.close()
    out = stream.getvalue()
    assert "\r" in out  # a redrawn bar, not log lines
    assert "fit" in out and "4/4" in out
    assert "loss=0.123" in out
    assert "samples/s" in out


# ----------------------------------------------------------------------------- loggers


def _tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files of ``log_dir``, read back from disk."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tensorboard_logger_writes_the_same_scalars_as_jsonl(tmp_path):
    with RunLogger(tmp_path, loggers=("tensorboard",)) as logger:
        for step in (1, 2, 3):
            logger.log(step, {"loss": 1.0 / step, "lr": torch.tensor(0.5)})
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3]
    assert [v for _, v in scalars["loss"]] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [v for _, v in scalars["lr"]] == pytest.approx([0.5] * 3)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == pytest.approx([1.0, 0.5, 1 / 3])


def test_tensorboard_resume_purges_the_steps_after_the_checkpoint(tmp_path):
    with RunLogger(tmp_path, loggers=("tensorboard",)) as logger:
        for step in (1, 2, 3, 4):
            logger.log(step, {"loss": float(step)})
    with RunLogger(tmp_path, resume_step=2, loggers=("tensorboard",)) as logger:
        logger.log(3, {"loss": 30.0})
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["loss"] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_wandb_logger_runs_offline_and_records_the_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with RunLogger(tmp_path, loggers=("wandb",), config={"lr": 0.1}) as logger:
        logger.log(1, {"loss": 0.123456789})
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1  # offline: no network, a local run file
    # wandb's service process writes the run file after finish() returns; on a loaded
    # machine (CI) the records can land a moment later, so wait for them (up to 60 s).
    deadline = time.monotonic() + 60.0
    data = runs[0].read_bytes()
    while not (b"loss" in data and b"0.123456789" in data) and time.monotonic() < deadline:
        time.sleep(0.2)
        data = runs[0].read_bytes()
    assert b"loss" in data and b"0.123456789" in data
    run_id = (tmp_path / "wandb" / "run_id").read_text().strip()
    assert run_id in runs[0].name


def test_unknown_logger_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown logger"):
        RunLogger(tmp_path, loggers=("neptune",))


def test_plot_curves_writes_a_png_of_loss_and_lr(tmp_path):
    assert run_logging.plot_curves(tmp_path) is None  # nothing logged yet
    with RunLogger(tmp_path) as logger:
        for step in range(1, 6):
            logger.log(step, {"loss": 1.0 / step, "lr": 0.1 * step, "task_loss": 2.0 / step})
    path = run_logging.plot_curves(tmp_path)
    assert path == tmp_path / "curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
