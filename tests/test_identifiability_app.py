"""End-to-end tests of apps/identifiability on tiny configs (seconds on CPU)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from app_scripts import load_app_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

APP = Path(__file__).resolve().parents[1] / "apps" / "identifiability"
TINY_MLP = [
    "--experiment", "mlp", "--content-n", "2", "--style-n", "2", "--modality-n", "1",
    "--hidden-multipliers", "2,2", "--batch-size", "16", "--lr", "1e-3", "--log-every", "2",
    "--threads", "1", "--device", "cpu",
]  # fmt: skip
TINY_EVAL = ["--val-samples", "60", "--test-samples", "60", "--threads", "1", "--device", "cpu"]
TINY_IMGTXT = [
    "--experiment", "imgtxt", "--batch-size", "8", "--lr", "1e-3", "--log-every", "1",
    "--threads", "1", "--device", "cpu", "--image-size", "32",
]  # fmt: skip


def _load(name: str):
    return load_app_script("identifiability", name)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def train():
    return _load("train").main


@pytest.fixture(scope="module")
def evaluate():
    return _load("eval").main


@pytest.fixture(scope="module")
def mlp_run(train, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp")
    summary = train([*TINY_MLP, "--steps", "6", "--checkpoint-every", "3", "--out", str(out)])
    return out, summary


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("m3di")
    _load("prepare_data").main(
        ["--out", str(root), "--n-train", "24", "--n-val", "24", "--n-test", "24",
         "--image-size", "32"]
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def imgtxt_run(train, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("imgtxt")
    args = [*TINY_IMGTXT, "--steps", "2", "--datapath", str(corpus), "--out", str(out)]
    return out, train(args)


# ------------------------------------------------------------------------------ simulation


def test_mlp_run_writes_the_contract(mlp_run):
    out, summary = mlp_run
    for name in ("config.json", "metrics.jsonl", "summary.json", "mixing.pt"):
        assert (out / name).is_file(), name
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == [2, 4, 6]
    assert json.loads((out / "config.json").read_text())["style_n"] == 2
    assert json.loads((out / "summary.json").read_text())["step"] == summary["step"] == 6
    assert (out / "checkpoints" / "step_00000006.pt").is_file()


def test_saved_mixing_is_the_one_the_run_used(mlp_run):
    """The saved f1, f2 are invertible 5-dim maps drawn from the run's seed (so eval sees
    the training distribution), and two seeds give different mixings."""
    from mm_data.identifiability import load_mixing, make_mixing

    out, _ = mlp_run
    f1, f2, latent_cfg = load_mixing(out / "mixing.pt")
    assert latent_cfg.view_dim == 5 and f1 is not f2
    g1, g2 = make_mixing(5, seed=0)
    z = torch.randn(7, 5)
    assert torch.allclose(f1(z), g1(z)) and torch.allclose(f2(z), g2(z))
    assert torch.allclose(f1.inverse(f1(z)), z, atol=1e-4)
    assert not torch.allclose(make_mixing(5, seed=1)[0](z), f1(z))


def test_mlp_eval_writes_results_csv(mlp_run, evaluate, tmp_path):
    out, _ = mlp_run
    result = evaluate(["--run", str(out), *TINY_EVAL, "--out", str(tmp_path)])
    rows = _rows(tmp_path / "results.csv")
    assert list(rows[0])[:4] == ["encoder", "target", "r2_linear", "r2_nonlinear"]
    assert [(r["encoder"], r["target"]) for r in rows] == [
        (e, t) for e in ("hz1", "hz2") for t in ("c", "s", "s_tilde", "m1", "m2")
    ]
    for row in rows:
        assert float(row["r2_linear"]) <= 1.0 and float(row["r2_nonlinear"]) <= 1.0
        assert row["nonlinear"] == "kernel_ridge"  # auto: exact KRR on a small fit set
    assert (tmp_path / "results_heatmap.png").stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["hz1/c/r2_linear"] == pytest.approx(float(rows[0]["r2_linear"]))
    assert result["hz2/m2/r2_nonlinear"] == pytest.approx(float(rows[-1]["r2_nonlinear"]))


def test_intervention_eval_scores_the_content_that_entered_the_mixing(mlp_run, evaluate, tmp_path):
    out, _ = mlp_run
    evaluation = _load("identifiability_evaluation")
    tasks = _load("identifiability_tasks")
    from mm_train import load_config

    cfg = load_config(tasks.IdentifiabilityConfig, out / "config.json")
    latents, f1, f2, _ = tasks.load_trained_simulation(out, cfg)
    x1, x2, targets = evaluation.simulation_sets(
        latents, f1, f2, 50, torch.Generator().manual_seed(0), intervene=True
    )
    assert list(targets) == ["c", "c_prime", "s", "s_tilde", "m1", "m2"]
    # inverting the views gives back c' (not c) and the original style
    z1, z2 = f1.inverse(x1).double().numpy(), f2.inverse(x2).double().numpy()
    np.testing.assert_allclose(z1[:, :2], targets["c_prime"], atol=1e-4)
    np.testing.assert_allclose(z2[:, :2], targets["c_prime"], atol=1e-4)
    np.testing.assert_allclose(z1[:, 2:4], targets["s"], atol=1e-4)
    assert np.abs(targets["c"] - targets["c_prime"]).max() > 0.1
    result = evaluate(["--run", str(out), *TINY_EVAL, "--out", str(tmp_path), "--intervention"])
    rows = _rows(tmp_path / "results_intervention.csv")
    assert [(r["encoder"], r["target"]) for r in rows] == [
        (e, t) for e in ("hz1", "hz2") for t in ("c", "c_prime", "s", "s_tilde", "m1", "m2")
    ]
    assert result["intervention/hz1/c_prime/r2_linear"] == pytest.approx(
        float(rows[1]["r2_linear"])
    )
    assert not (tmp_path / "results.csv").exists()  # the plain table is another call


def test_intervention_needs_an_mlp_run(imgtxt_run, evaluate, capsys):
    out, _ = imgtxt_run
    with pytest.raises(SystemExit) as info:
        evaluate(["--run", str(out), *TINY_EVAL, "--intervention"])
    assert info.value.code == 2
    assert "--intervention needs an mlp run" in capsys.readouterr().err


def test_eval_is_reproducible_and_picks_the_regressor(mlp_run, evaluate, tmp_path):
    out, _ = mlp_run
    args = ["--run", str(out), *TINY_EVAL]
    first = evaluate([*args, "--out", str(tmp_path / "a"), "--nonlinear", "kernel_ridge_nystroem"])
    again = evaluate([*args, "--out", str(tmp_path / "b"), "--nonlinear", "kernel_ridge_nystroem"])
    assert first["hz1/c/r2_nonlinear"] == again["hz1/c/r2_nonlinear"]
    assert first["hz1/c/r2_linear"] == again["hz1/c/r2_linear"]
    assert {r["nonlinear"] for r in _rows(tmp_path / "a" / "results.csv")} == {
        "kernel_ridge_nystroem"
    }


def test_resume_continues_exactly(train, mlp_run, tmp_path):
    out, summary = mlp_run
    part = tmp_path / "part"
    train([*TINY_MLP, "--steps", "6", "--checkpoint-every", "3", "--out", str(part)])
    (part / "checkpoints" / "step_00000006.pt").unlink()  # as if killed after step 3
    (part / "checkpoints" / "latest").write_text("step_00000003.pt")
    resumed = train(
        [*TINY_MLP, "--steps", "6", "--checkpoint-every", "3", "--out", str(part), "--resume"]
    )
    assert resumed["loss"] == summary["loss"]
    full = torch.load(out / "checkpoints" / "step_00000006.pt", weights_only=True)["model"]
    again = torch.load(part / "checkpoints" / "step_00000006.pt", weights_only=True)["model"]
    for name, value in full.items():
        assert torch.equal(value, again[name]), name


def test_shared_encoder_and_mixing(train, tmp_path):
    from mm_data.identifiability import load_mixing

    args = [*TINY_MLP, "--steps", "2", "--shared-encoder", "--shared-mixing"]
    train([*args, "--out", str(tmp_path)])
    f1, f2, _ = load_mixing(tmp_path / "mixing.pt")
    assert f1 is f2
    state = torch.load(tmp_path / "checkpoints" / "step_00000002.pt", weights_only=True)
    weights = state["model"]
    for name in (k for k in weights if k.startswith("g1.")):  # one encoder, stored twice
        assert torch.equal(weights[name], weights["g2." + name[3:]]), name


def test_resume_rejects_another_latent_model(train, tmp_path, capsys):
    args = [*TINY_MLP, "--steps", "2", "--out", str(tmp_path)]
    train(args)
    with pytest.raises(SystemExit) as info:
        train([*args, "--style-change-prob", "0.5", "--resume"])
    assert info.value.code == 2
    assert "--style-change-prob: saved 1.0, now 0.5" in capsys.readouterr().err
    assert json.loads((tmp_path / "config.json").read_text())["style_change_prob"] == 1.0


def test_eval_without_saved_mixing_names_the_file(mlp_run, evaluate, tmp_path):
    out, _ = mlp_run
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"mixing\.pt"):
        evaluate(["--run", str(broken), *TINY_EVAL])


def test_eval_of_a_missing_run_names_config_json(evaluate, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate(["--run", str(tmp_path / "nothing"), *TINY_EVAL])
    assert info.value.code == 2
    assert "has no config.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--style-change-prob", "1.5"], "--style-change-prob 1.5: must be in [0, 1]"),
        (["--batch-size", "0"], "--batch-size 0: must be >= 1"),
        (["--batch-size", "1"], "--batch-size 1: contrastive training needs at least 2"),
        (["--covariances", "same"], "--covariances"),
        (["--hidden-multipliers", "4,0"], "--hidden-multipliers 4,0: must be >= 1"),
        (["--experiment", "imgtxt", "--datapath", "nowhere"], "--datapath nowhere does not exist"),
    ],
)
def test_bad_values_exit_2_before_writing(train, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        train([*TINY_MLP, "--steps", "2", *flags, "--out", str(out)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_latent_model_round_trips_through_the_saved_mixing(train, tmp_path):
    from mm_data.identifiability import LatentModel, load_latent_params, load_mixing

    args = [*TINY_MLP, "--steps", "2", "--statistical-dependence", "--content-dependent-style"]
    train([*args, "--out", str(tmp_path / "eq")])
    _, _, latent_cfg = load_mixing(tmp_path / "eq" / "mixing.pt")
    assert latent_cfg.statistical_dependence and latent_cfg.covariances == "equal"  # default
    saved = load_latent_params(tmp_path / "eq" / "mixing.pt")
    assert torch.equal(saved["cov_style"], saved["cov_style_change"])  # one draw per size
    drawn = LatentModel(latent_cfg).parameters()
    assert all(torch.equal(saved[k], drawn[k]) for k in ("cov_content", "B", "a"))
    train([*args, "--covariances", "independent", "--out", str(tmp_path / "ind")])
    saved = load_latent_params(tmp_path / "ind" / "mixing.pt")
    assert not torch.allclose(saved["cov_style"], saved["cov_style_change"])


@pytest.mark.parametrize("preset", sorted(p.stem for p in (APP / "presets").glob("*.toml")))
def test_every_training_preset_is_a_valid_config(preset, tmp_path):
    from mm_train import parse_config

    tasks = _load("identifiability_tasks")
    cfg = parse_config(
        tasks.IdentifiabilityConfig, ["--preset", preset, "--datapath", str(tmp_path)],
        preset_dir=APP / "presets", exit_on_error=False,
    )  # fmt: skip
    assert cfg.steps > 0 and tasks.encoding_size(cfg) > 0 and tasks.learning_rate(cfg) > 0


def test_help_lists_every_flag_with_defaults(capsys):
    with pytest.raises(SystemExit):
        _load("train").main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--style-change-prob", "--statistical-dependence", "--content-dependent-style",
                 "--covariances",
                 "--shared-mixing", "--shared-encoder", "--encoding-size", "--c-param", "--tau",
                 "--clip-grad", "--datapath", "--resume", "--threads"):  # fmt: skip
        assert flag in text, flag
    assert "default" in text


# ------------------------------------------------------------------------------ image/text


def test_prepare_data_writes_the_layout(corpus):
    for split in ("train", "val", "test"):
        folder = corpus / split
        assert len(list((folder / "images").glob("*.png"))) == 24
        assert len((folder / "text" / "text_raw.txt").read_text().splitlines()) == 24
        for name in ("latents_image.csv", "latents_text.csv"):
            assert len(_rows(folder / name)) == 24


def corpus_root(run: Path) -> Path:
    return Path(json.loads((run / "config.json").read_text())["datapath"])


def test_imgtxt_train_and_eval(imgtxt_run, evaluate, tmp_path):
    from mm_data.identifiability import FACTORS

    out, summary = imgtxt_run
    assert summary["step"] == 2 and summary["encoding_size"] == 4
    assert (out / "vocab.json").is_file() and (out / "text_meta.json").is_file()
    # images are normalised with the training split's channel statistics, saved with the run
    from mm_data.identifiability import Multimodal3DIdent

    meta = json.loads((out / "text_meta.json").read_text())
    train_split = Multimodal3DIdent(corpus_root(out), "train", image_size=32)
    expected_mean, expected_std = train_split.channel_stats()
    assert meta["image_mean"] == pytest.approx(expected_mean)
    assert meta["image_std"] == pytest.approx(expected_std)
    item = _load("identifiability_tasks").PairDataset(train_split, meta)[0]
    raw = train_split.load_image(0)
    mean = torch.tensor(expected_mean).view(3, 1, 1)
    std = torch.tensor(expected_std).view(3, 1, 1)
    torch.testing.assert_close(item["image"], (raw - mean) / std)
    evaluate(["--run", str(out), "--threads", "1", "--device", "cpu", "--out", str(tmp_path)])
    rows = _rows(tmp_path / "results.csv")
    assert list(rows[0])[:7] == [
        "modality", "factor_name", "factor_type", "r2_linreg", "r2_krreg", "acc_logreg", "acc_mlp",
    ]  # fmt: skip
    expected = [(m, f, t) for m in ("image", "text") for f, t in FACTORS[m].items()]
    assert [(r["modality"], r["factor_name"], r["factor_type"]) for r in rows] == expected
    for row in rows:
        filled = ("r2_linreg", "r2_krreg") if row["factor_type"] == "continuous" else (
            "acc_logreg", "acc_mlp")  # fmt: skip
        assert all(row[k] != "" for k in filled)
        if row["factor_type"] == "discrete":
            assert 0.0 <= float(row["acc_logreg"]) <= 1.0
    assert (tmp_path / "results_heatmap.png").is_file()


def _copy_corpus(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_file_is_named(train, corpus, tmp_path):
    data = _copy_corpus(corpus, tmp_path / "data")
    (data / "train" / "latents_text.csv").unlink()
    args = [*TINY_IMGTXT, "--steps", "1", "--datapath", str(data), "--out", str(tmp_path / "o")]
    with pytest.raises(ValueError, match=r"train/latents_text\.csv"):
        train(args)


def test_mismatched_rows_are_named(train, corpus, tmp_path):
    data = _copy_corpus(corpus, tmp_path / "data")
    captions = data / "train" / "text" / "text_raw.txt"
    captions.write_text("\n".join(captions.read_text().splitlines()[:-1]) + "\n")
    args = [*TINY_IMGTXT, "--steps", "1", "--datapath", str(data), "--out", str(tmp_path / "o")]
    with pytest.raises(ValueError, match=r"text_raw\.txt has 23 captions"):
        train(args)


def test_caption_longer_than_the_model_is_named(imgtxt_run, corpus, evaluate, tmp_path):
    out, _ = imgtxt_run
    data = _copy_corpus(corpus, tmp_path / "data")
    captions = data / "test" / "text" / "text_raw.txt"
    lines = captions.read_text().splitlines()
    lines[5] = lines[5] + " and then some more words than the encoder was built for" * 3
    captions.write_text("\n".join(lines) + "\n")
    args = ["--run", str(out), "--datapath", str(data), "--threads", "1", "--device", "cpu"]
    with pytest.raises(ValueError, match=r"test.*caption row 5"):
        evaluate([*args, "--out", str(tmp_path / "e")])


# ------------------------------------------------------------------ latent oracle experiment


@pytest.fixture(scope="module")
def oracle():
    return load_app_script("identifiability", "latent_oracle", kind="experiment")


def test_oracle_floor_is_the_loss_with_far_negatives(oracle):
    """-log(M + 1) is lp_simclr's value when positives coincide and negatives are far."""
    import mm_losses

    h = torch.randn(8, 3, dtype=torch.float64)
    far = h[:6] + 1e3
    loss = mm_losses.build("lp_simclr", tau=1.0)(h, h, image_negatives=far, text_negatives=far)
    assert loss.item() == pytest.approx(oracle.loss_floor(6), abs=1e-9)
    # A negative at the anchor itself counts like the positive: the loss rises above the floor.
    near = torch.cat([h[:1], far[1:]])
    above = mm_losses.build("lp_simclr", tau=1.0)(h, h, image_negatives=near, text_negatives=near)
    assert above.item() > oracle.loss_floor(6)


