"""The run rules every app's train.py follows (mm_train.start_run and fit), end to end.

Each app's script is driven with a tiny config: a refused --out, a config mismatch on
--resume and an invalid value exit with status 2 and leave the directory as it was;
--overwrite starts again; --config re-runs a saved config; --loggers adds TensorBoard;
SIGTERM mid-run checkpoints, and --resume then ends with the uninterrupted run's summary.
Every app script answers --help in under 3 s without importing torch or the model libraries.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from app_scripts import load_app_script, sigterm_once_logged

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "ghm": [
        "--n-layer", "2", "--n-child", "2", "--vocab", "3", "--d-model", "16", "--depth", "1",
        "--batch-size", "8", "--bayes-samples", "200", "--log-every", "2", "--threads", "1",
        "--device", "cpu", "--lr", "1e-3", "--steps", "4", "--checkpoint-every", "2",
    ],
    "identifiability": [
        "--content-n", "2", "--style-n", "2", "--modality-n", "1", "--hidden-multipliers", "2,2",
        "--batch-size", "16", "--log-every", "2", "--threads", "1", "--device", "cpu",
        "--steps", "4", "--checkpoint-every", "2",
    ],
}  # fmt: skip
TINY["sogclr"] = [  # --data.root is added by the sogclr_corpus fixture
    "--image-model", "test_resnet", "--image-size", "32", "--text-model", "tiny",
    "--embed-dim", "32", "--vocab-size", "200", "--batch-size", "16", "--workers", "0",
    "--threads", "1", "--device", "cpu", "--log-every", "2", "--epochs", "1", "--tau", "0.01",
]  # fmt: skip
TINY["alignment"] = [
    "--n-samples", "200", "--batch-size", "32", "--epochs-x1", "1", "--epochs-x2", "2",
    "--uniqueness", "0", "4", "8", "--dphi", "1", "--depths", "1", "2", "3", "--seeds", "0",
    "--align-samples", "16", "--topk", "5", "--threads", "1", "--device", "cpu",
    "--log-every", "2", "--checkpoint-every", "4",
]  # fmt: skip
TINY["alignment/clip_finetune"] = [  # --data-root is added by the mmimdb_miniature fixture
    "--train-ids", "32", "--eval-ids", "16", "--batch-size", "16", "--epochs", "1",
    "--warmup-epochs", "0", "--image-size", "32", "--image-width", "32", "--embed-dim", "16",
    "--vocab-size", "300", "--max-tokens", "16", "--threads", "1", "--device", "cpu",
    "--log-every", "1",
]  # fmt: skip
# the training script of each app (train.py unless named here; "app/script" keys name both)
SCRIPT = {"alignment": "emergence"}
# a field of each app that changes the experiment, and a valid other value
EXPERIMENT_FIELD = {
    "ghm": ("--p", "0.2", "0.35"),
    "identifiability": ("--tau", "1.0", "0.5"),
    "sogclr": ("--tau", "0.01", "0.02"),
    "alignment": ("--lr", "0.01", "0.02"),
    "alignment/clip_finetune": ("--clip-weight", "1.0", "0.5"),
}
# how each app extends its run on resume: (flag, old value, new value, logged train steps)
EXTEND = {
    "ghm": ("--steps", 4, 6, [2, 4, 6]),
    "identifiability": ("--steps", 4, 6, [2, 4, 6]),
    "sogclr": ("--epochs", 1, 2, [2, 4, 6, 8]),
    "alignment": ("--epochs-x2", 2, 3, [2, 4, 6, 8, 10, 12, 14, 15]),
    "alignment/clip_finetune": ("--epochs", 1, 2, [1, 2, 3, 4]),
}
APPS = sorted(TINY)


@pytest.fixture(scope="module", autouse=True)
def sogclr_corpus(tmp_path_factory):
    """A tiny synthetic corpus for the sogclr app (64 training pairs: 4 steps an epoch)."""
    root = tmp_path_factory.mktemp("sogclr-corpus") / "data"
    load_app_script("sogclr", "prepare_data").main(
        ["--data.root", str(root), "--data.synthetic-train", "64", "--data.synthetic-eval", "12",
         "--data.synthetic-zeroshot", "3", "--data.synthetic-size", "32"]
    )  # fmt: skip
    TINY["sogclr"] = [*TINY["sogclr"], "--data.root", str(root)]
    yield root
    TINY["sogclr"] = TINY["sogclr"][:-2]


@pytest.fixture(scope="module", autouse=True)
def mmimdb_miniature(tmp_path_factory):
    """A generated MM-IMDb for the alignment app's clip_finetune.py."""
    from mm_data.alignment import write_miniature

    root = write_miniature(tmp_path_factory.mktemp("mmimdb") / "data", per_split=40, size=32)
    key = "alignment/clip_finetune"
    TINY[key] = [*TINY[key], "--data-root", str(root)]
    yield root
    TINY[key] = TINY[key][:-2]


