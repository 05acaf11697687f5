"""The gridvlm app's parts: corpus, stage directories, token masking, models, decoding.

Recipe per stage (train.py): the corpus (written once under --data.root), the stage
directory OUT/<stage>[-tag] under the run rules, the earlier stages it reads, the model,
mm_train.fit, the trained model saved under the stage's model/ and a summary.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gridvlm_config import NEEDS, GridDataOptions, GridVLMConfig

from mm_data.grids import (
    Grid,
    GridDataset,
    grid_config,
    make_source,
    question_text,
    write_grid_dataset,
)
from mm_eval.grids import grid_accuracy, parse_answer

MODEL_DIR = "model"
TOKENIZER_DIR = "tokenizer"
ENCODER_FILE = "encoder.json"  # the vision encoder a vlm run's projector was built for
RUN_FILES = (MODEL_DIR, TOKENIZER_DIR, ENCODER_FILE)
IGNORE = -100
# the text tower of the vision stage's CLIP (a DistilBERT config, WordPiece vocabulary)
CLIP_TEXT = {"dim": 128, "n_layers": 2, "n_heads": 4, "hidden_dim": 256}
CLIP_TEXT_TOKENS = 64
IMAGE_MEAN, IMAGE_STD = 0.5, 0.5


def fail(message: str) -> None:
    """Print ``error: message`` and exit with status 2 (bad input, nothing written)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


# ------------------------------------------------------------------------------ stages


def stage_name(stage: str, tag: str) -> str:
    """Directory name of a stage: ``vlm`` or, with a tag, ``vlm-onehot``."""
    return f"{stage}-{tag}" if tag else stage


def require_finished(root: Path, stage: str, needed_by: str) -> Path:
    """OUT/<stage> of a finished run (summary.json and model/), or exit 2 naming it."""
    directory = root / stage
    how = f"uv run apps/gridvlm/train.py --stage {stage} --out {root}"
    if not directory.is_dir():
        fail(f"--stage {needed_by} needs the {stage} stage in {directory}, which is missing: "
             f"run `{how}` first")  # fmt: skip
    if not (directory / "summary.json").is_file() or not (directory / MODEL_DIR).is_dir():
        fail(f"--stage {needed_by} needs a finished {stage} stage, but {directory} is "
             f"unfinished: continue it with `{how} --resume`")  # fmt: skip
    return directory


def needed_stages(cfg: GridVLMConfig) -> tuple[str, ...]:
    """The earlier stages this stage reads (the one-hot VLM needs no vision stage)."""
    needs = NEEDS[cfg.stage]
    if cfg.stage == "vlm" and cfg.vlm.encoder == "onehot":
        needs = tuple(n for n in needs if n != "vision")
    return needs


# ------------------------------------------------------------------------------ corpus


@dataclass
class Corpus:
    """The text grids of --data.config, the image grids a stage trains on, and the image
    grids of --data.config (validation; the same as image_root unless --vlm.grids differs)."""

    text_root: Path
    image_root: Path
    eval_image_root: Path
    class_names: list[str]


def _render(data: GridDataOptions) -> dict[str, int]:
    return {"cell_px": data.cell_px, "gap_px": data.gap_px, "canvas_px": data.canvas_px}


def ensure_corpus(data: GridDataOptions, image_config: str | None = None) -> Corpus:
    """Write (first use) or check the corpus: text and image grids of --data.config, and
    image grids of ``image_config`` when it differs; exit 2 on a bad or mismatched corpus."""
    image_config = image_config or data.config
    root = Path(data.root)
    try:
        source = make_source(data.source, data.source_root or None)
        overrides = {"subset_size": data.subset_size} if data.subset_size else {}
        write_grid_dataset(root / f"text-{data.config}", grid_config(data.config, **overrides),
                           source, data.text_train, data.val, data.test, seed=data.seed,
                           images=False, **_render(data))  # fmt: skip
        for name in dict.fromkeys((data.config, image_config)):
            write_grid_dataset(root / f"image-{name}", grid_config(name, **overrides), source,
                               data.image_train, data.val, data.test, seed=data.seed,
                               images=True, **_render(data))  # fmt: skip
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(f"--data ({root}): {exc}")
    return Corpus(root / f"text-{data.config}", root / f"image-{image_config}",
                  root / f"image-{data.config}", list(source.class_names))  # fmt: skip


# ------------------------------------------------------------------------- tokens, masks


