"""Run-directory rules (start_run): refuse, overwrite, resume with a config check, run.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mm_train import ConfigError, RunOptions, arg, parse_config, start_run


@dataclass
class Config(RunOptions):
    p: float = arg(0.2, "flip probability", ge=0, le=1)
    steps: int = arg(10, "optimizer steps", ge=1, may_change=True)
    log_every: int = arg(5, "steps between log lines", ge=1, may_change=True)


def _cfg(out: Path, *flags: str) -> Config:
    return parse_config(Config, ["--out", str(out), *flags], exit_on_error=False)


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _make_run(out: Path) -> None:
    start_run(_cfg(out), exit_on_error=False)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "step_00000001.pt").write_bytes(b"x")
    (out / "mixing.pt").write_bytes(b"m")
    (out / "notes.txt").write_text("mine")


def test_fresh_run_writes_config_and_provenance(tmp_path):
    out = tmp_path / "run"
    assert start_run(_cfg(out), global_batch=64, exit_on_error=False) == out
    assert json.loads((out / "config.json").read_text())["p"] == 0.2
    record = json.loads((out / "run.json").read_text())
    assert record["global_batch"] == 64 and record["world_size"] == 1
    assert record["resumes"] == []
    assert set(record["versions"]) >= {"mm-train", "mm-losses", "torch", "cuda", "python"}
    assert record["versions"]["mm-train"] is not None
    assert "git_commit" in record and "git_dirty" in record


def test_out_holding_a_run_is_refused_and_left_unchanged(tmp_path, capsys):
    out = tmp_path / "run"
    _make_run(out)
    before = _snapshot(out)
    with pytest.raises(ConfigError) as info:
        start_run(_cfg(out), exit_on_error=False)
    message = str(info.value)
    assert str(out) in message and "--resume" in message and "--overwrite" in message
    with pytest.raises(SystemExit) as exit_info:
        start_run(_cfg(out))
    assert exit_info.value.code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_overwrite_removes_the_runs_files_only(tmp_path):
    out = tmp_path / "run"
    _make_run(out)
    start_run(_cfg(out, "--overwrite", "--p", "0.3"), files=("mixing.pt",), exit_on_error=False)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt", "run.json"]
    assert json.loads((out / "config.json").read_text())["p"] == 0.3


def test_resume_with_a_changed_experiment_field_lists_each_difference(tmp_path):
    out = tmp_path / "run"
    _make_run(out)
    before = _snapshot(out)
    with pytest.raises(ConfigError) as info:
        start_run(_cfg(out, "--resume", "--p", "0.35", "--seed", "3"), exit_on_error=False)
    message = str(info.value)
    assert "--p: saved 0.2, now 0.35" in message
    assert "--seed: saved 0, now 3" in message
    assert "--steps" in message  # listed among the fields that may change
    assert _snapshot(out) == before


def test_resume_accepts_fields_that_may_change_and_records_the_resume(tmp_path):
    out = tmp_path / "run"
    _make_run(out)
    start_run(_cfg(out, "--resume", "--steps", "20", "--device", "cpu"), exit_on_error=False)
    saved = json.loads((out / "config.json").read_text())
    assert saved["steps"] == 20 and saved["resume"] is True
    record = json.loads((out / "run.json").read_text())
    assert len(record["resumes"]) == 1
    assert record["resumes"][0]["changed"] == {"--steps": [10, 20], "--device": ["auto", "cpu"]}
    assert (out / "metrics.jsonl").is_file() and (out / "mixing.pt").is_file()


def test_resume_and_overwrite_together_and_unknown_logger_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="exclude each other"):
        start_run(_cfg(tmp_path / "a", "--resume", "--overwrite"), exit_on_error=False)
    with pytest.raises(ConfigError, match="--loggers"):
        parse_config(Config, ["--loggers", "neptune"], exit_on_error=False)


def test_resume_into_an_empty_directory_starts_fresh(tmp_path):
    out = tmp_path / "run"
    start_run(_cfg(out, "--resume"), exit_on_error=False)
    assert json.loads((out / "run.json").read_text())["resumes"] == []
