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