def encode_record(tokenizer, record: dict[str, Any], loss_on: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a record: prompt, then each question and its answer, then eos.

    Segments are tokenized one by one (the same split decoding uses: prompt + question
    ending in "A:", then the answer); the prompt gets the tokenizer's special tokens (the
    start token of a tokenizer trained with ``add_bos``), the other segments none.
    ``loss_on``: "all" (pre-training: every token), "answers" (answer tokens and the final
    eos), "all_but_questions" (the original's SFT: everything except the question text).
    """
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, in_loss: bool, first: bool = False) -> None:
        piece = tokenizer.encode(text, add_special_tokens=first)
        ids.extend(piece)
        labels.extend(piece if in_loss else [IGNORE] * len(piece))

    add(record["prompt_text"], loss_on in ("all", "all_but_questions"), first=True)
    for prefix, answer in record["qa"]:
        add(prefix, loss_on == "all")
        add(answer, True)
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return ids, labels


class TokenizedGrids(torch.utils.data.Dataset):
    """Pre-tokenized records (and, for the VLM, the image or cell ids of each)."""

    def __init__(self, encoded: list[tuple[list[int], list[int]]], visual: torch.Tensor | None):
        self.encoded, self.visual = encoded, visual

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ids, labels = self.encoded[index]
        item: dict[str, Any] = {"ids": ids, "labels": labels}
        if self.visual is not None:
            item["visual"] = self.visual[index]
        return item


def pad_batch(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ids (pad id), labels (-100) and the attention mask to the longest item."""
    longest = max(len(item["ids"]) for item in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(items), longest), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["ids"])
        ids[row, :n] = torch.tensor(item["ids"])
        labels[row, :n] = torch.tensor(item["labels"])
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if "visual" in items[0]:
        batch["visual"] = torch.stack([item["visual"] for item in items])
    return batch


