"""Shared by the GHM experiment scripts: train (or resume) one apps/ghm/train.py run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "apps" / "ghm" / "train.py"


def train_once(out: Path, flags: list[str], log: Path | None = None) -> dict:
    """The summary of the train.py run in `out`: read when it finished before, else
    trained with `flags` (resuming a run that was stopped). With `log`, the run's output
    goes there instead of the terminal."""
    summary = out / "summary.json"
    if not summary.is_file():
        cmd = [sys.executable, str(TRAIN), *flags, "--out", str(out)]
        if (out / "config.json").is_file():
            cmd.append("--resume")
        print("+", " ".join(cmd), flush=True)
        if log is None:
            subprocess.run(cmd, check=True)
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as stream:
                done = subprocess.run(cmd, stdout=stream, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}); see {log}")
    return json.loads(summary.read_text())
