"""One builder per stage: what train.py hands to mm_train.fit, and how the result is saved.

pretrain  GPT-2 from a config, byte-level BPE trained on the text grids; next-token loss
          on every token (padding masked).
sft       the pre-trained LM, loss on the answers (or the original's masking).
vision    a CLIP dual encoder on grid pictures vs their text rows (small ViT, mm_losses
          "clip"); its image tower becomes the VLM's encoder.
vlm       [projected image tokens] + instruction + Q/A into the SFT LM, loss on the
          answers; the encoder is the vision stage's ViT or one-hot cell tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from gridvlm_config import GridVLMConfig
from gridvlm_tasks import (
    ENCODER_FILE,
    MODEL_DIR,
    TOKENIZER_DIR,
    Corpus,
    PadCollate,
    TokenizedGrids,
    cell_ids,
    check_encoder,
    clip_text_batch,
    decode_accuracy,
    eval_records,
    first_per_grid,
    forced_accuracy,
    image_tensor,
    load_tokenizer,
    tokenized,
    vision_model_config,
)
from torch import nn

from mm_data.grids import GridDataset, grid_config
from mm_train import atomic_write_json


@dataclass
class StagePlan:
    """Everything fit needs for one stage, and how to save the trained model."""

    model: nn.Module
    step_fn: Callable[[nn.Module, dict], torch.Tensor]
    dataset: torch.utils.data.Dataset
    collate: Callable | None
    batch_size: int
    epochs: int
    lr: float
    warmup_steps: int
    weight_decay: float
    evaluate: Callable[[nn.Module], dict[str, float]]
    save: Callable[[nn.Module, Path], None]
    start: Callable[[Path], None] = lambda out: None  # files written once the run has started
    lr_scales: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _lm_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 labels=batch["labels"]).loss  # fmt: skip


def _vlm_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["visual"], batch["input_ids"], batch["attention_mask"],
                 labels=batch["labels"]).loss  # fmt: skip


def _scores(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}accuracy": result["accuracy"],
        f"{prefix}in_grid_rate": result["in_grid_rate"],
    }


def _save_lm(tokenizer):
    def save(model: nn.Module, out: Path) -> None:
        model.save_pretrained(str(out / MODEL_DIR))
        tokenizer.save_pretrained(str(out / TOKENIZER_DIR))

    return save


def _text_eval(cfg: GridVLMConfig, corpus: Corpus, tokenizer, device):
    records = eval_records(GridDataset(corpus.text_root, "val"), cfg.eval_grids)

    def evaluate(model: nn.Module) -> dict[str, float]:
        scores = _scores(decode_accuracy(model, tokenizer, records, corpus.class_names,
                                         device=device))  # fmt: skip
        forced = forced_accuracy(model, tokenizer, records, device=device)
        return {**scores, "forced_first": forced["first"], "forced_last": forced["last"]}

    return evaluate


def pretrain(
    cfg: GridVLMConfig, corpus: Corpus, out: Path, device, earlier: dict[str, Path]
) -> StagePlan:
    """GPT-2 from a config on the text grids, loss on every token."""
    from mm_models.gridvlm import LMConfig, build_lm, train_bpe_tokenizer

    train = GridDataset(corpus.text_root, "train")
    saved = out / TOKENIZER_DIR
    if cfg.resume and saved.is_dir():  # a resumed run keeps its tokenizer
        tokenizer = load_tokenizer(saved)
    else:
        tokenizer = train_bpe_tokenizer((r["full_text"] for r in train.records),
                                        cfg.lm.vocab_size, add_bos=cfg.lm.bos)  # fmt: skip
    lm = build_lm(LMConfig.from_tokenizer(tokenizer, n_positions=cfg.lm.max_length,
                                          n_embd=cfg.lm.n_embd, n_layer=cfg.lm.n_layer,
                                          n_head=cfg.lm.n_head, family=cfg.lm.family,
                                          init_std=cfg.lm.init_std))  # fmt: skip
    p = cfg.pretrain
    return StagePlan(
        model=lm, step_fn=_lm_step,
        dataset=TokenizedGrids(tokenized(tokenizer, train.records, "all", cfg.lm.max_length), None),
        collate=PadCollate(tokenizer.pad_token_id), batch_size=p.batch_size, epochs=p.epochs, lr=p.lr,
        warmup_steps=p.warmup_steps, weight_decay=p.weight_decay,
        evaluate=_text_eval(cfg, corpus, tokenizer, device), save=_save_lm(tokenizer),
        start=lambda out: tokenizer.save_pretrained(str(out / TOKENIZER_DIR)),
        info={"parameters": sum(q.numel() for q in lm.parameters()), "vocab": len(tokenizer)},
    )  # fmt: skip


def sft(
    cfg: GridVLMConfig, corpus: Corpus, out: Path, device, earlier: dict[str, Path]
) -> StagePlan:
    """The pre-trained LM fine-tuned with the loss on the answers (or the original's masking)."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(earlier["pretrain"] / TOKENIZER_DIR)
    lm = AutoModelForCausalLM.from_pretrained(str(earlier["pretrain"] / MODEL_DIR))
    train = GridDataset(corpus.text_root, "train")
    s = cfg.sft
    encoded = tokenized(tokenizer, train.records, s.loss_on, lm.config.n_positions)
    return StagePlan(
        model=lm, step_fn=_lm_step, dataset=TokenizedGrids(encoded, None),
        collate=PadCollate(tokenizer.pad_token_id),
        batch_size=s.batch_size, epochs=s.epochs, lr=s.lr, warmup_steps=s.warmup_steps,
        weight_decay=0.0, evaluate=_text_eval(cfg, corpus, tokenizer, device),
        save=_save_lm(tokenizer), info={"loss_on": s.loss_on},
    )  # fmt: skip


class _PairedGrids(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, text: dict[str, torch.Tensor]) -> None:
        self.images, self.text = images, text

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": self.images[index], **{k: v[index] for k, v in self.text.items()}}


def vision(
    cfg: GridVLMConfig, corpus: Corpus, out: Path, device, earlier: dict[str, Path]
) -> StagePlan:
    """A CLIP dual encoder on grid pictures vs their text rows; the image tower is kept."""
    import mm_losses
    from mm_eval import retrieval_metrics
    from mm_models.dual_encoder import DualEncoder
    from mm_models.text_tokenizer import load_or_train_tokenizer

    train = GridDataset(corpus.image_root, "train")
    saved = out / TOKENIZER_DIR
    if cfg.resume and saved.is_dir():
        tokenizer = load_or_train_tokenizer(str(saved))
    else:
        tokenizer = load_or_train_tokenizer(None, [r["rows_text"] for r in train.records],
                                            vocab_size=400)  # fmt: skip
    model = DualEncoder(vision_model_config(cfg, len(tokenizer)), tokenizer=tokenizer)
    loss = mm_losses.build("clip", tau=cfg.vision.tau)
    grids = first_per_grid(train.records)
    dataset = _PairedGrids(image_tensor(train.root, grids),
                           clip_text_batch(tokenizer, [r["rows_text"] for r in grids]))  # fmt: skip
    val = first_per_grid(GridDataset(corpus.image_root, "val").records)
    val_images = image_tensor(corpus.image_root, val)
    val_text = clip_text_batch(tokenizer, [r["rows_text"] for r in val])

    def step_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image, text = model(batch["images"], batch["input_ids"], batch["attention_mask"])
        return loss(image, text)

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        image = model.encode_image(val_images.to(device))
        text = model.encode_text(val_text["input_ids"].to(device),
                                 val_text["attention_mask"].to(device))  # fmt: skip
        found = retrieval_metrics(image.cpu(), text.cpu(), torch.arange(len(val)))
        return {k: found[k] for k in ("r_mean", "txt_r1", "img_r1")}

    def save(model: nn.Module, out: Path) -> None:
        model.save_pretrained(str(out / MODEL_DIR))

    v = cfg.vision
    return StagePlan(
        model=model, step_fn=step_fn, dataset=dataset, collate=None, batch_size=v.batch_size,
        epochs=v.epochs, lr=v.lr, warmup_steps=v.warmup_steps, weight_decay=0.05,
        evaluate=evaluate, save=save,
        start=lambda out: tokenizer.save_pretrained(str(out / TOKENIZER_DIR)),
        info={"parameters": sum(q.numel() for q in model.image_encoder.parameters())},
    )  # fmt: skip


def build_vlm(cfg: GridVLMConfig, corpus: Corpus, earlier: dict[str, Path]):
    """The GridVLM of the config: the SFT LM and the vision stage's ViT (or one-hot cells)."""
    from transformers import AutoModelForCausalLM

    from mm_models.dual_encoder import DualEncoder
    from mm_models.gridvlm import GridVLM, OneHotCellEncoder, TimmTokenEncoder, VLMConfig

    lm = AutoModelForCausalLM.from_pretrained(str(earlier["sft"] / MODEL_DIR))
    v = cfg.vlm
    freeze = {"freeze_lm": v.freeze_lm, "freeze_vision": v.freeze_vision}
    if v.encoder == "onehot":
        grid = grid_config(cfg.vlm.grids or cfg.data.config)
        rows, cols = grid.rows, grid.cols
        encoder = OneHotCellEncoder(len(corpus.class_names), rows, cols, v.onehot_positions)
        config = VLMConfig(**encoder.config_fields(), projector=v.projector, **freeze)
    else:
        encoder = TimmTokenEncoder.from_dual_encoder(
            DualEncoder.from_pretrained(str(earlier["vision"] / MODEL_DIR))
        )
        config = VLMConfig(**encoder.config_fields(), projector=v.projector, **freeze)
    return GridVLM(config, lm, encoder)


def visual_inputs(cfg: GridVLMConfig, root: Path, records: list[dict[str, Any]]) -> torch.Tensor:
    """What the VLM's encoder reads for each record: pixels, or the true cell classes."""
    return cell_ids(records) if cfg.vlm.encoder == "onehot" else image_tensor(root, records)


def vlm(
    cfg: GridVLMConfig, corpus: Corpus, out: Path, device, earlier: dict[str, Path]
) -> StagePlan:
    """The VLM on image grids, loss on the answers, each component at its own rate."""
    tokenizer = load_tokenizer(earlier["sft"] / TOKENIZER_DIR)
    model = build_vlm(cfg, corpus, earlier)
    shape = {"encoder": cfg.vlm.encoder, "width": int(model.vision.width),
             "num_tokens": model.num_image_tokens}  # fmt: skip
    if cfg.resume:
        check_encoder(out, shape)
    train = GridDataset(corpus.image_root, "train")
    encoded = tokenized(tokenizer, train.records, "answers", model.lm.config.n_positions,
                        reserved=model.num_image_tokens)  # fmt: skip
    val_records = eval_records(GridDataset(corpus.eval_image_root, "val"), cfg.eval_grids)
    val_visual = visual_inputs(cfg, corpus.eval_image_root, val_records)
    text_records = eval_records(GridDataset(corpus.text_root, "val"), cfg.eval_grids)

    def evaluate(model: nn.Module) -> dict[str, float]:
        image = decode_accuracy(model, tokenizer, val_records, corpus.class_names,
                                visual=val_visual, device=device)  # fmt: skip
        text = decode_accuracy(model.lm, tokenizer, text_records, corpus.class_names,
                               device=device)  # fmt: skip
        return {**_scores(image), **_scores(text, "text_")}

    def save(model: nn.Module, out: Path) -> None:
        model.save_pretrained(str(out / MODEL_DIR))
        tokenizer.save_pretrained(str(out / TOKENIZER_DIR))

    v = cfg.vlm
    return StagePlan(
        model=model, step_fn=_vlm_step,
        dataset=TokenizedGrids(encoded, visual_inputs(cfg, train.root, train.records)),
        collate=PadCollate(tokenizer.pad_token_id),
        batch_size=v.batch_size, epochs=v.epochs, lr=v.lr, warmup_steps=v.warmup_steps,
        weight_decay=0.0, evaluate=evaluate, save=save,
        start=lambda out: atomic_write_json(out / ENCODER_FILE, shape),
        lr_scales={"lm": v.lr_scale_lm, "vision": v.lr_scale_vision},
        info={"encoder": v.encoder, "image_tokens": model.num_image_tokens,
              "grids": v.grids or cfg.data.config},
    )  # fmt: skip
