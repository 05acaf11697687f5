"""Tests for mm_train.seeding: seeds, determinism flags, RNG state round trips, devices."""

import itertools
import os
import random

import numpy as np
import pytest
import torch

from mm_train.seeding import (
    enable_determinism,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    worker_seed,
)


def draw() -> tuple:
    """A few numbers from every generator seed_everything and rng_state cover."""
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),
        np.random.randn(3).tolist(),  # exercises numpy's cached gaussian
        torch.rand(3).tolist(),
        torch.randint(0, 1000, (3,)).tolist(),
    )


def test_seed_everything_makes_draws_repeatable_and_seed_dependent():
    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(bad)


def test_rng_state_round_trip_continues_every_generator():
    seed_everything(7)
    draw()
    np.random.randn()  # leave numpy with a cached gaussian (has_gauss=1)
    state = rng_state()
    expected = draw()
    draw()  # move on
    set_rng_state(state)
    assert draw() == expected


@pytest.mark.parametrize("weights_only", [False, True])
def test_rng_state_survives_torch_save_load(tmp_path, weights_only):
    seed_everything(3)
    np.random.randn()
    state = rng_state()
    expected = draw()
    torch.save({"rng": state}, tmp_path / "ckpt.pt")
    seed_everything(99)
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=weights_only)["rng"]
    set_rng_state(loaded)
    assert draw() == expected


def test_set_rng_state_accepts_numpy_legacy_tuple_and_partial_state():
    seed_everything(5)
    np_tuple = np.random.get_state()
    expected_np = np.random.rand(2).tolist()
    torch_before = torch.get_rng_state()
    set_rng_state({"numpy": np_tuple})
    assert np.random.rand(2).tolist() == expected_np
    assert torch.equal(torch.get_rng_state(), torch_before)  # untouched


def test_set_rng_state_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        set_rng_state({"jax": 1})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_set_rng_state_with_cuda_states_on_cpu_warns():
    state = rng_state()
    state["cuda"] = [torch.get_rng_state()]
    with pytest.warns(UserWarning, match="CUDA is not available"):
        set_rng_state(state)


@pytest.fixture
def restore_determinism(monkeypatch):
    """Undo enable_determinism's global switches after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic = before[2]
    torch.backends.cudnn.benchmark = before[3]


def test_enable_determinism_sets_flags_and_env(restore_determinism):
    enable_determinism(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic is True
    assert torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    enable_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic is False


def test_enable_determinism_keeps_user_cublas_setting(restore_determinism, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    enable_determinism()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


# ----------------------------------------------------------------------------- devices


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_resolve_device_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.parametrize(
    "name", ["gpu", "CUDA", "cuda:0", ""], ids=["gpu-word", "upper", "indexed", "empty"]
)
def test_resolve_device_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda'"):
        resolve_device(name)


def test_resolve_device_with_cuda_and_local_rank(two_gpus, monkeypatch):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK=2"):
        resolve_device("cuda")


# ----------------------------------------------------------------------------- worker seeds


def test_worker_seed_is_deterministic_distinct_and_in_range():
    pairs = list(itertools.product(range(64), range(16)))
    seeds = [worker_seed(42, rank, worker) for rank, worker in pairs]
    assert seeds == [worker_seed(42, rank, worker) for rank, worker in pairs]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**32 for s in seeds)
    assert worker_seed(43, 0, 0) != worker_seed(42, 0, 0)
    assert worker_seed(42, 1) == worker_seed(42, 1, 0)
    seed_everything(worker_seed(2**32 - 1, 65535, 65535))  # usable as a seed


def test_worker_seed_rejects_out_of_range():
    with pytest.raises(ValueError, match="rank"):
        worker_seed(0, -1)
    with pytest.raises(ValueError, match="worker"):
        worker_seed(0, 0, 2**16)
    with pytest.raises(ValueError, match="base_seed"):
        worker_seed(-5, 0)


@pytest.mark.gpu
def test_rng_state_round_trip_includes_every_cuda_device(tmp_path):
    seed_everything(11)
    state = rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    expected = [torch.rand(3, device=f"cuda:{i}").tolist() for i in range(len(state["cuda"]))]
    torch.save(state, tmp_path / "rng.pt")
    seed_everything(12)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = [torch.rand(3, device=f"cuda:{i}").tolist() for i in range(len(state["cuda"]))]
    assert got == expected
    assert resolve_device("auto").type == "cuda"


def test_sample_seed_depends_on_seed_epoch_and_index_only() -> None:
    from mm_train.seeding import sample_seed

    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(1000)}
    assert len(seeds) == 3000  # distinct over epochs and indices
    assert sample_seed(5, 1, 7) == sample_seed(5, 1, 7) != sample_seed(6, 1, 7)
    assert all(0 <= s < 2**32 for s in seeds)
    assert sample_seed(0, 0, 2**40) != sample_seed(0, 0, 0)


def test_seeded_draws_repeat_and_restore_the_callers_generators() -> None:
    import random

    import numpy as np

    from mm_train.seeding import seeded

    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    expected = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    draws = []
    for _ in range(2):
        with seeded(42):
            draws.append((torch.rand(2), random.random(), np.random.rand()))
    assert torch.equal(draws[0][0], draws[1][0]) and draws[0][1:] == draws[1][1:]
    after = (torch.rand(1), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]


def test_seeded_dataset_gives_each_sample_its_own_draw_per_epoch() -> None:
    from torch.utils.data import Dataset

    from mm_train.distributed import SeededDataset

    class Noise(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(1)

    data = SeededDataset(Noise(), seed=3)
    first = [data[i] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, [data[i] for i in range(4)]))
    assert torch.equal(data[2], first[2])  # the order of access does not matter
    data.set_epoch(1)
    assert not any(torch.equal(a, data[i]) for i, a in enumerate(first))
    assert len(data) == 4


def test_replaying_hands_out_generators_on_one_drawn_seed() -> None:
    from mm_train import replaying

    gen = torch.Generator().manual_seed(0)
    same = replaying(gen)
    a, b = torch.rand(5, generator=same()), torch.rand(5, generator=same())
    assert torch.equal(a, b)
    other = replaying(gen)  # the next seed drawn from gen: other samples
    assert not torch.equal(a, torch.rand(5, generator=other()))
    again = replaying(torch.Generator().manual_seed(0))  # reproducible from gen's seed
    assert torch.equal(a, torch.rand(5, generator=again()))
