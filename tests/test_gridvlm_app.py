"""apps/gridvlm end to end on a tiny corpus: every stage, eval, probes, the run rules per
stage directory, stage order, bad input, and the token masking and decoding helpers."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import pytest
from app_scripts import load_app_script, sigterm_once_logged

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--data.text-train", "48", "--data.image-train", "24", "--data.val", "6", "--data.test", "6",
    "--lm.n-layer", "1", "--lm.n-embd", "32", "--lm.n-head", "2", "--lm.vocab-size", "300",
    "--lm.max-length", "512",
    "--vision.depth", "1", "--vision.width", "32", "--vision.heads", "2", "--vision.embed-dim", "16",
    "--pretrain.epochs", "1", "--sft.epochs", "1", "--vision.epochs", "1", "--vlm.epochs", "1",
    "--pretrain.batch-size", "8", "--sft.batch-size", "8", "--vision.batch-size", "8",
    "--vlm.batch-size", "8", "--eval-grids", "3", "--threads", "1", "--device", "cpu",
    "--log-every", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gridvlm-data") / "data"


def _train(data_root: Path, args: list[str]):
    return load_app_script("gridvlm", "train").main([*TINY, "--data.root", str(data_root), *args])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, data_root) -> Path:
    """A run directory with every stage finished, evaluated and probed."""
    out = tmp_path_factory.mktemp("gridvlm") / "run"
    for stage in ("pretrain", "sft", "vision", "vlm"):
        _train(data_root, ["--stage", stage, "--out", str(out)])
    _train(data_root, ["--stage", "vlm", "--vlm.encoder", "onehot", "--tag", "onehot",
                       "--out", str(out)])  # fmt: skip
    load_app_script("gridvlm", "eval").main(["--run", str(out), "--grids", "3", "--threads", "1"])
    for stage in ("vlm", "vlm-onehot"):
        load_app_script("gridvlm", "probe").main(
            ["--run", str(out), "--stage", stage, "--train-grids", "24", "--test-grids", "6"]
        )
    return out


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_every_stage_writes_its_directory_and_eval_the_contract(pipeline):
    for stage in ("pretrain", "sft", "vision", "vlm", "vlm-onehot"):
        d = pipeline / stage
        for name in ("config.json", "run.json", "metrics.jsonl", "summary.json"):
            assert (d / name).is_file(), (stage, name)
        assert (d / "model").is_dir() and list((d / "checkpoints").glob("*.pt")), stage
        assert json.loads((d / "config.json").read_text())["out"] == str(d)
    summary = json.loads((pipeline / "summary.json").read_text())
    for key in ("text_accuracy", "image_accuracy", "image_accuracy_onehot", "vlm_text_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert len(summary["image_per_position"]) == 3 and len(summary["text_per_position"][0]) == 3
    assert len(summary["text_forced_by_question"]) == 9  # v3: nine questions per grid
    assert (pipeline / "accuracy_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    vlm = json.loads((pipeline / "vlm" / "summary.json").read_text())
    assert vlm["encoder"] == "clip" and vlm["image_tokens"] == 36  # 54 px / 9 px patches
    assert json.loads((pipeline / "vlm-onehot" / "summary.json").read_text())["image_tokens"] == 9


def test_probes_report_every_position_and_the_one_hot_tokens_are_read_exactly(pipeline):
    onehot = json.loads((pipeline / "vlm-onehot" / "probe.json").read_text())
    assert len(onehot["per_position"]["encoder"]) == 9
    # one-hot codes are linearly separable: only a class never seen at a position in the 24
    # training grids is missed (each is seen with probability 1 - 0.9^24 = 0.92)
    assert onehot["mean"]["encoder"] >= 0.75
    clip = json.loads((pipeline / "vlm" / "probe.json").read_text())
    for name in ("encoder", "projector"):
        assert all(0.0 <= a <= 1.0 for a in clip["per_position"][name])
    assert (pipeline / "vlm" / "probe.png").is_file()


def test_a_stage_needs_the_finished_stage_before_it(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        _train(data_root, ["--stage", "sft", "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--stage sft needs the pretrain stage" in err and "--stage pretrain" in err
    assert not out.exists()
    (out / "pretrain").mkdir(parents=True)  # started, never finished
    with pytest.raises(SystemExit) as info:
        _train(data_root, ["--stage", "sft", "--out", str(out)])
    assert "unfinished" in capsys.readouterr().err and info.value.code == 2


def test_vlm_needs_the_vision_stage_unless_it_reads_one_hot_cells(pipeline, tmp_path, capsys,
                                                                  data_root):  # fmt: skip
    out = tmp_path / "run"
    for stage in ("pretrain", "sft"):
        shutil.copytree(pipeline / stage, out / stage)
    with pytest.raises(SystemExit) as info:
        _train(data_root, ["--stage", "vlm", "--out", str(out)])
    assert info.value.code == 2 and "needs the vision stage" in capsys.readouterr().err
    assert not (out / "vlm").exists()


def test_run_rules_hold_per_stage_directory(pipeline, data_root, capsys):
    stage = pipeline / "pretrain"
    before = _snapshot(stage)
    with pytest.raises(SystemExit) as info:
        _train(data_root, ["--stage", "pretrain", "--out", str(pipeline)])
    assert info.value.code == 2 and "already holds a run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _train(data_root, ["--stage", "pretrain", "--out", str(pipeline), "--resume",
                           "--pretrain.lr", "0.001"])  # fmt: skip
    assert info.value.code == 2
    assert "--pretrain.lr: saved 0.003, now 0.001" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _train(data_root, ["--stage", "pretrain", "--out", str(pipeline), "--pretrain.lr", "-1"])
    assert info.value.code == 2 and "--pretrain.lr -1" in capsys.readouterr().err
    assert _snapshot(stage) == before


def test_resume_extends_a_stage_and_loggers_write_tensorboard(pipeline, tmp_path, data_root):
    out = tmp_path / "run"
    shutil.copytree(pipeline / "pretrain", out / "pretrain")
    _train(data_root, ["--stage", "pretrain", "--out", str(out), "--resume",
                       "--pretrain.epochs", "2", "--loggers", "tensorboard"])  # fmt: skip
    lines = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 6, 8, 10, 12]  # 6 steps an epoch
    assert list((out / "pretrain" / "tensorboard").glob("events.out.tfevents.*"))
    record = json.loads((out / "pretrain" / "run.json").read_text())
    assert record["resumes"][-1]["changed"]["--pretrain.epochs"] == [1, 2]


def test_eval_every_decodes_the_validation_grids_between_epochs(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    _train(data_root, ["--stage", "pretrain", "--out", str(out), "--eval-every", "4"])
    lines = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    scored = [r["step"] for r in lines if "accuracy" in r]
    assert scored == [4, 6]  # every 4 steps and at the end of the 6-step epoch
    for r in (r for r in lines if "accuracy" in r):
        assert all(0.0 <= r[k] <= 1.0 for k in ("accuracy", "forced_first", "forced_last")), r
    evaluate = load_app_script("gridvlm", "eval").main
    with pytest.raises(SystemExit) as stop:  # no sft/ yet
        evaluate(["--run", str(out), "--grids", "2", "--threads", "1"])
    assert stop.value.code == 2 and "sft" in capsys.readouterr().err
    summary = evaluate(
        ["--run", str(out), "--grids", "2", "--threads", "1", "--lm-stage", "pretrain"]
    )
    assert 0.0 <= summary["text_accuracy"] <= 1.0 and "image_accuracy" not in summary
    assert summary["lm_stage"] == "pretrain"
    # the pre-trained LM's evaluation has its own files: RUN/summary.json stays the sft one
    assert json.loads((out / "summary-pretrain.json").read_text()) == summary
    assert (out / "accuracy_heatmap-pretrain.png").stat().st_size > 0
    assert not (out / "summary.json").exists() and not (out / "accuracy_heatmap.png").exists()


def test_sigterm_mid_stage_then_resume_equals_the_uninterrupted_stage(tmp_path, data_root):
    script = [sys.executable, str(ROOT / "apps" / "gridvlm" / "train.py"), *TINY,
              "--data.root", str(data_root), "--stage", "pretrain", "--pretrain.epochs", "3"]  # fmt: skip
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    import subprocess

    subprocess.run([*script, "--out", str(reference)], check=True, capture_output=True)
    code, err = sigterm_once_logged(script, interrupted, step=8,
                                    metrics=interrupted / "pretrain" / "metrics.jsonl")  # fmt: skip
    assert code == 128 + signal.SIGTERM, err
    assert not (interrupted / "pretrain" / "summary.json").exists()
    subprocess.run([*script, "--out", str(interrupted), "--resume"], check=True,
                   capture_output=True)  # fmt: skip
    got = json.loads((interrupted / "pretrain" / "summary.json").read_text())
    want = json.loads((reference / "pretrain" / "summary.json").read_text())
    for key in ("train_loss", "accuracy", "in_grid_rate", "steps"):
        assert got[key] == want[key], key


def test_bad_grids_and_sources_exit_2_naming_the_value(tmp_path, capsys):
    root = tmp_path / "data"
    with pytest.raises(SystemExit) as info:
        _train(root, ["--out", str(tmp_path / "a"), "--data.canvas-px", "27",
                      "--vision.patch-px", "9"])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "canvas" in err and "27" in err
    with pytest.raises(SystemExit) as info:
        _train(root, ["--out", str(tmp_path / "b"), "--data.subset-size", "12"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "12" in err and "10" in err  # 12 objects per grid, the digits have 10 classes
    with pytest.raises(SystemExit) as info:
        _train(root, ["--out", str(tmp_path / "c"), "--data.canvas-px", "50"])
    assert info.value.code == 2 and "--vision.patch-px 9" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _train(root, ["--out", str(tmp_path / "d"), "--stage", "vlm", "--vlm.onehot-positions"])
    assert info.value.code == 2 and "--vlm.encoder onehot" in capsys.readouterr().err
    for name in "abd":
        assert not (tmp_path / name).exists()


def test_a_resumed_vlm_refuses_a_vision_stage_of_another_width(pipeline, tmp_path, data_root,
                                                               capsys):  # fmt: skip
    out = tmp_path / "run"
    for stage in ("sft", "vision", "vlm"):
        shutil.copytree(pipeline / stage, out / stage)
    record = out / "vlm" / "encoder.json"
    saved = json.loads(record.read_text())
    record.write_text(json.dumps({**saved, "width": saved["width"] + 1}))
    with pytest.raises(SystemExit) as info:
        _train(data_root, ["--stage", "vlm", "--out", str(out), "--resume"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"width {saved['width'] + 1}" in err and f"gives width {saved['width']}" in err


# ------------------------------------------------------------------ masking and decoding


@pytest.fixture(scope="module")
def tasks(pipeline):
    load_app_script("gridvlm", "train")  # puts apps/gridvlm on sys.path
    import gridvlm_tasks

    return gridvlm_tasks


def test_answers_only_labels_are_exactly_the_answer_tokens(pipeline, tasks, data_root):
    from mm_data.grids import GridDataset

    tok = tasks.load_tokenizer(pipeline / "sft" / "tokenizer")
    record = GridDataset(data_root / "text-v3", "train").records[0]
    ids, labels = tasks.encode_record(tok, record, "answers")
    kept = [t for t in labels if t != tasks.IGNORE]
    answers = [t for _, a in record["qa"] for t in tok.encode(a, add_special_tokens=False)]
    assert kept == [*answers, tok.eos_token_id]
    assert ids.count(tok.eos_token_id) == 1  # no start token by default (GPT-2), one final eos
    assert tok.decode(ids[:-1]) == record["full_text"]  # the segments rebuild the text
    full, full_labels = tasks.encode_record(tok, record, "all")
    assert full == ids and full_labels == ids
    _, orig = tasks.encode_record(tok, record, "all_but_questions")
    prompt = tok.encode(record["prompt_text"])
    assert orig[: len(prompt)] == prompt  # the original kept the grid and instruction in the loss
    masked = sum(len(tok.encode(q, add_special_tokens=False)) for q, _ in record["qa"])
    assert orig.count(tasks.IGNORE) == masked


def test_lm_bos_starts_training_sequences_and_decoding_prompts_with_one_start_token(
    tmp_path, data_root
):
    from transformers import AutoModelForCausalLM

    from mm_data.grids import GridDataset

    out = tmp_path / "run"
    _train(data_root, ["--stage", "pretrain", "--out", str(out), "--lm.bos"])
    load_app_script("gridvlm", "train")
    import gridvlm_tasks as tasks

    tok = tasks.load_tokenizer(out / "pretrain" / "tokenizer")  # the saved tokenizer adds it
    record = GridDataset(data_root / "text-v3", "val").records[0]
    ids, labels = tasks.encode_record(tok, record, "all")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 2  # start + final eos
    assert tok.decode(ids[1:-1]) == record["full_text"] and labels == ids
    prompts, asked = tasks.cell_prompts(tok, [record], ["zero"] * 10)
    r, c = record["questions"][0]
    k = next(i for i, a in enumerate(asked) if a["position"] == (r, c))
    assert ids[: len(prompts[k])] == prompts[k]  # decoding sees what training saw
    assert all(p[0] == tok.bos_token_id and p.count(tok.bos_token_id) == 1 for p in prompts)
    lm = AutoModelForCausalLM.from_pretrained(str(out / "pretrain" / "model"))
    result = tasks.decode_accuracy(lm, tok, [record], [str(i) for i in range(10)])
    assert len(result["examples"]) == 5  # decodes with the start token in the prompts


def test_decoding_prompts_are_the_training_prefixes(pipeline, tasks, data_root):
    """A cell's prompt is token for token the training sequence up to that answer."""
    from mm_data.grids import GridDataset

    tok = tasks.load_tokenizer(pipeline / "sft" / "tokenizer")
    record = GridDataset(data_root / "text-v3", "val").records[0]
    ids, _ = tasks.encode_record(tok, record, "answers")
    prompts, asked = tasks.cell_prompts(tok, [record], ["zero"] * 10)
    r, c = record["questions"][0]
    k = next(i for i, a in enumerate(asked) if a["position"] == (r, c))
    assert ids[: len(prompts[k])] == prompts[k]


