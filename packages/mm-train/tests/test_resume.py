"""A run killed after a checkpoint and resumed ends bit-identical to an uninterrupted run.

The runs happen in a subprocess (``_resume_worker.py``, one fresh process per run forked
from it): a run SIGKILLs itself at step 6, after the checkpoint at step 4; another
process resumes it, and a third trains the uninterrupted reference. Both data modes are covered: a shuffled DataLoader over epochs (with
partial accumulation windows at epoch ends) and an online sampler.
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
MODES = ("loader", "online")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Kill one run per mode, then resume each and train an uninterrupted reference."""
    root = tmp_path_factory.mktemp("resume")
    dirs = {mode: (root / f"{mode}-resumed", root / f"{mode}-reference") for mode in MODES}
    kill = ",".join(f"{mode}:{dirs[mode][0]}:kill" for mode in MODES)
    stages = [kill] + [
        f"{mode}:{dirs[mode][0]}:resume,{mode}:{dirs[mode][1]}:fresh" for mode in MODES
    ]
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
    info: dict[str, dict] = {}
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
