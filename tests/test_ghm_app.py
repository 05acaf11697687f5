"""End-to-end tests of apps/ghm on tiny trees (seconds on CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from app_scripts import load_app_script

from mm_data.ghm.additive import ALPHAS

APP = Path(__file__).resolve().parents[1] / "apps" / "ghm"
TINY = [
    "--n-layer", "2", "--n-child", "2", "--vocab", "3", "--d-model", "16", "--depth", "1",
    "--batch-size", "8", "--bayes-samples", "200", "--log-every", "2", "--threads", "1",
    "--device", "cpu", "--lr", "1e-3",
]  # fmt: skip


def _load(name: str):
    return load_app_script("ghm", name)


@pytest.fixture(scope="module")
def train():
    return _load("train").main


@pytest.fixture(scope="module")
def clip_run(train, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    summary = train([*TINY, "--steps", "6", "--checkpoint-every", "3", "--out", str(out)])
    return out, summary


def test_clip_run_writes_the_contract(clip_run):
    out, summary = clip_run
    written = json.loads((out / "summary.json").read_text())
    for key in ("risk", "bayes_risk", "excess_risk"):
        assert isinstance(written[key], float)
    assert written["excess_risk"] == pytest.approx(written["risk"] - written["bayes_risk"])
    assert written["risk"] == summary["risk"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6]
    assert json.loads((out / "config.json").read_text())["task"] == "clip"
    assert (out / "checkpoints").is_dir()


def test_resume_ends_with_the_same_risk_and_weights(train, clip_run, tmp_path):
    out, summary = clip_run
    # Train 3 steps, then resume to 6 from the step-3 checkpoint: same result as 6 at once.
    part = tmp_path / "part"
    train([*TINY, "--steps", "6", "--checkpoint-every", "3", "--out", str(part)])
    full_state = torch.load(out / "checkpoints" / "step_00000006.pt", weights_only=True)
    ckpts = sorted((part / "checkpoints").glob("step_*.pt"))
    ckpts[-1].unlink()  # as if killed after the step-3 checkpoint
    (part / "checkpoints" / "latest").write_text(ckpts[0].name)
    resumed = train(
        [*TINY, "--steps", "6", "--checkpoint-every", "3", "--out", str(part), "--resume"]
    )
    assert resumed["risk"] == summary["risk"]
    state = torch.load(part / "checkpoints" / "step_00000006.pt", weights_only=True)
    for name, value in full_state["model"].items():
        assert torch.equal(value, state["model"][name]), name


@pytest.mark.parametrize("task", ["dns", "nwp"])
def test_joint_tasks_run(train, task, tmp_path):
    summary = train([*TINY, "--task", task, "--steps", "2", "--out", str(tmp_path)])
    assert summary["bayes_risk"] > 0 and summary["risk"] > 0


@pytest.mark.parametrize("task", ["sdns", "snwp"])
def test_sequential_tasks_use_the_clip_run(train, clip_run, task, tmp_path):
    out, _ = clip_run
    summary = train(
        [*TINY, "--task", task, "--steps", "2", "--clip-run", str(out), "--out", str(tmp_path)]
    )
    assert summary["risk"] > 0


def test_sequential_task_rejects_another_tree_shape(train, clip_run, tmp_path, capsys):
    out, _ = clip_run
    args = [*TINY, "--task", "sdns", "--steps", "2", "--clip-run", str(out), "--out", str(tmp_path)]
    args[args.index("--n-child") + 1] = "3"
    with pytest.raises(SystemExit) as info:
        train(args)
    assert info.value.code == 2
    assert "n_child=2, this run has n_child=3" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_sequential_task_needs_a_clip_run(train, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train([*TINY, "--task", "snwp", "--steps", "2", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "--task snwp needs --clip-run" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--p", "1.5", "--p 1.5: must be in [0, 1]"),
        ("--n-child", "0", "--n-child 0: must be >= 1"),
        ("--embed-std", "0", "--embed-std 0: must be > 0"),
        ("--steps", "0", "--steps 0: must be >= 1"),
    ],
)
def test_bad_values_exit_2_naming_the_flag_before_writing(
    train, tmp_path, capsys, flag, value, message
):
    out = tmp_path / "run"
    args = [*TINY, "--steps", "2", "--out", str(out), flag, value]  # the last flag wins
    with pytest.raises(SystemExit) as info:
        train(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_shallow_variant_has_one_block_whatever_the_depth():
    tasks = _load("ghm_tasks")
    deep = tasks.GHMAppConfig(depth=3, d_model=16, n_layer=2, n_child=2, vocab=3)
    shallow = tasks.GHMAppConfig(
        depth=3, d_model=16, n_layer=2, n_child=2, vocab=3, variant="shallow"
    )
    assert len(tasks.build_model(deep).text_encoder.transformer.blocks) == 3
    assert len(tasks.build_model(shallow).text_encoder.transformer.blocks) == 1


@pytest.mark.parametrize("task", ["clip", "dns", "nwp"])
def test_guided_variant_adds_a_penalty(train, tmp_path, task):
    args = ["--task", task, "--variant", "guided", "--depth", "2", "--steps", "2"]
    train([*TINY, *args, "--out", str(tmp_path)])
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["guided_penalty"] > 0 and logged["task_loss"] > 0


def test_guided_dns_penalty_matches_a_per_leaf_loop():
    """The dns penalty = lam * sum over guided layers l, leaves t of the squared distance
    between channels [l*V, (l+1)*V) and the BP message of t's ancestor at level L-1-l,
    text tokens against text messages and image tokens against noisy-image messages."""
    from mm_data.ghm import level_messages, sample_task_batch

    tasks = _load("ghm_tasks")
    cfg = tasks.GHMAppConfig(
        task="dns", variant="guided", depth=2, d_model=16, n_layer=2, n_child=2, vocab=3,
        guided_lambda=0.5, batch_size=4,
    )  # fmt: skip
    ghm, model = tasks.build_ghm(cfg, torch.device("cpu")), tasks.build_model(cfg)
    batch = sample_task_batch(ghm, "dns", 4, torch.Generator().manual_seed(0))
    loss, metrics = tasks.make_step_fn(cfg, ghm, None)(model, batch)
    _, hidden = model(batch.noisy_image, batch.text, return_hidden=True)
    text_msg = level_messages(ghm.text, batch.text)
    image_msg = level_messages(ghm.image, noisy=batch.noisy_image, sigma=batch.sigma)
    n_leaves, expected = 4, 0.0
    for layer in range(2):
        level = 1 - layer
        for leaf in range(n_leaves):
            node = leaf // 2 ** (2 - level)
            for tokens, msg in ((model.text_slice, text_msg), (model.image_slice, image_msg)):
                h = hidden[layer][:, tokens][:, leaf, layer * 3 : (layer + 1) * 3]
                expected += float((h - msg[level][:, node]).detach().pow(2).sum()) / 4
    assert metrics["guided_penalty"] == pytest.approx(0.5 * expected, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(
        metrics["task_loss"] + metrics["guided_penalty"], rel=1e-6
    )


@pytest.mark.parametrize("task", ["sdns", "snwp"])
def test_guided_is_rejected_for_the_frozen_embedding_tasks(clip_run, train, tmp_path, capsys, task):
    args = ["--task", task, "--variant", "guided", "--clip-run", str(clip_run[0])]
    with pytest.raises(SystemExit) as info:
        train([*TINY, *args, "--steps", "2", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "--variant guided applies to the tasks" in capsys.readouterr().err


def test_eval_bayes_contract(tmp_path):
    evaluate = _load("eval").main
    args = ["--bayes", "--task", "zsc", "--p", "0.3", "--samples", "300", "--device", "cpu"]
    summary = evaluate(
        [*args, "--n-layer", "2", "--n-child", "2", "--vocab", "3", "--out", str(tmp_path)]
    )
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["bayes_risk"] == summary["bayes_risk"]
    assert 0 < written["bayes_risk"] < torch.log(torch.tensor(3.0)) + 1e-6  # beats chance CE


def test_eval_zero_shot_and_ood_on_a_clip_run(clip_run, tmp_path):
    evaluate = _load("eval").main
    out, _ = clip_run
    evaluate(
        ["--run", str(out), "--zero-shot", "--ood", "--samples", "100", "--m-values", "2,4",
         "--p-values", "0.1,0.2,0.3", "--device", "cpu", "--out", str(tmp_path)]
    )  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"zsc_fit_A", "zsc_fit_B", "ood_learned_excess_p0.1"} <= set(summary)
    # paired samples: at the training p (0.2) misspecified BP is exact BP, to the last bit
    assert summary["ood_misspecified_excess_p0.2"] == 0.0
    assert summary["ood_misspecified_excess_p0.1"] != 0.0
    assert (tmp_path / "zero_shot_vs_m.png").stat().st_size > 0
    assert (tmp_path / "ood_excess_risk.png").stat().st_size > 0


def test_heldout_clip_losses_average_to_the_training_loss(clip_run):
    """Per-sample losses (both directions summed) average to mm_losses' ghm_clip on one
    batch: the reference is the training loss itself."""
    import mm_losses

    ev = _load("ghm_evaluation")
    cfg, model, clip = ev.load_run(clip_run[0], torch.device("cpu"))
    ghm = ev.build_ghm(cfg, torch.device("cpu"))
    scores = ev.score(cfg, model, clip, ghm, 24, 24, torch.Generator().manual_seed(3))
    batch = ev.sample_task_batch(ghm, "clip", 24, torch.Generator().manual_seed(3), k=4)
    with torch.no_grad():
        f_text, f_image = model(batch.text, batch.image)
        reference = mm_losses.build("ghm_clip", num_negatives=4)(f_image, f_text)
    assert scores["model"].shape == (24,)
    torch.testing.assert_close(scores["model"].mean().float(), reference, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def joint_runs(train, tmp_path_factory):
    runs = {}
    for task in ("dns", "nwp"):
        out = tmp_path_factory.mktemp(task)
        train([*TINY, "--task", task, "--steps", "4", "--out", str(out)])
        runs[task] = out
    return runs


@pytest.mark.parametrize("task", ["dns", "nwp"])
def test_eval_run_scores_the_distance_to_bayes(joint_runs, task, tmp_path):
    """risk - Bayes risk = distance to Bayes + a cross term of mean zero: E||f - x||^2 =
    E||f - E[x|.]||^2 + E||E[x|.] - x||^2 (dns), CE(model) = CE(BP) + KL(BP || model) (nwp)."""
    ev = _load("ghm_evaluation")
    cfg, model, clip = ev.load_run(joint_runs[task], torch.device("cpu"))
    ghm = ev.build_ghm(cfg, torch.device("cpu"))
    s = ev.score(cfg, model, clip, ghm, 3000, 500, torch.Generator().manual_seed(0))
    cross = s["model"] - s["bayes"] - s["distance"]
    assert abs(float(cross.mean())) < 4 * ev.standard_error(cross)
    assert (s["distance"] >= -1e-12).all()
    # the distance from a per-sample loop written here
    batch = ev.sample_task_batch(ghm, task, 5, torch.Generator().manual_seed(1))
    one = ev.batch_scores(cfg, model, clip, ghm, batch)
    for b in range(5):
        if task == "dns":
            with torch.no_grad():
                pred = model(batch.noisy_image[b : b + 1], batch.text[b : b + 1])[0].double()
            mean = ev.bayes_denoising_mean(ghm, batch.text[b : b + 1], batch.noisy_image[b : b + 1])
            expected = float(((pred - mean[0].double()) ** 2).sum())
        else:
            with torch.no_grad():
                logits = model(batch.input[b : b + 1], batch.image[b : b + 1])[0].double()
            p = ev.bayes_next_token_log_probs(ghm, batch.image[b : b + 1], batch.text[b : b + 1])
            p = p[0].double().exp()
            q = torch.softmax(logits, -1)
            expected = float(
                sum((p[j] * (p[j] / q[j]).log()).sum() for j in range(len(p))) / len(p)
            )
        assert float(one["distance"][b]) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    summary = _load("eval").main(
        ["--run", str(joint_runs[task]), "--samples", "200", "--device", "cpu",
         "--out", str(tmp_path)]
    )  # fmt: skip
    name = {"dns": "mse_to_bayes_mean", "nwp": "kl_to_bayes"}[task]
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written[name] == summary[name] > 0 and written["bayes_risk"] > 0
    if task == "nwp":
        rows = (tmp_path / "kl_by_position.csv").read_text().splitlines()
        assert len(rows) == 1 + cfg.n_child**cfg.n_layer - 1  # header + one per predicted leaf
        assert (tmp_path / "kl_by_position.png").stat().st_size > 0


@pytest.mark.parametrize("task", ["dns", "nwp"])
def test_eval_ood_on_a_joint_run_pairs_misspecified_bp(joint_runs, task, tmp_path):
    summary = _load("eval").main(
        ["--run", str(joint_runs[task]), "--ood", "--p-values", "0.1,0.2", "--samples", "100",
         "--device", "cpu", "--out", str(tmp_path)]
    )  # fmt: skip
    assert summary["ood_misspecified_excess_p0.2"] == 0.0  # training p: misspecified == exact
    assert summary["ood_misspecified_excess_p0.1"] != 0.0
    header = (tmp_path / "ood.csv").read_text().splitlines()[0]
    name = {"dns": "mse_to_bayes_mean", "nwp": "kl_to_bayes"}[task]
    assert f"learned_{name}" in header and f"misspecified_{name}_stderr" in header


def _eval_exits_2(args, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        _load("eval").main(args)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_eval_rejects_runs_it_cannot_score_before_writing(joint_runs, tmp_path, capsys):
    out = tmp_path / "eval"
    dns = ["--run", str(joint_runs["dns"]), "--out", str(out)]
    err = _eval_exits_2([*dns, "--zero-shot"], capsys)
    assert "--zero-shot needs a clip run; --run" in err and "is a dns run" in err
    err = _eval_exits_2(["--run", str(tmp_path), "--out", str(out)], capsys)
    assert f"--run {tmp_path} has no config.json" in err
    err = _eval_exits_2([*dns, "--compare", str(joint_runs["nwp"])], capsys)
    assert "task=nwp, but --run" in err and "has task=dns" in err
    assert not out.exists()  # checked before anything was written


def test_eval_with_nothing_to_do_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _load("eval").main(["--out", str(tmp_path)])
    assert info.value.code == 2
    assert "nothing to do" in capsys.readouterr().err


def test_summary_records_what_was_trained(clip_run):
    out, summary = clip_run
    assert (summary["d_model"], summary["depth"], summary["lr"]) == (16, 1, 1e-3)
    tasks = _load("ghm_tasks")
    model = tasks.build_model(tasks.run_config(out, "--run"))
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["bayes_samples"] == 200 and summary["global_batch"] == 8


def test_eval_compare_scores_runs_on_the_same_samples(train, clip_run, tmp_path):
    evaluate = _load("eval").main
    base, _ = clip_run
    shallow = tmp_path / "shallow"
    train([*TINY, "--variant", "shallow", "--steps", "4", "--out", str(shallow)])
    args = ["--run", str(base), "--compare", str(shallow), "--samples", "64", "--device", "cpu"]
    summary = evaluate([*args, "--out", str(tmp_path / "cmp")])
    assert summary["compare0_minus_run"] == 0.0 and summary["compare0_minus_run_stderr"] == 0.0
    assert summary["compare_bayes_risk"] == summary["bayes_risk"]  # one set of samples
    assert summary["compare1_minus_run"] != 0.0 and summary["compare1_minus_run_stderr"] > 0
    assert summary["compare0_excess_risk"] == pytest.approx(
        summary["compare0_risk"] - summary["compare_bayes_risk"]
    )
    again = evaluate([*args, "--out", str(tmp_path / "cmp2")])
    assert again == summary  # same seed, same samples
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert len(rows) == 3 and "shallow" in rows[2]
    # the run against itself differs by exactly 0 only if both saw the same samples
    itself = evaluate([*args[:2], "--compare", str(base), *args[4:], "--out", str(tmp_path / "c3")])
    assert (
        itself["compare1_minus_run"] == 0.0 and itself["compare1_risk"] == summary["compare0_risk"]
    )


def test_eval_compare_rejects_a_run_of_another_tree(train, clip_run, tmp_path, capsys):
    other = tmp_path / "other"
    train([*TINY, "--p", "0.3", "--steps", "2", "--out", str(other)])
    err = _eval_exits_2(
        ["--run", str(clip_run[0]), "--compare", str(other), "--samples", "16",
         "--device", "cpu", "--out", str(tmp_path / "cmp")], capsys,
    )  # fmt: skip
    assert f"--compare {other}: p=0.3, but --run" in err and "has p=0.2" in err


def test_figure2_script_sweeps_p_and_plots(tmp_path):
    """experiments/ghm/figure2.py end to end on a tiny tree: one run per (variant, p), a
    zero-shot row per clip run, the CSV matches the runs' summaries, and a rerun reuses them."""
    import csv
    import subprocess

    script = APP.parents[1] / "experiments" / "ghm" / "figure2.py"
    cmd = [sys.executable, str(script), "--variants", "shallow", "--p-values", "0.1,0.3",
           "--steps", "2", "--zsc-m", "2", "--zsc-samples", "40", "--device", "cpu",
           "--out", str(tmp_path), "--", *TINY]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    rows = list(csv.DictReader((tmp_path / "figure2.csv").open()))
    assert {(r["task"], r["variant"], float(r["p"])) for r in rows} == {
        (t, "shallow", p) for t in ("clip", "zsc") for p in (0.1, 0.3)
    }
    for r in rows:
        if r["task"] == "clip":
            run = json.loads(
                (
                    tmp_path / f"clip-{r['variant']}-p{float(r['p']):.2f}" / "summary.json"
                ).read_text()
            )
            assert float(r["risk"]) == pytest.approx(run["risk"])
            assert float(r["bayes_risk"]) == pytest.approx(run["bayes_risk"])
        assert float(r["excess_risk"]) == pytest.approx(float(r["risk"]) - float(r["bayes_risk"]))
    assert (tmp_path / "figure2.png").stat().st_size > 0
    again = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    assert "train.py" not in again.stdout  # every run was reused


