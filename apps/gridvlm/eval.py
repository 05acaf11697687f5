"""Text vs image: the same grids answered by the LM from text and by the VLM from the picture.

    uv run apps/gridvlm/eval.py --run runs/gridvlm                 # 250 validation grids
    uv run apps/gridvlm/eval.py --run runs/gridvlm --split test --grids 100
    uv run apps/gridvlm/eval.py --run runs/gridvlm --lm-stage pretrain   # before sft

Every cell of every grid is asked alone ("What object is in row r, column c?" after the
grid, no earlier Q/A) and answered by greedy decoding (5 new tokens; the answer is the
first line after "A:"). Scored: exact-match accuracy overall and per grid position, and
the share of answers that name an object of the grid. Models: the SFT LM (with
`--lm-stage pretrain` the pre-trained one; `lm_stage` in the summary) on the text form
(`text_accuracy`; also, reading each grid whole with the true answers as in training,
its teacher-forced accuracy by question index, `text_forced_by_question`: rising with the
index when the LM eliminates objects already named instead of reading the cell), every
VLM stage (vlm/, vlm-<tag>/) on the image form
(`image_accuracy`, `image_accuracy_<tag>`) and its own LM on the text form
(`vlm_text_accuracy[_<tag>]`). Writes RUN/summary.json, RUN/eval_config.json and
RUN/accuracy_heatmap.png (one panel per model); with `--lm-stage pretrain` the same files
named summary-pretrain.json, eval_config-pretrain.json and accuracy_heatmap-pretrain.png,
so scoring the pre-trained LM never replaces the evaluation of the fine-tuned one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gridvlm_config import EvalConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(EvalConfig, argv, description=__doc__)
    return evaluate(cfg)


def _vlm_stages(run: Path) -> list[Path]:
    """Finished VLM stage directories of a run: vlm/ first, then vlm-<tag>/ sorted."""
    found = [d for d in sorted(run.glob("vlm*")) if (d / "model").is_dir()]
    return sorted(found, key=lambda d: (d.name != "vlm", d.name))


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    import torch
    from gridvlm_config import GridVLMConfig
    from gridvlm_stages import visual_inputs
    from gridvlm_tasks import (
        MODEL_DIR,
        TOKENIZER_DIR,
        decode_accuracy,
        ensure_corpus,
        eval_records,
        fail,
        forced_accuracy,
        load_tokenizer,
        require_finished,
    )
    from transformers import AutoModelForCausalLM

    from mm_data.grids import GridDataset
    from mm_eval.grids import plot_position_heatmap
    from mm_models.gridvlm import GridVLM
    from mm_train import atomic_write_json, load_config, resolve_device, save_config

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.run)
    lm_dir = require_finished(run, cfg.lm_stage, "eval")
    train_cfg = load_config(GridVLMConfig, lm_dir / "config.json")
    corpus = ensure_corpus(train_cfg.data)
    device = resolve_device(cfg.device)
    text_set = GridDataset(corpus.text_root, cfg.split)
    text_records = eval_records(text_set, cfg.grids)
    if len(text_records) < cfg.grids:
        fail(f"--grids {cfg.grids}: the {cfg.split} split has only {len(text_records)} grids")

    def score(model, tokenizer, records, visual=None) -> dict[str, Any]:
        return decode_accuracy(model, tokenizer, records, corpus.class_names, visual=visual,
                               device=device, batch_size=cfg.batch_size)  # fmt: skip

    summary: dict[str, Any] = {"split": cfg.split, "grids": cfg.grids, "lm_stage": cfg.lm_stage}
    panels: dict[str, Any] = {}
    tokenizer = load_tokenizer(lm_dir / TOKENIZER_DIR)
    lm = AutoModelForCausalLM.from_pretrained(str(lm_dir / MODEL_DIR)).to(device)
    text = score(lm, tokenizer, text_records)
    summary.update(text_accuracy=text["accuracy"], text_in_grid_rate=text["in_grid_rate"],
                   text_per_position=text["per_position"])  # fmt: skip
    panels["LM, text grid"] = text["per_position"]
    forced = forced_accuracy(lm, tokenizer, text_records, device=device, batch_size=cfg.batch_size)
    summary.update(text_forced_by_question=forced["by_question"],
                   text_forced_first=forced["first"], text_forced_last=forced["last"])  # fmt: skip
    by_question = " ".join(f"{a:.2f}" for a in forced["by_question"])
    print(f"text ({cfg.lm_stage} LM): accuracy {text['accuracy']:.3f}; "
          f"teacher-forced by question index {by_question}")  # fmt: skip

    image_set = GridDataset(corpus.image_root, cfg.split)
    image_records = eval_records(image_set, cfg.grids)
    for stage in _vlm_stages(run):
        stage_cfg = load_config(GridVLMConfig, stage / "config.json")
        suffix = "" if stage.name == "vlm" else "_" + stage.name.removeprefix("vlm-")
        model = GridVLM.from_pretrained(stage / MODEL_DIR).to(device)
        visual = visual_inputs(stage_cfg, image_set.root, image_records)
        image = score(model, tokenizer, image_records, visual)
        own_text = score(model.lm, tokenizer, text_records)
        summary.update({
            f"image_accuracy{suffix}": image["accuracy"],
            f"image_in_grid_rate{suffix}": image["in_grid_rate"],
            f"image_per_position{suffix}": image["per_position"],
            f"vlm_text_accuracy{suffix}": own_text["accuracy"],
        })  # fmt: skip
        panels[f"{stage.name} ({stage_cfg.vlm.encoder}), image"] = image["per_position"]
        print(f"image ({stage.name}, {stage_cfg.vlm.encoder} encoder): accuracy "
              f"{image['accuracy']:.3f}; its LM on text {own_text['accuracy']:.3f}")  # fmt: skip
    if "image_accuracy" not in summary:
        print(f"note: no finished vlm/ stage in {run}: image_accuracy not measured",
              file=sys.stderr)  # fmt: skip
    tag = "" if cfg.lm_stage == "sft" else f"-{cfg.lm_stage}"
    heatmap, summary_path = run / f"accuracy_heatmap{tag}.png", run / f"summary{tag}.json"
    plot_position_heatmap(panels, heatmap,
                          title=f"accuracy per grid position ({cfg.split}, {cfg.grids} grids)")  # fmt: skip
    save_config(cfg, run / f"eval_config{tag}.json")
    atomic_write_json(summary_path, summary)
    print(f"wrote {summary_path} and {heatmap}")
    return summary


if __name__ == "__main__":
    main()
