"""A run killed after a checkpoint and resumed ends bit-identical to an uninterrupted run.

The runs happen in a subprocess (``_resume_worker.py``, one fresh process per run forked
from it): a run SIGKILLs itself at step 6, after the checkpoint at step 4; another
process resumes it, and a third trains the uninterrupted reference. Three data modes are
covered: a shuffled DataLoader over epochs (with partial accumulation windows at epoch
ends), the same with 2 worker processes drawing random augmentation, and an online
sampler. A fourth run gets SIGTERM at step 6: it checkpoints after step 7, exits with
status 143 and resumes to the same end. A fifth resumes past a truncated newest
checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("_resume_worker.py")
MODES = ("loader", "workers", "online")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Kill one run per mode, then resume each and train an uninterrupted reference."""
    root = tmp_path_factory.mktemp("resume")
    dirs = {mode: (root / f"{mode}-resumed", root / f"{mode}-reference") for mode in MODES}
    kill = ",".join(f"{mode}:{dirs[mode][0]}:kill" for mode in MODES)
    term = root / "loader-term"
    stages = [f"{kill},loader:{term}:term"] + [
        f"{mode}:{dirs[mode][0]}:resume,{mode}:{dirs[mode][1]}:fresh" for mode in MODES
    ]
    stages.append(f"loader:{term}:resume")
    report = root / "status.json"
    done = subprocess.run(
        [sys.executable, str(WORKER), str(report), *stages],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(report.read_text())
    info: dict[str, dict] = {
        "term": {
            "term_status": status[f"loader:{term}:term"],
            "resume_status": status[f"loader:{term}:resume"],
            "resumed": torch.load(term / "result.pt"),
            "dirs": (term, dirs["loader"][1]),
            "stderr": done.stderr,
        }
    }
    for mode in MODES:
        resumed, reference = dirs[mode]
        assert status[f"{mode}:{resumed}:resume"] == 0, done.stderr
        assert status[f"{mode}:{reference}:fresh"] == 0, done.stderr
        info[mode] = {
            "killed_status": status[f"{mode}:{resumed}:kill"],
            "stderr": done.stderr,
            "resumed": torch.load(resumed / "result.pt"),
            "reference": torch.load(reference / "result.pt"),
            "dirs": dirs[mode],
        }
    return info


@pytest.mark.parametrize("mode", MODES)
def test_killed_run_stopped_after_a_checkpoint(runs: dict, mode: str) -> None:
    run = runs[mode]
    assert run["killed_status"] == -signal.SIGKILL, run["stderr"]
    # it had logged up to the kill, and resumed from the checkpoint before it
    assert run["resumed"]["resumed_from"].endswith("step_00000004.pt")
    assert f"resumed from {run['resumed']['resumed_from']} at step 4" in run["stderr"]


@pytest.mark.parametrize("mode", MODES)
def test_resumed_parameters_are_bit_identical(runs: dict, mode: str) -> None:
    resumed, reference = runs[mode]["resumed"], runs[mode]["reference"]
    assert resumed["step"] == reference["step"] > 4
    for part in ("model", "tracker"):
        assert resumed[part].keys() == reference[part].keys()
        for name, value in reference[part].items():
            assert torch.equal(resumed[part][name], value), f"{part}.{name} differs"


@pytest.mark.parametrize("mode", MODES)
def test_resumed_metrics_log_matches_reference(runs: dict, mode: str) -> None:
    def losses(out_dir: Path) -> list[tuple[int, float, float]]:
        lines = (out_dir / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        return [(r["step"], r["loss"], r["lr"]) for r in records]

    resumed_dir, reference_dir = runs[mode]["dirs"]
    got, want = losses(resumed_dir), losses(reference_dir)
    assert [s for s, *_ in got] == list(range(1, len(want) + 1))  # no duplicated steps
    assert got == want


@pytest.mark.parametrize("mode", MODES)
def test_resumed_run_keeps_last_checkpoints_only(runs: dict, mode: str) -> None:
    resumed_dir, _ = runs[mode]["dirs"]
    names = sorted(p.name for p in (resumed_dir / "checkpoints").iterdir())
    last = runs[mode]["reference"]["step"]
    assert names == ["latest", "step_00000008.pt", f"step_{last:08d}.pt"]
    assert (resumed_dir / "checkpoints" / "latest").read_text().strip() == f"step_{last:08d}.pt"


def test_sigterm_checkpoints_after_the_step_exits_143_and_resumes_bit_exactly(runs: dict) -> None:
    run = runs["term"]
    assert run["term_status"] == 128 + signal.SIGTERM, run["stderr"]
    assert run["resume_status"] == 0, run["stderr"]
    assert "SIGTERM: stopped after step 7" in run["stderr"]
    assert run["resumed"]["resumed_from"].endswith("step_00000007.pt")
    reference = runs["loader"]["reference"]
    for part in ("model", "tracker"):
        for name, value in reference[part].items():
            assert torch.equal(run["resumed"][part][name], value), f"{part}.{name} differs"
    term_dir, reference_dir = run["dirs"]
    got = (term_dir / "metrics.jsonl").read_text().splitlines()
    want = (reference_dir / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"} for line in got]
    keep = [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"} for line in want]
    assert strip == keep


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path, runs: dict) -> None:
    from mm_train.checkpoint import load_newest_readable

    resumed_dir, _ = runs["loader"]["dirs"]
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    for path in (resumed_dir / "checkpoints").iterdir():
        (copy / "checkpoints" / path.name).write_bytes(path.read_bytes())
    newest = copy / "checkpoints" / (copy / "checkpoints" / "latest").read_text().strip()
    newest.write_bytes(newest.read_bytes()[:1000])  # a write cut short by a full disk
    found = load_newest_readable(copy)
    assert found is not None and found[0].name == "step_00000008.pt"
    assert found[1]["step"] == 8
    for path in (copy / "checkpoints").glob("step_*.pt"):
        path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="no readable checkpoint"):
        load_newest_readable(copy)
