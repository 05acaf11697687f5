"""Every registered loss under torchrun (2 CPU processes, gloo) equals one process.

One torchrun launch checks all losses (startup dominates); see _dist_worker.py for what
is compared. Marked ``distributed``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _loss_cases import all_cases, build


def _trainable(case) -> bool:
    return any(True for _ in build(case).parameters()) and not case.negatives


pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("_dist_worker.py")
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("dist") / "results.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(WORLD),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        str(out),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    lowered = proc.stderr.lower()
    if proc.returncode != 0 and (
        "address already in use" in lowered  # lost the port before torchrun bound it
        or "terminate called without an active exception" in lowered  # gloo teardown abort
    ):
        command[command.index("--master_port") + 1] = str(_free_port())
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    if proc.returncode != 0 or not out.exists():
        pytest.fail(
            f"torchrun failed (exit {proc.returncode})\nstdout:\n{proc.stdout[-8000:]}\n"
            f"stderr:\n{proc.stderr[-12000:]}"
        )
    return json.loads(out.read_text())


@pytest.mark.parametrize("case_id", [case.id for case in all_cases()])
def test_two_ranks_equal_one_process(results, case_id):
    assert case_id in results, f"{case_id}: the worker did not report it"
    problems = results[case_id]
    assert not problems, f"{case_id} differs between 2 ranks and 1 process:\n" + "\n".join(problems)


TRAINABLE = [case.id for case in all_cases() if _trainable(case)]


@pytest.mark.parametrize("case_id", TRAINABLE)
def test_ddp_training_keeps_loss_parameters_identical_and_exact(results, case_id):
    """Model in DDP, loss outside, AdamW, 4 steps: every parameter, model and loss, equals
    one process on the whole batches, and rank 1 equals rank 0 (no hand-written
    all-reduce: the loss averages its own parameters' gradients)."""
    problems = results[f"_train:{case_id}"]
    assert not problems, "\n".join(problems)


def test_bad_input_on_one_rank_raises_on_every_rank(results):
    problems = results["_bad_input_on_one_rank"]
    assert not problems, "\n".join(problems)