def test_batched_text_decoding_equals_one_prompt_at_a_time(pipeline, tasks, data_root):
    from transformers import AutoModelForCausalLM

    from mm_data.grids import GridDataset

    tok = tasks.load_tokenizer(pipeline / "sft" / "tokenizer")
    lm = AutoModelForCausalLM.from_pretrained(str(pipeline / "sft" / "model"))
    records = tasks.eval_records(GridDataset(data_root / "text-v3", "val"), 2)
    names = [str(i) for i in range(10)]
    batched = tasks.decode_accuracy(lm, tok, records, names, batch_size=18)
    alone = tasks.decode_accuracy(lm, tok, records, names, batch_size=1)
    assert batched["per_position"] == alone["per_position"]
    assert batched["examples"] == alone["examples"]


def _segments(tok, record) -> tuple[list[int], list[range]]:
    """The training sequence built segment by segment, with each answer's token range."""
    ids = tok.encode(record["prompt_text"])
    spans = []
    for question, answer in record["qa"]:
        ids += tok.encode(question, add_special_tokens=False)
        piece = tok.encode(answer, add_special_tokens=False)
        spans.append(range(len(ids), len(ids) + len(piece)))
        ids += piece
    return ids, spans


def test_forced_accuracy_equals_reading_each_answer_token_by_token(pipeline, tasks, data_root):
    import torch
    from transformers import AutoModelForCausalLM

    from mm_data.grids import GridDataset

    tok = tasks.load_tokenizer(pipeline / "pretrain" / "tokenizer")
    lm = AutoModelForCausalLM.from_pretrained(str(pipeline / "pretrain" / "model")).eval()
    records = GridDataset(data_root / "text-v3", "val").records[:4]
    expected = [[] for _ in records[0]["qa"]]
    for record in records:
        ids, spans = _segments(tok, record)
        for k, span in enumerate(spans):
            with torch.no_grad():  # one unpadded sequence per answer token
                guesses = [int(lm(input_ids=torch.tensor([ids[:t]])).logits[0, -1].argmax())
                           for t in span]  # fmt: skip
            expected[k].append(guesses == ids[span.start : span.stop])
    got = tasks.forced_accuracy(lm, tok, records, batch_size=3)  # padded batches
    assert got["by_question"] == pytest.approx([sum(e) / len(e) for e in expected])
    assert got["first"] == got["by_question"][0] and got["last"] == got["by_question"][-1]


