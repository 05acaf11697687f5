"""Distributed helpers: single-process behaviour, the resumable sampler, and a real 2-process
DDP run (torchrun, gloo on CPU) compared with one process on the combined batches."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from torch.utils.data import DistributedSampler, TensorDataset

from mm_train.checkpoint import load_checkpoint
from mm_train.distributed import (
    DistInfo,
    ResumableDistributedSampler,
    all_reduce_mean,
    barrier,
    cleanup,
    init_distributed,
    make_dataloader,
    wrap_ddp,
)
from mm_train.loop import fit

HERE = Path(__file__).parent


def _load_worker() -> ModuleType:
    """Import _ddp_worker.py by path (the test reuses its model, data and losses)."""
    spec = importlib.util.spec_from_file_location("_ddp_worker", HERE / "_ddp_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(0, 0, 1, torch.device("cpu"), True)
    assert not info.distributed
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model
    x = torch.randn(3, 2, requires_grad=True)
    mean = all_reduce_mean(x)
    assert torch.equal(mean, x) and mean is not x and not mean.requires_grad
    barrier()
    cleanup()


def test_missing_torchrun_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK is not set"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="unknown device"):
        init_distributed("tpu")


@pytest.mark.parametrize("size,drop_last", [(10, False), (11, False), (11, True)])
def test_sampler_matches_torch_distributed_sampler(size: int, drop_last: bool) -> None:
    for epoch in (0, 3):
        for rank in (0, 1, 2):
            ours = ResumableDistributedSampler(
                size, num_replicas=3, rank=rank, seed=4, drop_last=drop_last
            )
            theirs = DistributedSampler(
                range(size), num_replicas=3, rank=rank, seed=4, drop_last=drop_last
            )
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs)
            assert len(ours) == len(theirs)


def test_sampler_skip_resumes_mid_epoch_and_set_epoch_restarts() -> None:
    sampler = ResumableDistributedSampler(20, num_replicas=2, rank=1, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.skip(4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(2)
    assert list(sampler) == full
    sampler.set_epoch(3)
    assert list(sampler) != full  # a new permutation per epoch
    unshuffled = ResumableDistributedSampler(5, num_replicas=2, rank=0, shuffle=False)
    assert list(unshuffled) == [0, 2, 4]
    with pytest.raises(ValueError, match="can skip between 0 and 10"):
        sampler.skip(11)
    with pytest.raises(ValueError, match="rank must be in"):
        ResumableDistributedSampler(5, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="empty"):
        ResumableDistributedSampler([])


def test_make_dataloader_batches_this_ranks_share() -> None:
    dataset = TensorDataset(torch.arange(10))
    loaders = [
        make_dataloader(dataset, batch_size=2, seed=1, info=DistInfo(rank=r, world_size=2))
        for r in (0, 1)
    ]
    seen = [int(i) for loader in loaders for (batch,) in loader for i in batch]
    assert sorted(seen) == list(range(10))
    assert len(loaders[0]) == 3
    with pytest.raises(ValueError, match="its own sampler"):
        make_dataloader(dataset, batch_size=2, sampler=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run _ddp_worker.py on 2 CPU processes with torchrun; return its output directory."""
    out = tmp_path_factory.mktemp("ddp")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(HERE / "_ddp_worker.py"),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    if done.returncode != 0 and _is_launch_race(done.stdout + done.stderr):
        # Rare (once in CI; none in 10 local repeats): lost the port between _free_port and
        # torchrun binding it, or gloo aborted a rank while the process group was torn
        # down. Neither depends on the code under test; a real defect fails again.
        warnings.warn(f"torchrun retried once after:\n{done.stderr[-3000:]}", stacklevel=1)
        shutil.rmtree(out)
        out.mkdir()
        command[command.index("--master_port") + 1] = str(_free_port())
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _is_launch_race(output: str) -> bool:
    """Whether a failed torchrun died of a port race or gloo's teardown abort."""
    lowered = output.lower()
    return "address already in use" in lowered or (
        "terminate called without an active exception" in lowered and "sigabrt" in lowered
    )


@pytest.mark.distributed
def test_ddp_equals_one_process_on_the_combined_batches(ddp_run: Path) -> None:
    model = worker.build_model()
    loader = make_dataloader(
        worker.make_dataset(), batch_size=2 * worker.BATCH, seed=worker.SAMPLER_SEED
    )
    steps = worker.EPOCHS * len(loader) // worker.GRAD_ACCUM
    optimizer, scheduler = worker.build_optimizer(model, steps)
    fit(
        model,
        worker.mse_step,
        loader,
        optimizer,
        scheduler=scheduler,
        epochs=worker.EPOCHS,
        grad_accum=worker.GRAD_ACCUM,
        clip_grad_norm=0.5,
        progress=False,
    )
    state = load_checkpoint(ddp_run / "ddp")
    assert state["step"] == steps and state["world_size"] == 2
    assert len(state["rng"]) == 2  # one RNG state per rank
    assert state["model"].keys() == model.state_dict().keys()  # saved unwrapped
    initial = worker.build_model()
    for name, value in model.state_dict().items():
        assert torch.allclose(state["model"][name], value, atol=1e-6, rtol=0), name
        assert not torch.allclose(initial.state_dict()[name], value)  # it did train
    records = [
        json.loads(line) for line in (ddp_run / "ddp" / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    # every logged metric is the mean over ranks (rank 0 reports 0, rank 1 reports 1)
    assert {r["rank_metric"] for r in train} == {0.5}
    assert [r["eval_rank"] for r in records if "eval_rank" in r] == [0.5]


@pytest.mark.distributed
def test_ddp_saves_per_rank_state_and_evaluates_with_stateful_modules_in_eval_mode(
    ddp_run: Path,
) -> None:
    state = load_checkpoint(ddp_run / "ddp")
    per_rank = state["stateful"]
    assert [int(s["counter"]["rank"]) for s in per_rank] == [0, 1]
    ranks = [torch.load(ddp_run / f"rank{r}.pt") for r in (0, 1)]
    total = worker.EPOCHS * worker.NUM_SAMPLES // 2  # each rank sees half of every epoch
    for r in (0, 1):
        assert int(per_rank[r]["counter"]["seen"]) == ranks[r]["seen"] == total
        assert ranks[r]["eval_modes"] == [False]  # eval_fn saw the loss in eval mode
        drift = [w for w in ranks[r]["warnings"] if "drift apart" in w]
        assert len(drift) == 1 and "stray.weight" in drift[0] and "1 optimiser" in drift[0]
        assert torch.allclose(ranks[r]["mean"], torch.tensor([1.5]))
        # rank 0 holds [0], rank 1 [10, 11]: concatenated in rank order, sizes may differ
        assert ranks[r]["gathered"].tolist() == [0, 10, 11]
        assert ranks[r]["window_mean"] == [0.0, 10.5][r]
        assert ranks[r]["window_mean_over_ranks"] == pytest.approx(21 / 3)  # all values pooled
        assert ranks[r]["sampler_rank"] == r
    indices = ranks[0]["indices"] + ranks[1]["indices"]
    assert len(indices) == 2 * 18 and set(indices) == set(range(worker.NUM_SAMPLES + 3))
