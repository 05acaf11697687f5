"""apps/alignment end to end on tiny configs: emergence.py's outputs, exact resume, bad input."""

from __future__ import annotations

import csv
import json
import signal
import sys
from pathlib import Path

import pytest
from app_scripts import load_app_script, sigterm_once_logged

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--n-samples", "400", "--batch-size", "32", "--epochs-x1", "2", "--epochs-x2", "3",
    "--uniqueness", "0", "4", "8", "--dphi", "1", "3", "--depths", "1", "2", "3",
    "--seeds", "0", "1", "--align-samples", "40", "--topk", "5", "--threads", "1",
    "--device", "cpu", "--log-every", "5",
]  # fmt: skip


def _emergence(args):
    return load_app_script("alignment", "emergence").main([*TINY, *args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("emergence") / "run"
    return out, _emergence(["--out", str(out)])


def test_emergence_writes_the_contract_keys_tables_and_plots(finished):
    out, _ = finished
    saved = json.loads((out / "summary.json").read_text())
    for metric in ("mutual_knn", "unbiased_cka"):
        for d in (1, 3):
            assert -1.0 <= saved[f"rho_{metric}_dphi{d}"] <= 1.0
        for u in (0, 4, 8):
            assert f"perf_corr_{metric}_u{u}" in saved
    assert (
        saved["encoders"] == 2 * 3 + 2 * 3 * 2 * 3
    )  # x1 per (seed, U); x2 per (seed, U, D_phi, D_enc)
    with (out / "alignment.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * (2 * 3 * 2)  # metrics x depths x (seeds x U x D_phi)
    for row in rows:
        assert 0.0 <= float(row["alignment"]) <= 1.0 + 1e-9
        assert -1 <= int(row["layer_x1"]) < 2 and 0 <= int(row["layer_x2"]) <= int(row["depth"])
    with (out / "accuracy.csv").open() as handle:
        accuracy = list(csv.DictReader(handle))
    assert len(accuracy) == 2 * 3 + 2 * 3 * 2 * 3
    # U = 0: the label is a function of the shared bits both modalities see
    assert all(0.0 <= float(r["val_acc"]) <= 1.0 for r in accuracy)
    for name in ("alignment_vs_u.png", "alignment_vs_perf.png", "curves.png"):
        assert (out / name).stat().st_size > 1000


def test_max_alignment_in_the_summary_is_the_table_maximum(finished):
    out, summary = finished
    with (out / "alignment.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for u in (0, 4, 8):
        per_seed = [
            max(float(r["alignment"]) for r in rows
                if (r["metric"], r["seed"], r["u"], r["dphi"]) == ("mutual_knn", s, str(u), "3"))
            for s in ("0", "1")
        ]  # fmt: skip
        assert summary[f"max_mutual_knn_dphi3_u{u}"] == pytest.approx(sum(per_seed) / 2)


def test_sigterm_then_resume_equals_the_uninterrupted_run(finished, tmp_path):
    reference, _ = finished
    script = [sys.executable, str(ROOT / "apps" / "alignment" / "emergence.py"), *TINY,
              "--checkpoint-every", "1000"]  # fmt: skip
    out = tmp_path / "interrupted"
    code, err = sigterm_once_logged(script, out, step=20)
    assert code == 128 + signal.SIGTERM, err
    assert not (out / "summary.json").exists()
    import subprocess

    subprocess.run([*script, "--out", str(out), "--resume"], check=True, capture_output=True)
    for name in ("alignment.csv", "accuracy.csv"):
        assert (out / name).read_text() == (reference / name).read_text(), name


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--uniqueness", "0", "4", "9"], "--uniqueness"),
        (["--align-samples", "1000"], "--align-samples 1000"),
        (["--metrics", "mutual_knn", "knn"], "--metrics"),
        (["--topk", "40"], "--topk 40"),
        (["--dphi", "1", "1"], "--dphi"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as info:
        _emergence(["--out", str(tmp_path / "bad"), *flags])
    assert info.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- measure.py


def _measure(args):
    return load_app_script("alignment", "measure").main(args)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    import torch

    from mm_models.features import save_features

    folder = tmp_path_factory.mktemp("features")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(60, 4, generator=g)
    ids = [f"s{i}" for i in range(60)]
    for name, layers, width in (("lm_a", 3, 8), ("lm_b", 2, 6), ("vit_a", 4, 10)):
        feats = torch.stack([z @ torch.randn(4, width, generator=g)
                             + torch.randn(60, width, generator=g) for _ in range(layers)], 1)  # fmt: skip
        save_features(folder / f"{name}.pt", feats, ids, model=name)
    save_features(folder / "short.pt", torch.randn(50, 2, 4), ids[:50])
    save_features(folder / "shuffled.pt", torch.randn(60, 2, 4), ids[::-1])
    return folder


def test_measure_scores_every_pair_as_layer_alignment_does(features, tmp_path):
    from mm_eval.alignment import layer_alignment
    from mm_models.features import load_features

    out = tmp_path / "m"
    rows = _measure(["--features-dir", str(features), "--a", "lm_a", "lm_b", "--b", "vit_a",
                     "--metric", "mutual_knn", "--topk", "5", "--concat", "--out", str(out)])  # fmt: skip
    assert [(r["a"], r["b"]) for r in rows] == [("lm_a", "vit_a"), ("lm_b", "vit_a")]
    want = layer_alignment(load_features(features / "lm_b.pt")["feats"],
                           load_features(features / "vit_a.pt")["feats"], "mutual_knn", topk=5,
                           q=0.95, concat=True)  # fmt: skip
    assert (
        rows[1]["score"] == want.best
        and (rows[1]["layer_a"], rows[1]["layer_b"]) == want.best_layers
    )
    scores = json.loads((out / "scores.json").read_text())["pairs"]["lm_b|vit_a"]
    assert scores["layers_a"] == [-1, 0, 1] and len(scores["scores"][0]) == 5
    assert (out / "alignment.csv").is_file() and (out / "heatmap.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--a", "lm_a", "--b", "short"], "short holds 50 samples"),
        (["--a", "lm_a", "--b", "shuffled"], "ids hash differs"),
        (["--a", "lm_a", "--b", "missing"], "missing.pt does not exist"),
        (["--a", "lm_a", "--b", "vit_a", "--topk", "60"], "--topk 60"),
        (["--a", "lm_a", "--b", "vit_a", "--metric", "knn"], "--metric knn"),
    ],
)
def test_measure_bad_input_exits_2_naming_it(features, tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as info:
        _measure(["--features-dir", str(features), "--out", str(tmp_path / "m"), *flags])
    assert info.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_measure_refuses_to_overwrite(features, tmp_path, capsys):
    args = ["--features-dir", str(features), "--a", "lm_a", "--b", "vit_a", "--topk", "5",
            "--out", str(tmp_path / "m")]  # fmt: skip
    _measure(args)
    with pytest.raises(SystemExit) as info:
        _measure(args)
    assert info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    _measure([*args, "--overwrite"])


# ------------------------------------------------------------------------ clip_finetune.py

FINETUNE_TINY = [
    "--train-ids", "32", "--eval-ids", "16", "--batch-size", "16", "--epochs", "2",
    "--warmup-epochs", "1", "--image-size", "32", "--image-width", "32", "--embed-dim", "16",
    "--vocab-size", "300", "--max-tokens", "16", "--threads", "1", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def mmimdb(tmp_path_factory):
    from mm_data.alignment import write_miniature

    return write_miniature(tmp_path_factory.mktemp("mmimdb") / "data", per_split=50, size=32)


def _finetune(args):
    return load_app_script("alignment", "clip_finetune").main(args)


def test_sweep_runs_parallel_trials_on_a_local_ray_instance_and_skips_finished_ones(
    mmimdb, tmp_path, capsys
):
    out = tmp_path / "sweep"
    args = [*FINETUNE_TINY, "--data-root", str(mmimdb), "--sweep", "0", "1", "--ray-cpus", "2",
            "--out", str(out)]  # fmt: skip
    summary = _finetune(args)
    assert summary["trials"] == 2
    for name, weight in (("cw0", 0.0), ("cw1", 1.0)):
        trial = json.loads((out / name / "summary.json").read_text())
        assert trial["clip_weight"] == weight and 0.0 <= trial["test_f1"] <= 1.0
        assert summary[f"test_f1_{name}"] == trial["test_f1"]
        assert (out / name / "model" / "head.pt").is_file()
    with (out / "sweep.csv").open() as handle:
        assert [float(r["clip_weight"]) for r in csv.DictReader(handle)] == [0.0, 1.0]
    # clip_weight 0 trains on the labelled movies only; 1 adds no unlabelled ones here
    assert json.loads((out / "cw0" / "summary.json").read_text())["train_pairs"] == 32
    capsys.readouterr()
    again = _finetune([*args, "--launcher", "local"])  # a restart: nothing left to run
    assert "2 of 2 trials finished before: skipped" in capsys.readouterr().out
    assert again == summary


def test_a_trial_equals_the_same_run_launched_alone(mmimdb, tmp_path):
    """The local launcher runs the trial's saved config: the same numbers as a direct run."""
    common = [*FINETUNE_TINY, "--data-root", str(mmimdb), "--unlabeled", "8"]
    direct = _finetune([*common, "--clip-weight", "0.5", "--out", str(tmp_path / "direct")])
    _finetune([*common, "--sweep", "0.5", "--launcher", "local", "--out", str(tmp_path / "sw")])
    trial = json.loads((tmp_path / "sw" / "cw0.5" / "summary.json").read_text())
    for key in ("test_f1", "dev_f1", "probe_C", "train_loss", "steps", "train_pairs"):
        assert trial[key] == direct[key], key
    assert direct["train_pairs"] == 40  # 32 labelled + 8 unlabelled pairs


def test_a_sweep_of_another_configuration_is_refused(mmimdb, tmp_path, capsys):
    out = tmp_path / "sweep"
    base = [*FINETUNE_TINY, "--data-root", str(mmimdb), "--launcher", "local", "--out", str(out)]
    _finetune([*base, "--sweep", "0"])
    with pytest.raises(SystemExit) as info:
        _finetune([*base, "--sweep", "0", "--lr", "0.002"])  # the preset: 1e-3
    assert info.value.code == 2 and "lr" in capsys.readouterr().err


# ------------------------------------------------------------------------------- mmimdb.py


def test_mmimdb_demo_writes_probe_alignment_and_correlation_and_reuses_features(mmimdb, tmp_path):
    mm = load_app_script("alignment", "mmimdb")
    out = tmp_path / "mm"
    args = ["--demo", "--data-root", str(mmimdb), "--probe-epochs", "5", "--threads", "1",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    summary = mm.main(args)
    assert summary["lms"] == 3 and summary["vits"] == 1
    with (out / "alignment.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(0 <= float(r["alignment"]) <= 1 for r in rows)
    with (out / "probe.csv").open() as handle:
        probe = list(csv.DictReader(handle))
    assert len(probe) == 3 * 24  # overall + 23 genres per LM
    with (out / "correlation.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 24
    cached = sorted(p.name for p in (out / "features").iterdir())
    assert len(cached) == 3 * 3 + 1  # LM x split, ViT on test
    stamps = {p: p.stat().st_mtime_ns for p in (out / "features").iterdir()}
    again = mm.main([*args, "--overwrite"])
    assert {p: p.stat().st_mtime_ns for p in (out / "features").iterdir()} == stamps
    assert again == summary


def test_mmimdb_bad_input_is_named(tmp_path, capsys):
    mm = load_app_script("alignment", "mmimdb")
    for flags, named in ((["--lms", str(tmp_path), "--vits", "vit_tiny_patch16_224"], ">= 3"),
                         (["--lms", "nowhere", "a", "b", "--vits", "x"], "--lms nowhere"),
                         ([], "--demo")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            mm.main([*flags, "--out", str(tmp_path / "o")])
        assert info.value.code == 2 and named in capsys.readouterr().err


# ------------------------------------------------------------------------------ perturb.py


def test_perturb_demo_aligns_every_lm_vit_and_level(tmp_path):
    pt = load_app_script("alignment", "perturb")
    out = tmp_path / "pt"
    summary = pt.main(["--demo", "--samples", "60", "--levels", "0", "50", "100", "--threads",
                       "1", "--device", "cpu", "--out", str(out)])  # fmt: skip
    with (out / "alignment.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 3  # LMs x levels x one ViT
    assert -1.0 <= summary["rho_mean"] <= 1.0 and summary["lms"] == 3
    with (out / "levels.csv").open() as handle:
        sims = [float(r["word_similarity"]) for r in csv.DictReader(handle)]
    assert sims[0] == 1.0 and sims[0] > sims[1] > sims[2]  # u = 0 leaves captions unchanged
    assert (out / "alignment_vs_u.png").stat().st_size > 1000


def test_perturb_bad_input_is_named(tmp_path, capsys):
    pt = load_app_script("alignment", "perturb")
    for flags, named in ((["--annotations", str(tmp_path / "none.json")], "--annotations"),
                         (["--demo", "--levels", "10", "20"], "--levels"),
                         (["--demo", "--rewriter", "char:swap"], "op must be one of")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            pt.main([*flags, "--out", str(tmp_path / "o"), "--samples", "30"])
        assert info.value.code == 2 and named in capsys.readouterr().err