def _script(key: str):
    """The app's script module of a TINY key."""
    app, _, name = key.partition("/")
    return load_app_script(app, name or SCRIPT.get(app, "train"))


def _train(app: str, args: list[str]):
    return _script(app).main([*TINY[app], *args])


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", params=APPS)
def finished(request, tmp_path_factory):
    """(app, run directory) of a finished tiny run."""
    out = tmp_path_factory.mktemp(request.param.replace("/", "-")) / "run"
    _train(request.param, ["--out", str(out)])
    return request.param, out


def test_a_finished_run_records_what_ran(finished):
    _, out = finished
    record = json.loads((out / "run.json").read_text())
    assert record["world_size"] == 1 and record["global_batch"] > 0
    assert record["versions"]["mm-train"] and record["versions"]["torch"]
    assert (out / "curves.png").is_file()


def test_out_holding_a_run_is_refused_unchanged(finished, capsys):
    app, out = finished
    before = _snapshot(out)
    with pytest.raises(SystemExit) as info:
        _train(app, ["--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(out) == before


def test_resume_with_another_experiment_is_refused_unchanged(finished, capsys):
    app, out = finished
    name, saved, other = EXPERIMENT_FIELD[app]
    before = _snapshot(out)
    with pytest.raises(SystemExit) as info:
        _train(app, ["--out", str(out), "--resume", name, other])
    assert info.value.code == 2
    assert f"{name}: saved {saved}, now {other}" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_invalid_value_exits_2_and_writes_nothing(finished, capsys):
    app, out = finished
    before = _snapshot(out)
    with pytest.raises(SystemExit) as info:
        _train(app, ["--out", str(out), "--resume", EXTEND[app][0], "0"])
    assert info.value.code == 2
    assert f"{EXTEND[app][0]} 0: must be >= 1" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_resume_may_extend_the_run_and_is_recorded(finished, tmp_path):
    app, out = finished
    copy = tmp_path / "run"
    for path in out.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    name, old, new, logged = EXTEND[app]
    _train(app, ["--out", str(copy), "--resume", name, str(new)])
    lines = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == logged
    record = json.loads((copy / "run.json").read_text())
    changed = record["resumes"][-1]["changed"]
    assert changed == {name: [old, new], "--out": [str(out), str(copy)]}  # the run was moved


def test_overwrite_starts_again_and_config_reruns_a_saved_config(finished, tmp_path):
    app, out = finished
    again = tmp_path / "again"
    base = _script(app).main(["--config", str(out / "config.json"), "--out", str(again)])
    assert json.loads((again / "config.json").read_text()) == {
        **json.loads((out / "config.json").read_text()),
        "out": str(again),
    }
    redo = _train(app, ["--out", str(again), "--overwrite", "--loggers", "tensorboard"])
    assert list((again / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((again / "run.json").read_text())["resumes"] == []
    assert base is not None and redo is not None


TIMING = ("elapsed_s", "train_seconds", "samples_per_s")


def _without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not any(t in k for t in TIMING)}


def test_sigterm_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path):
    """GHM end to end: SIGTERM once step 40 of 60 is logged; the run checkpoints after its
    current step and exits 143; --resume ends with the uninterrupted run's summary.json."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*TINY["ghm"], "--steps", "60", "--checkpoint-every", "1000", "--log-every", "10"]
    script = [sys.executable, str(ROOT / "apps" / "ghm" / "train.py"), *args]
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run([*script, "--out", str(reference)], env=env, check=True, capture_output=True)
    code, err = sigterm_once_logged(script, interrupted, step=40)
    assert code == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopped after step" in err
    assert not (interrupted / "summary.json").exists()
    subprocess.run(
        [*script, "--out", str(interrupted), "--resume"], env=env, check=True, capture_output=True
    )
    got = json.loads((interrupted / "summary.json").read_text())
    want = json.loads((reference / "summary.json").read_text())
    assert _without_timing(got) == _without_timing(want)
    assert got["risk"] == want["risk"]  # bit-exact: the mean of the same losses


ENTRY_POINTS = ("train", "eval", "prepare_data", "probe", "emergence", "measure",
                "clip_finetune", "mmimdb", "perturb")  # fmt: skip
SCRIPTS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "apps").glob("*/*.py") if p.stem in ENTRY_POINTS
)
HEAVY = ("torch", "timm", "transformers", "matplotlib", "sklearn")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_fast_without_heavy_imports(script):
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{script!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--" in done.stdout.split("usage:", 1)[1]
    assert done.stdout.strip().splitlines()[-1] == "[]", "heavy modules imported by --help"
    assert elapsed < 3.0, f"{script} --help took {elapsed:.1f} s"


def test_every_train_script_takes_the_run_flags():
    for app in sorted(p.name for p in (ROOT / "apps").iterdir() if (p / "train.py").is_file()):
        done = subprocess.run(
            [sys.executable, str(ROOT / "apps" / app / "train.py"), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for flag in ("--overwrite", "--resume", "--config", "--loggers", "--out", "--seed"):
            assert flag in done.stdout, (app, flag)
