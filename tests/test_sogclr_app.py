"""End-to-end tests of apps/sogclr on a tiny generated corpus (seconds on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from app_scripts import load_app_script, sigterm_once_logged

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "apps" / "sogclr"
TINY_MODEL = [
    "--image-model", "test_resnet", "--image-size", "32", "--text-model", "tiny",
    "--embed-dim", "32", "--vocab-size", "200", "--batch-size", "16", "--workers", "0",
    "--threads", "1", "--device", "cpu", "--log-every", "2", "--warmup-steps", "2",
    "--lr", "1e-3",
]  # fmt: skip
CORPUS = [
    "--data.synthetic-train", "64", "--data.synthetic-eval", "12",
    "--data.synthetic-zeroshot", "3", "--data.synthetic-size", "32",
]  # fmt: skip


def _train(args):
    return load_app_script("sogclr", "train").main(args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sogclr-data") / "data"
    load_app_script("sogclr", "prepare_data").main(["--data.root", str(root), *CORPUS])
    return root


def tiny(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [*TINY_MODEL, "--data.root", str(corpus), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("sogclr-run") / "run"
    summary = _train(tiny(corpus, out, "--epochs", "2"))
    return out, summary


def test_training_writes_the_contract(run):
    out, summary = run
    written = json.loads((out / "summary.json").read_text())
    for key in ("r_mean", "txt_r1", "img_r1", "zeroshot_top1"):
        assert isinstance(written[key], float) and 0.0 <= written[key] <= 100.0, key
    assert written == json.loads(json.dumps(summary))
    assert written["epochs"] == 2 and written["steps"] == 8  # 64 samples / 16, drop_last
    assert written["global_batch"] == 16 and written["num_samples"] == 64
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "r_mean" in r]
    assert [r["step"] for r in evals] == [4, 8]  # one evaluation per epoch
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert checkpoints == ["step_00000004.pt", "step_00000008.pt"]  # one per epoch
    for name in ("tokenizer", "model", "dataset.json", "run.json", "curves.png"):
        assert (out / name).exists(), name


def test_checkpoint_holds_the_losss_per_sample_state(run):
    import torch

    out, _ = run
    state = torch.load(out / "checkpoints" / "step_00000008.pt", weights_only=True)
    loss_state = state["stateful"][0]["loss"]
    assert loss_state["state"].shape == (64, 4)  # sized from the data set
    assert bool(loss_state["visited"].all())  # two epochs visit every sample


def test_eval_reproduces_the_final_evaluation(run, tmp_path):
    out, summary = run
    result = load_app_script("sogclr", "eval").main(
        ["--checkpoint", str(out), "--out", str(tmp_path / "eval"), "--workers", "0"]
    )
    for key in ("r_mean", "txt_r1", "img_r1", "zeroshot_top1"):
        assert result[key] == pytest.approx(summary[key], abs=1e-6), key
    by_file = load_app_script("sogclr", "eval").main(
        ["--checkpoint", str(out / "checkpoints" / "step_00000008.pt"), "--out",
         str(tmp_path / "eval2"), "--workers", "0"]
    )  # fmt: skip
    assert by_file["r_mean"] == pytest.approx(summary["r_mean"], abs=1e-6)


@pytest.mark.parametrize(
    "loss",
    ["clip", "isogclr", "info_sogclr", "hybrid_sogclr", "vicreg", "cyclip", "onlineclr", "siglip"],
)
def test_every_loss_trains_by_name(corpus, tmp_path, loss):
    summary = _train(tiny(corpus, tmp_path / loss, "--loss", loss, "--epochs", "1"))
    assert summary["loss_name"] == loss and summary["steps"] == 4
    assert 0.0 <= summary["r_mean"] <= 100.0


def test_resume_refuses_another_loss_and_another_data_set_size(run, corpus, tmp_path, capsys):
    out, _ = run
    with pytest.raises(SystemExit) as info:
        _train(tiny(corpus, out, "--resume", "--loss", "clip"))
    assert info.value.code == 2
    assert '--loss: saved "sogclr", now "clip"' in capsys.readouterr().err
    other = tmp_path / "other-data"
    load_app_script("sogclr", "prepare_data").main(
        ["--data.root", str(other), *CORPUS[:1], "80", *CORPUS[2:]]
    )
    copy = tmp_path / "run"
    for path in out.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(out)).write_bytes(path.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    config["data"]["root"] = str(other)
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as info:
        _train([*tiny(other, copy, "--resume")])
    assert "trained on 64 samples" in str(info.value) and "has 80" in str(info.value)


def _write_annotations(root: Path, entries) -> None:
    (root / "train.json").write_text(json.dumps(entries))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e[3].update(image="missing/nowhere.png"), r"entry 3.*nowhere\.png"),
        (lambda e: e[2].update(caption="  !? "), r"entry 2.*caption"),
        (lambda e: e[1].pop("caption"), r"entry 1.*caption"),
        (lambda e: e[0].pop("image"), r"entry 0.*image"),
    ],
)
def test_bad_annotations_exit_2_naming_entry_and_file_before_writing(
    corpus, tmp_path, capsys, mutate, message
):
    import re
    import shutil

    root = tmp_path / "data"
    shutil.copytree(corpus, root)
    entries = json.loads((root / "train.json").read_text())
    mutate(entries)
    _write_annotations(root, entries)
    with pytest.raises(SystemExit) as info:
        _train(tiny(root, tmp_path / "out", "--epochs", "1"))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "train.json" in err, err
    assert not (tmp_path / "out").exists()


def test_unreadable_image_is_named(corpus, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(corpus, root)
    entries = json.loads((root / "train.json").read_text())
    broken = root / "images" / entries[0]["image"]
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=str(broken.name)):
        _train(tiny(root, tmp_path / "out", "--epochs", "1"))


def test_webdataset_shards_train_with_the_same_index(corpus, tmp_path):
    shards = tmp_path / "shards"
    root = tmp_path / "data"
    load_app_script("sogclr", "prepare_data").main(
        ["--data.root", str(root), *CORPUS, "--shards", str(shards), "--samples-per-shard", "32"]
    )
    pattern = str(shards / "shard-{000000..000001}.tar")
    summary = _train(
        tiny(root, tmp_path / "out", "--data.shards", pattern, "--data.shard-samples", "64",
             "--epochs", "1")
    )  # fmt: skip
    assert summary["steps"] == 4 and summary["num_samples"] == 64


def test_sigterm_then_resume_equals_the_uninterrupted_run(corpus, tmp_path):
    """SIGTERM after step 5 of 8: the run checkpoints and exits 143; --resume ends with
    the uninterrupted run's summary (the loss state and the data order continue)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = [sys.executable, str(APP / "train.py")]
    args = [*TINY_MODEL, "--data.root", str(corpus), "--epochs", "2", "--log-every", "1"]
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(
        [*script, *args, "--out", str(reference)], env=env, check=True, capture_output=True
    )
    code, err = sigterm_once_logged([*script, *args], interrupted, step=5)
    assert code == 128 + signal.SIGTERM, err
    subprocess.run(
        [*script, *args, "--out", str(interrupted), "--resume"], env=env, check=True,
        capture_output=True,
    )  # fmt: skip
    got = json.loads((interrupted / "summary.json").read_text())
    want = json.loads((reference / "summary.json").read_text())
    for key in ("r_mean", "txt_r1", "img_r1", "zeroshot_top1", "train_loss"):
        assert got[key] == want[key], key