def _experiment(name: str):
    return load_app_script("ghm", name, kind="experiment")


def test_additive_gap_script_finds_a_gap_only_on_deep_trees(tmp_path):
    gap = _experiment("additive_gap")
    rows = gap.main(["--trees", "1,3,4", "3,2,6", "--samples", "600", "--out", str(tmp_path)])
    one_level, deep = rows
    assert one_level["alpha"] == 1.0 and abs(one_level["relative_gap"]) < 1e-9
    assert deep["relative_gap"] > 0.02
    assert (tmp_path / "additive_gap.csv").read_text().count("\n") == 3
    with pytest.raises(SystemExit):
        gap.main(["--trees", "3,2", "--out", str(tmp_path)])


def test_depth_effect_scores_every_model_on_the_same_samples(tmp_path, capsys):
    """experiments/ghm/depth_effect.py end to end on a tiny tree: every variant is trained
    and scored with Bayes and the additive baseline on one set of held-out samples, so the
    paired difference is the difference of the two risks; a rerun trains nothing."""
    import csv

    depth = _experiment("depth_effect")
    tiny = TINY[: TINY.index("--depth")] + TINY[TINY.index("--depth") + 2 : TINY.index("--device")]
    tiny += ["--depth", "2"]  # standard: 2 blocks, shallow: 1
    args = ["--seeds", "0,1", "--p-values", "0.3", "--variants", "standard,shallow",
            "--samples", "300", "--fit-samples", "200", "--jobs", "2", "--out", str(tmp_path),
            "--", *tiny, "--steps", "4", "--lr", "0.05"]  # fmt: skip
    summary = depth.main(args)
    first = capsys.readouterr().out
    assert first.count("train.py") == 4  # 2 variants x 2 seeds
    rows = list(csv.DictReader((tmp_path / "depth_effect_runs.csv").open()))
    assert {(r["model"], r["seed"]) for r in rows} == {
        *((v, s) for v in ("standard", "shallow") for s in ("0", "1")),
        ("additive", ""),
    }
    assert len({r["bayes_risk"] for r in rows}) == 1  # one set of samples
    risk = {(r["model"], r["seed"]): float(r["risk"]) for r in rows}
    for r in rows:
        bayes = float(r["bayes_risk"])
        assert float(r["excess"]) == pytest.approx(float(r["risk"]) - bayes)
        assert float(r["relative_excess"]) == pytest.approx(float(r["excess"]) / bayes)
        if r["model"] == "shallow":
            assert float(r["minus_standard"]) == pytest.approx(
                risk[(r["model"], r["seed"])] - risk[("standard", r["seed"])]
            )
            assert float(r["minus_standard_se"]) > 0
    additive = next(r for r in rows if r["model"] == "additive")
    assert float(additive["alpha"]) in ALPHAS
    assert float(additive["excess"]) > 0  # Bayes is the best predictor on any samples
    standard = [float(r["relative_excess"]) for r in rows if r["model"] == "standard"]
    assert summary["standard_excess"] == pytest.approx(sum(standard) / 2)
    assert summary["additive_excess"] == pytest.approx(float(additive["relative_excess"]))
    shallow = [r for r in rows if r["model"] == "shallow"]
    assert summary["shallow_minus_standard"] == pytest.approx(
        sum(float(r["minus_standard"]) for r in shallow) / 2
    )
    assert summary["shallow_minus_standard_se"] == pytest.approx(
        (sum(float(r["minus_standard_se"]) ** 2 for r in shallow)) ** 0.5 / 2
    )
    for name in ("depth_effect.csv", "depth_effect.md", "depth_effect.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert depth.main(args) == summary  # reused runs, same held-out samples
    assert "train.py" not in capsys.readouterr().out
    # one variant alone (e.g. added later): scored on the same samples, no paired column
    alone = tmp_path / "alone"
    (alone / "runs").mkdir(parents=True)
    for seed in (0, 1):
        name = f"p0.30-shallow-seed{seed}"
        (alone / "runs" / name).symlink_to(tmp_path / "runs" / name)
    flags = list(args)
    flags[flags.index("--variants") + 1] = "shallow"
    flags[flags.index("--out") + 1] = str(alone)
    only = depth.main(flags)
    assert "train.py" not in capsys.readouterr().out
    assert only["shallow_excess"] == pytest.approx(summary["shallow_excess"])
    assert only["additive_excess"] == pytest.approx(summary["additive_excess"])
    assert "standard_excess" not in only and "shallow_minus_standard" not in only
    with pytest.raises(SystemExit) as bad:
        depth.main(["--variants", "standard,deep", "--out", str(tmp_path)])
    assert bad.value.code == 2 and "'deep'" in capsys.readouterr().err


@pytest.mark.parametrize("preset", sorted(p.stem for p in (APP / "presets").glob("*.toml")))
def test_every_training_preset_is_a_valid_config(preset):
    from mm_train import parse_config

    tasks = _load("ghm_tasks")
    cfg = parse_config(
        tasks.GHMAppConfig, ["--preset", preset], preset_dir=APP / "presets", exit_on_error=False
    )
    assert cfg.steps > 0 and tasks.learning_rate(cfg) > 0


def test_depth_preset_tree_leaves_room_for_depth():
    """The depth preset's tree: the best additive model is >= 12% above Bayes (the default
    tree: < 10%), on fresh samples with alpha fitted on others."""
    from mm_data.ghm import (
        additive_clip_losses,
        bayes_clip_losses,
        best_additive_alpha,
        sample_clip,
    )
    from mm_train import parse_config

    tasks = _load("ghm_tasks")
    gaps = {}
    for preset in ("depth", "default"):
        cfg = parse_config(
            tasks.GHMAppConfig, ["--preset", preset], preset_dir=APP / "presets",
            exit_on_error=False,
        )  # fmt: skip
        ghm = tasks.build_ghm(cfg, torch.device("cpu"))
        gen = torch.Generator().manual_seed(0)
        alpha = best_additive_alpha(ghm, 1500, gen, k=cfg.num_negatives)
        batch = sample_clip(ghm, 3000, gen, k=cfg.num_negatives)
        bayes = float(bayes_clip_losses(ghm, batch).mean())
        gaps[preset] = float(additive_clip_losses(ghm, batch, alpha).mean()) / bayes - 1
    assert gaps["depth"] >= 0.12 and gaps["default"] < 0.10, gaps
