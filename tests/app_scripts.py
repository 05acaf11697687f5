"""Load an app's script (apps/<app>/<name>.py) or an experiment script
(experiments/<app>/<name>.py) as a module, for the app end-to-end tests.

Apps are scripts, not packages: their folder goes on sys.path (for sibling imports such as
ghm_tasks) and each module is registered in sys.modules under a unique name, because
dataclasses resolve annotations through sys.modules.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "apps"


def load_app_script(app: str, name: str, kind: str = "app") -> ModuleType:
    """apps/<app>/<name>.py (kind "app") or experiments/<app>/<name>.py (kind
    "experiment") as a fresh module named ``<app>_<kind>_<name>``."""
    if kind not in ("app", "experiment"):
        raise ValueError(f"kind must be 'app' or 'experiment', got {kind!r}")
    folder = (APPS if kind == "app" else ROOT / "experiments") / app
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"{app}_{kind}_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sigterm_once_logged(
    command: list[str], out: Path, step: int, timeout: float = 300, metrics: Path | None = None
):
    """Run a train.py ``command`` writing to ``out``; send SIGTERM once its metrics.jsonl
    (``metrics``, default out/metrics.jsonl) has logged ``step``. Returns (exit status, stderr)."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*command, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    metrics = metrics if metrics is not None else out / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and f'"step": {step}' in metrics.read_text():
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err