@pytest.mark.parametrize("setting", ["independent", "statistical", "equal"])
def test_oracle_style_invariance_is_the_max_over_directions(oracle, setting):
    """Brute force over random directions u: corr(u.s, u.s~) from the covariances never
    exceeds the generalised-eigenvalue answer and comes close to it; samples along the best
    direction show that correlation."""
    from mm_data.identifiability import LatentConfig, LatentModel

    model = LatentModel(LatentConfig(seed=0, **oracle.SETTINGS[setting]))
    best = oracle.max_style_invariance(model)
    ns = model.cfg.style_n
    eye = torch.eye(ns, dtype=torch.float64)
    cov_s = eye if model.cov_style is None else model.cov_style
    cov_a = eye if model.cov_style_change is None else model.cov_style_change
    u = torch.randn(200_000, ns, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    var_s = ((u @ cov_s) * u).sum(1)
    var_a = ((u @ cov_a) * u).sum(1)
    corr = (var_s / (var_s + var_a)).sqrt()
    assert corr.max().item() <= best + 1e-9
    assert corr.max().item() >= best - 0.01
    batch = model.sample(100_000, generator=torch.Generator().manual_seed(1))
    top = u[corr.argmax()].float()
    sample_corr = torch.corrcoef(torch.stack([batch.s @ top, batch.s_tilde @ top]))[0, 1]
    assert sample_corr.item() == pytest.approx(corr.max().item(), abs=0.01)
    if setting != "statistical":
        assert best == pytest.approx(0.5**0.5, abs=1e-9)  # every direction has r = 1


def test_oracle_drops_style_of_independent_latents_and_keeps_it_under_wishart_draws(oracle):
    kwargs = {"steps": 400, "batch_size": 64, "eval_every": 200, "test_size": 2000}
    final = {}
    for setting in ("independent", "statistical"):
        rows = oracle.train_oracle(setting, 0, **kwargs)
        assert {r["step"] for r in rows} == {200, 400}
        assert {(r["encoder"], r["target"]) for r in rows} == {
            (e, t) for e, ts in oracle.VIEW_TARGETS.items() for t in ts
        }
        final[setting] = {
            (r["encoder"], r["target"]): r["r2_linear"] for r in rows if r["step"] == 400
        }
    for encoder in ("hz1", "hz2"):
        assert final["independent"][encoder, "c"] > 0.95
        assert final["independent"][encoder, "s"] < 0.05
        assert final["statistical"][encoder, "c"] > 0.9
    # Both encoders keep the nearly invariant style direction of independent
    # Wishart draws (measured at this budget: R^2(s) 0.35 / 0.34; independent latents < 0.01).
    for encoder in ("hz1", "hz2"):
        assert final["statistical"][encoder, "s"] > 0.25
    for key, value in final["independent"].items():
        if key[1] in ("m1", "m2"):
            assert value < 0.05


def test_oracle_script_writes_csv_and_plot_and_rejects_bad_settings(oracle, tmp_path):
    rows = oracle.main(
        ["--settings", "equal", "--seeds", "3", "--steps", "20", "--batch-size", "16",
         "--eval-every", "10", "--weight-decay", "0.1", "--out", str(tmp_path)]
    )  # fmt: skip
    assert _rows(tmp_path / "oracle.csv")[0].keys() == rows[0].keys()
    assert len(_rows(tmp_path / "oracle.csv")) == 2 * 8
    assert (tmp_path / "oracle.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        oracle.main(["--settings", "causal", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown setting 'causal'"):
        oracle.train_oracle("causal", 0, steps=1)
    with pytest.raises(ValueError, match="steps >= 1"):
        oracle.train_oracle("equal", 0, steps=0)


def test_style_directions_are_generalised_eigenvectors(oracle):
    from mm_data.identifiability import LatentConfig, LatentModel

    model = LatentModel(LatentConfig(seed=1, statistical_dependence=True))
    r, u = oracle.style_directions(model)
    assert torch.allclose(u.norm(dim=0), torch.ones(5, dtype=torch.float64))
    assert (r[:-1] >= r[1:]).all()
    rayleigh = ((u.T @ model.cov_style) * u.T).sum(1) / ((u.T @ model.cov_style_change) * u.T).sum(
        1
    )
    assert torch.allclose(rayleigh, r, rtol=1e-9)
    # The directions diagonalise both covariances at once.
    cross = u.T @ model.cov_style_change @ u
    assert torch.allclose(
        cross - torch.diag(cross.diagonal()), torch.zeros(5, 5, dtype=torch.float64), atol=1e-9
    )


@pytest.fixture(scope="module")
def directions():
    return load_app_script("identifiability", "latent_directions", kind="experiment")


def test_direction_r2_is_a_rotation_of_the_per_coordinate_fit(directions):
    """Least squares commutes with an orthogonal rotation of the targets, so the SST-weighted
    R^2 over eigendirections equals the SST-weighted R^2 over coordinates."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(800, 3)) @ rng.normal(size=(3, 3))
    h = np.c_[y[:, :2] + 0.3 * rng.normal(size=(800, 2)), rng.normal(size=800)]
    u = np.linalg.eigh(np.cov(y[:400].T))[1]
    by_direction = np.array(directions.direction_r2(h[:400], y[:400], h[400:], y[400:], u))
    by_coordinate = np.array(
        [directions.direction_r2(h[:400], y[:400], h[400:], y[400:], np.eye(3)[:, [j]])[0]
         for j in range(3)]
    )  # fmt: skip
    sst_dir = ((y[400:] @ u - (y[400:] @ u).mean(0)) ** 2).sum(0)
    sst_coord = ((y[400:] - y[400:].mean(0)) ** 2).sum(0)
    assert (sst_dir * by_direction).sum() / sst_dir.sum() == pytest.approx(
        (sst_coord * by_coordinate).sum() / sst_coord.sum(), rel=1e-9
    )
    with pytest.raises(ValueError, match=r"directions must be \[3, K\]"):
        directions.direction_r2(h, y, h, y, np.eye(2))


def test_latent_directions_of_a_run(directions, mlp_run, imgtxt_run):
    run, _ = mlp_run
    rows = directions.main(["--run", str(run), "--samples", "300"])
    assert len(rows) == 2 * (2 + 2)  # two encoders x (2 content + 2 style directions)
    assert _rows(run / "directions.csv")[0].keys() == rows[0].keys()
    assert all(r["r2_linear"] <= 1.0 for r in rows)
    style = [r for r in rows if r["block"] == "s" and r["encoder"] == "hz1"]
    assert style[0]["invariance"] == pytest.approx(0.5**0.5)  # identity covariances
    with pytest.raises(ValueError, match="directions need an mlp run"):
        directions.analyse(imgtxt_run[0])


# ------------------------------------------------------------------------ Table 1 script


def test_table1_runs_rows_seeds_and_intervention_then_resumes(tmp_path):
    """Two rows (one with dependence) x two seeds at a tiny size: the table holds the mean
    and std over seeds of each run's scores, the dependence row its intervention, and a
    second call trains nothing again."""
    table1 = load_app_script("identifiability", "table1", kind="experiment")
    out = tmp_path / "t1"
    argv = ["--out", str(out), "--settings", "original", "--rows", "1,3", "--seeds", "0,1",
            "--jobs", "2", "--device", "cpu",
            "--eval-flags", "--val-samples 80 --test-samples 80 --nonlinear kernel_ridge",
            "--", "--steps", "4", "--batch-size", "16", "--hidden-multipliers", "2,2",
            "--log-every", "2", "--checkpoint-every", "2"]  # fmt: skip
    table = table1.main(argv)
    assert [(e["setting"], e["row"], e["seeds"]) for e in table] == [
        ("original", 1, 2), ("original", 3, 2),
    ]  # fmt: skip
    for row, seed in ((1, 0), (3, 1)):
        config = json.loads(
            (out / "original" / f"row{row}" / f"s{seed}" / "config.json").read_text()
        )
        assert config["shared_encoder"] and config["shared_mixing"] and config["modality_n"] == 0
        assert config["statistical_dependence"] == (row == 3) and config["seed"] == seed
        assert config["style_change_prob"] == (1.0 if row == 1 else 0.75)
    runs = _rows(out / "runs.csv")
    for entry in table:
        for target in ("c", "s"):
            values = [
                np.mean([float(r["r2_nonlinear"]) for r in runs
                         if r["row"] == str(entry["row"]) and r["seed"] == str(seed)
                         and r["target"] == target and r["intervention"] == "False"])
                for seed in (0, 1)
            ]  # fmt: skip
            assert entry[f"{target}_mean"] == pytest.approx(np.mean(values))
            assert entry[f"{target}_std"] == pytest.approx(np.std(values, ddof=1))
        assert "m_mean" not in entry  # no modality-specific dims in the original setting
    assert "int_c_prime_mean" in table[1] and "int_c_mean" not in table[0]
    assert {r["target"] for r in runs if r["intervention"] == "True"} == {
        "c", "c_prime", "s", "s_tilde",
    }  # fmt: skip
    text = (out / "table.md").read_text()
    assert "| 3 | 0.75 | yes | no |" in text and "0.52 +- 0.09" in text  # the paper's value
    assert (out / "table.png").stat().st_size > 1000
    checkpoint = out / "original" / "row1" / "s0" / "checkpoints" / "step_00000004.pt"
    before = checkpoint.stat().st_mtime_ns
    again = table1.main(argv)
    assert checkpoint.stat().st_mtime_ns == before  # nothing retrained
    assert again == table


def test_table1_rejects_bad_rows_and_settings(capsys):
    table1 = load_app_script("identifiability", "table1", kind="experiment")
    for argv, message in ((["--rows", "1,6"], "rows are 1-5"),
                          (["--settings", "paper"], "--settings: choose from"),
                          (["--seeds", "a"], "comma-separated integers")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            table1.parse_args(argv)
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def test_help_and_the_simulation_do_not_import_the_image_models(tmp_path):
    """timm (~25 s to import on a cold CPU) loads only when an image encoder is built."""
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(APP)!r})  # as `python apps/identifiability/train.py` does\n"
        "sys.argv = ['train.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(APP / 'train.py')!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
        "import identifiability_evaluation, identifiability_tasks\n"
        "assert 'timm' not in sys.modules, 'timm imported by the simulation modules'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