class PadCollate:
    """Picklable collate for DataLoader workers."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return pad_batch(items, self.pad_id)


def tokenized(tokenizer, records: Sequence[dict[str, Any]], loss_on: str, max_length: int,
              reserved: int = 0) -> list[tuple[list[int], list[int]]]:  # fmt: skip
    """Encode every record; exit 2 when one is longer than --lm.max-length allows."""
    encoded = [encode_record(tokenizer, record, loss_on) for record in records]
    longest = max(len(ids) for ids, _ in encoded) + reserved
    if longest > max_length:
        fail(f"the longest sample is {longest} positions ({reserved} image tokens included), "
             f"more than --lm.max-length {max_length}: raise it")  # fmt: skip
    return encoded


def image_tensor(root: Path, records: Sequence[dict[str, Any]]) -> torch.Tensor:
    """The grid picture of each record (under the data set's ``root``) as float
    [N, 3, H, W], normalised ((x - 0.5) / 0.5); a picture shared by records is read once."""
    from PIL import Image

    cache: dict[str, torch.Tensor] = {}
    out = []
    for record in records:
        name = record["image_file"]
        if name not in cache:
            with Image.open(root / name) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            cache[name] = torch.from_numpy(array).permute(2, 0, 1)
        out.append(cache[name])
    return (torch.stack(out) - IMAGE_MEAN) / IMAGE_STD


def cell_ids(records: Sequence[dict[str, Any]]) -> torch.Tensor:
    """The true class of every cell, [N, R*C] (the one-hot encoder's input)."""
    return torch.tensor([record["cells"] for record in records], dtype=torch.long)


# ------------------------------------------------------------------------------ models


def load_tokenizer(directory: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def vision_model_config(cfg: GridVLMConfig, vocab_size: int):
    """The vision stage's CLIP: a small ViT over the grid picture, a small text tower."""
    from mm_models.dual_encoder import DualEncoderConfig

    v = cfg.vision
    return DualEncoderConfig(
        image_model="vit_tiny_patch16_224",
        image_size=cfg.data.canvas_px,
        image_kwargs={"img_size": cfg.data.canvas_px, "patch_size": v.patch_px,
                      "depth": v.depth, "embed_dim": v.width, "num_heads": v.heads},
        text_model={**CLIP_TEXT, "vocab_size": vocab_size,
                    "max_position_embeddings": CLIP_TEXT_TOKENS},
        embed_dim=v.embed_dim,
        normalize=False,  # the loss normalises
    )  # fmt: skip


def clip_text_batch(tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    tokens = tokenizer(list(texts), padding="max_length", truncation=True,
                       max_length=CLIP_TEXT_TOKENS, return_tensors="pt")  # fmt: skip
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


# ------------------------------------------------------------------------------ decoding


def first_per_grid(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first record of every grid, in order (one picture per grid)."""
    seen: dict[int, dict[str, Any]] = {}
    for record in records:
        seen.setdefault(record["grid_index"], record)
    return list(seen.values())


def eval_records(dataset: GridDataset, grids: int) -> list[dict[str, Any]]:
    """The first ``grids`` distinct grids of a split (one record each)."""
    return first_per_grid(dataset.records)[:grids]


def cell_prompts(tokenizer, records, class_names) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """One prompt per cell of every grid: the prompt, then the question ending in "A:"."""
    prompts, asked = [], []
    for k, record in enumerate(records):
        base = tokenizer.encode(record["prompt_text"])  # special tokens as encode_record adds them
        cells = Grid.from_dict(record).answer_cells  # the truth, or the text's (mismatch)
        objects = {class_names[c] for c in record["cells"]}
        for r in range(record["rows"]):
            for c in range(record["cols"]):
                question = tokenizer.encode(f"{question_text(r, c)} A:", add_special_tokens=False)
                prompts.append(base + question)
                asked.append({"record": k, "position": (r, c),
                              "target": class_names[cells[r * record["cols"] + c]],
                              "objects": objects})  # fmt: skip
    return prompts, asked


def _left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.tensor(prompt)
        mask[row, longest - len(prompt) :] = 1
    return ids, mask


@torch.no_grad()
def decode_accuracy(model, tokenizer, records, class_names, *, visual: torch.Tensor | None = None,
                    device: torch.device | str = "cpu", batch_size: int = 128,
                    max_new_tokens: int = 5) -> dict[str, Any]:  # fmt: skip
    """Greedy answers to every cell of every grid (each cell asked alone), scored.

    ``model`` is a causal LM (text form) or a GridVLM with ``visual`` [len(records), ...]
    (image form). Returns mm_eval.grids.grid_accuracy's dict plus ``examples`` (a few
    prompts' answers, for reading).
    """
    prompts, asked = cell_prompts(tokenizer, records, class_names)
    pad = tokenizer.pad_token_id
    answers: list[str] = []
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        ids, mask = _left_padded(chunk, pad)
        ids, mask = ids.to(device), mask.to(device)
        if visual is None:
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad)  # fmt: skip
            new = out[:, ids.shape[1] :]
        else:
            rows = [asked[start + j]["record"] for j in range(len(chunk))]
            new = model.generate_answers(visual[rows].to(device), ids, mask, max_new_tokens)
        answers.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    model.train(was_training)
    predictions = [parse_answer(a) for a in answers]
    rows, cols = records[0]["rows"], records[0]["cols"]
    result = grid_accuracy(predictions, [a["target"] for a in asked],
                           [a["position"] for a in asked], rows, cols,
                           [a["objects"] for a in asked])  # fmt: skip
    result["examples"] = [
        {"position": list(a["position"]), "target": a["target"], "answer": answers[k]}
        for k, a in enumerate(asked[:5])
    ]
    return result


def answer_spans(labels: Sequence[int]) -> list[range]:
    """Token ranges of the answers in the labels of ``encode_record(..., "answers")``: the
    runs of kept labels, the final eos taken off the last run."""
    spans: list[range] = []
    start = None
    for t, label in enumerate([*labels, IGNORE]):
        if label != IGNORE and start is None:
            start = t
        elif label == IGNORE and start is not None:
            spans.append(range(start, t))
            start = None
    if spans:
        spans[-1] = range(spans[-1].start, spans[-1].stop - 1)
    return [span for span in spans if len(span)]


@torch.no_grad()
def forced_accuracy(model, tokenizer, records, *, device: torch.device | str = "cpu",
                    batch_size: int = 64) -> dict[str, Any]:  # fmt: skip
    """Teacher-forced accuracy of a causal LM by question index.

    Every record is read whole, as in training (prompt, then each question with its true
    answer); the k-th answer counts as right when the most likely next token is right at
    each of its tokens. A model that reads the cells scores alike at every k; one that
    names the objects not yet named scores higher late in the grid (the last answer of a
    grid whose every cell is asked follows from the others). Returns ``by_question`` (one
    accuracy per index k, over the records that have a k-th question), ``first`` and
    ``last`` (over each record's first and last question).
    """
    encoded = [encode_record(tokenizer, record, "answers") for record in records]
    hits: dict[int, list[bool]] = {}
    first: list[bool] = []
    last: list[bool] = []
    was_training = model.training
    model.eval()
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = pad_batch([{"ids": ids, "labels": labels} for ids, labels in chunk],
                          tokenizer.pad_token_id)  # fmt: skip
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits  # fmt: skip
        guess = logits.argmax(-1).cpu()
        for row, (ids, labels) in enumerate(chunk):
            right = [all(int(guess[row, t - 1]) == ids[t] for t in span)
                     for span in answer_spans(labels)]  # fmt: skip
            for k, ok in enumerate(right):
                hits.setdefault(k, []).append(ok)
            first.append(right[0])
            last.append(right[-1])
    model.train(was_training)
    return {
        "by_question": [float(np.mean(hits[k])) for k in sorted(hits)],
        "first": float(np.mean(first)),
        "last": float(np.mean(last)),
    }


def check_encoder(out: Path, shape: dict[str, Any]) -> None:
    """On resume: exit 2 if the encoder differs from the one the run was built on."""
    record = out / ENCODER_FILE
    if not record.is_file():
        return
    saved = json.loads(record.read_text(encoding="utf-8"))
    if saved != shape:
        fail(f"--resume {out}: this run's projector was built for the {saved['encoder']} encoder "
             f"of width {saved['width']} ({saved['num_tokens']} tokens), but the vision stage now "
             f"gives width {shape['width']} ({shape['num_tokens']} tokens): its checkpoints would "
             f"not fit. Start again with --overwrite or another --tag")  # fmt: skip