def test_forced_accuracy_scores_the_prediction_of_each_answer_token(pipeline, tasks, data_root):
    """A stand-in LM that predicts the true next token except for tokens at positions 1 mod 5:
    an answer is right iff none of its tokens sits at such a position."""
    import torch

    from mm_data.grids import GridDataset

    tok = tasks.load_tokenizer(pipeline / "pretrain" / "tokenizer")

    class PeekMostly(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            following = torch.roll(input_ids, -1, dims=1)
            logits = torch.nn.functional.one_hot(following, len(tok)).float()
            wrong = (torch.arange(input_ids.shape[1]) + 1) % 5 == 1  # predicting those tokens
            logits[:, wrong] = logits[:, wrong].roll(1, dims=-1)
            return type("Out", (), {"logits": logits})

    records = GridDataset(data_root / "text-v3", "val").records[:5]
    expected = [[] for _ in records[0]["qa"]]
    for record in records:
        for k, span in enumerate(_segments(tok, record)[1]):
            expected[k].append(all(t % 5 != 1 for t in span))
    got = tasks.forced_accuracy(PeekMostly(), tok, records, batch_size=2)
    assert got["by_question"] == pytest.approx([sum(e) / len(e) for e in expected])
    assert 0.0 < sum(got["by_question"]) < len(expected)  # some answers right, some wrong
    assert tasks.answer_spans([-100, 5, 6, -100, 7, 0]) == [range(1, 3), range(4, 5)]


def test_a_vlm_on_other_grids_builds_its_corpus_on_a_fresh_data_root(pipeline, tmp_path):
    """--vlm.grids names a grid config whose data does not exist yet: it is written (with
    the --data.config image grids the stage validates on) and the stage trains."""
    out = tmp_path / "run"
    for stage in ("pretrain", "sft"):
        shutil.copytree(pipeline / stage, out / stage)
    fresh = tmp_path / "fresh-data"
    _train(fresh, ["--stage", "vlm", "--vlm.encoder", "onehot", "--vlm.grids", "qa3",
                   "--tag", "qa3", "--out", str(out)])  # fmt: skip
    summary = json.loads((out / "vlm-qa3" / "summary.json").read_text())
    assert summary["grids"] == "qa3" and 0.0 <= summary["accuracy"] <= 1.0
    assert any(fresh.rglob("*.jsonl"))  # the corpus was generated there


# ------------------------------------------------------------------ the study script


def test_run_all_tables_every_seed_with_its_spread_and_redoes_nothing(pipeline, data_root,
                                                                      tmp_path, capsys):  # fmt: skip
    """experiments/gridvlm/run_all.py: seed 0 reuses a finished run (nothing retrained),
    seed 1 trains every stage; the table is the mean and sample std over the two seeds'
    eval summaries, and a second call runs no command at all."""
    import csv
    import statistics

    study = load_app_script("gridvlm", "run_all", kind="experiment")
    out = tmp_path / "study"
    for stage in ("pretrain", "sft", "vision", "vlm", "vlm-onehot"):
        shutil.copytree(pipeline / stage, out / "s0" / stage)
    skip = "onehot_pos,qa3,images_third,single"
    args = ["--seeds", "0,1", "--grids", "3", "--skip", skip, "--probe-train-grids", "24",
            "--probe-test-grids", "6", "--out", str(out), "--",
            *TINY, "--data.root", str(data_root)]  # fmt: skip
    study.main(args)
    printed = capsys.readouterr().out
    trained = [line for line in printed.splitlines() if line.startswith("+") and "train.py" in line]
    assert all("--seed 1" in line for line in trained) and len(trained) == 5
    for seed in (0, 1):
        assert json.loads((out / f"s{seed}" / "summary.json").read_text())["grids"] == 3
        assert (out / f"s{seed}" / "vlm-onehot" / "probe.json").is_file()
    per_seed = {int(r["seed"]): r for r in csv.DictReader((out / "results.csv").open())}
    table = {r["key"]: r for r in csv.DictReader((out / "table.csv").open())}
    for key in ("text_accuracy", "image_accuracy", "image_accuracy_onehot", "probe_vlm_encoder"):
        column = key if key in per_seed[0] else f"{key}_mean"
        values = [float(per_seed[s][column]) for s in (0, 1)]
        assert float(table[key]["mean"]) == pytest.approx(statistics.fmean(values))
        assert float(table[key]["std"]) == pytest.approx(statistics.stdev(values))
        assert table[key]["n"] == "2"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["text_accuracy_mean"] == pytest.approx(float(table["text_accuracy"]["mean"]))
    for name in ("accuracy.png", "probes.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    study.main(args)  # everything finished: no train, eval or probe command again
    assert "+ " not in capsys.readouterr().out


def test_run_all_rejects_bad_seeds_and_counts(tmp_path, capsys):
    study = load_app_script("gridvlm", "run_all", kind="experiment")
    for bad, flag in ((["--seeds", "0,x"], "--seeds"), (["--seeds", "1,1"], "--seeds"),
                      (["--jobs", "0"], "--jobs"), (["--skip", "vit"], "--skip"),
                      (["--probe-train-grids", "0"], "--probe-train-grids")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            study.main([*bad, "--out", str(tmp_path / "s")])
        assert info.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
