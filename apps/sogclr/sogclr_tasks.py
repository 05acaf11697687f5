"""What the sogclr app's scripts share: data, tokenizer, model, loss, step and evaluation.

The recipe of train.py: image-caption data (the JSON formats, or WebDataset shards) ->
tokenizer (local or trained offline on the captions) -> dual encoder (timm image tower,
Hugging Face text tower, linear projections) -> a loss of mm_losses by name -> mm_train.fit
with an evaluation (retrieval both ways, zero-shot top-1/top-5) every epoch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sogclr_config import LOSS_FIELDS, DataOptions, SogCLRConfig
from torch import nn

import mm_losses
from mm_data.imagetext import (
    IMAGENET_TEMPLATES,
    SIMPLE_TEMPLATES,
    ImageCaptionDataset,
    RetrievalEvalDataset,
    ZeroShotFolder,
    eval_transform,
    train_transform,
    webdataset_captions,
    webdataset_pipeline,
    write_synthetic_corpus,
    zeroshot_transform,
)
from mm_eval import retrieval_metrics, zero_shot_accuracy, zero_shot_classifier
from mm_models.dual_encoder import DualEncoder, DualEncoderConfig
from mm_models.text_tokenizer import load_or_train_tokenizer
from mm_train import atomic_write_json

TOKENIZER_DIR = "tokenizer"
DATASET_FILE = "dataset.json"
MODEL_DIR = "model"
RUN_FILES = (TOKENIZER_DIR, DATASET_FILE, MODEL_DIR)  # what --overwrite deletes beside mm-train's
TINY_TEXT = {"dim": 128, "n_layers": 2, "n_heads": 4, "hidden_dim": 256}


# ------------------------------------------------------------------------------ data


def data_path(data: DataOptions, name: str) -> Path:
    """A path of the data options, relative to the data root."""
    return Path(data.root) / name


def ensure_corpus(data: DataOptions, *, quiet: bool = False) -> None:
    """Write the synthetic corpus into ``data.root`` unless it holds the training file."""
    if data.shards or data_path(data, data.train_file).is_file():
        return
    root = Path(data.root)
    if root.exists() and any(root.iterdir()):
        raise FileNotFoundError(
            f"--data.root {root} holds no {data.train_file}; point --data.root at a corpus in "
            "the JSON format, or at an empty directory to generate the synthetic one"
        )
    if not quiet:
        print(f"[sogclr] writing the synthetic corpus to {root} (first use)", flush=True)
    write_synthetic_corpus(
        root,
        n_train=data.synthetic_train,
        n_eval=data.synthetic_eval,
        n_zeroshot_per_class=data.synthetic_zeroshot,
        image_size=data.synthetic_size,
        seed=data.synthetic_seed,
    )


def train_dataset(cfg: SogCLRConfig):
    """The training set: the JSON annotations, or the WebDataset shards."""
    data = cfg.data
    transform = train_transform(cfg.image_size, randaugment=cfg.randaugment)
    if data.shards:
        return webdataset_pipeline(data.shards, transform, shuffle=1000, max_words=cfg.max_words)
    return ImageCaptionDataset(
        data_path(data, data.train_file),
        data_path(data, data.train_images),
        transform=transform,
        max_words=cfg.max_words,
    )


def dataset_record(cfg: SogCLRConfig, dataset) -> dict[str, Any]:
    """What a run's per-sample state is sized for: checked on --resume."""
    size = cfg.data.shard_samples if cfg.data.shards else len(dataset)
    return {
        "num_samples": size,
        "source": cfg.data.shards or str(data_path(cfg.data, cfg.data.train_file)),
    }


def check_dataset_record(out: Path, record: dict[str, Any]) -> None:
    """Refuse to resume a run on a data set of another size (its state would not fit)."""
    path = out / DATASET_FILE
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("num_samples") != record["num_samples"]:
        raise SystemExit(
            f"error: --resume: the run in {out} was trained on {saved.get('num_samples')} "
            f"samples ({saved.get('source')}), this data set has {record['num_samples']} "
            f"({record['source']}); the loss keeps per-sample state, so it cannot continue"
        )


class Collate:
    """Batch of dataset items -> (images, input_ids, attention_mask, index); picklable."""

    def __init__(self, tokenizer, max_tokens: int) -> None:
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            [item["caption"] for item in items],
            padding="max_length",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return {
            "images": torch.stack([item["image"] for item in items]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "index": torch.tensor([int(item["index"]) for item in items], dtype=torch.long),
        }


class ShardLoader:
    """Batches of a WebDataset stream, a fixed number per epoch (``mm_train.fit`` needs a
    length): ``num_samples // (batch x world)`` batches, the stream restarted when it ends.

    The shards are split over ranks and workers by the pipeline. A resumed epoch is fast
    -forwarded, so with shuffling it continues with other samples than the interrupted run
    (exact resume needs the JSON format and ``make_dataloader``).
    """

    def __init__(self, dataset, num_samples: int, batch_size: int, info, **loader_kwargs) -> None:
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, drop_last=True, **loader_kwargs
        )
        self.batch_size = batch_size
        self.batches = max(1, num_samples // (batch_size * info.world_size))
        self._stream = None

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        done = 0
        while done < self.batches:
            if self._stream is None:
                self._stream = iter(self.loader)
            try:
                batch = next(self._stream)
            except StopIteration:
                self._stream = None
                continue
            done += 1
            yield batch


def training_captions(cfg: SogCLRConfig, dataset) -> list[str]:
    """The training captions (of the annotations, or read from the shards)."""
    if cfg.data.shards:
        return webdataset_captions(cfg.data.shards, max_words=cfg.max_words)
    return list(dataset.captions)


def build_tokenizer(cfg: SogCLRConfig, out: Path, captions: list[str] | None, write: bool):
    """The run's tokenizer: the run's saved one, a local one, or trained on the captions."""
    saved = out / TOKENIZER_DIR
    if saved.is_dir():
        return load_or_train_tokenizer(str(saved), [])
    tokenizer = load_or_train_tokenizer(
        cfg.tokenizer or None, captions or [], vocab_size=cfg.vocab_size
    )
    if write:
        tokenizer.save_pretrained(str(saved))
    return tokenizer


# ------------------------------------------------------------------------------ model, loss


def model_config(cfg: SogCLRConfig, vocab_size: int) -> DualEncoderConfig:
    """The dual encoder of the config (the loss normalises, so the model does not)."""
    if cfg.text_model == "tiny":
        text: Any = {**TINY_TEXT, "vocab_size": vocab_size, "max_position_embeddings": 64}
    elif cfg.text_model == "distilbert":
        text = {"vocab_size": vocab_size}
    else:
        text = cfg.text_model
    return DualEncoderConfig(
        image_model=cfg.image_model,
        image_weights=cfg.image_weights or None,
        image_size=cfg.image_size,
        text_model=text,
        embed_dim=cfg.embed_dim,
        normalize=False,
    )


def load_initial_weights(model: DualEncoder, run: str) -> None:
    """The weights of a trained run's encoder (``--init-from``); the architectures must match."""
    trained = DualEncoder.from_pretrained(Path(run) / MODEL_DIR)
    try:
        model.load_state_dict(trained.state_dict())
    except RuntimeError as exc:
        raise SystemExit(
            f"error: --init-from {run}: its encoder does not fit this configuration "
            f"(image/text model, embed dim, vocabulary): {str(exc).splitlines()[0]}"
        ) from None


def build_loss(cfg: SogCLRConfig, num_samples: int) -> nn.Module:
    """The objective by name, with only the hyper-parameters it uses."""
    kwargs = {name: getattr(cfg, name) for name in LOSS_FIELDS[cfg.loss]}
    if mm_losses.get(cfg.loss).stateful:
        kwargs["num_samples"] = num_samples
    return mm_losses.build(cfg.loss, **kwargs)


def make_step_fn(loss: nn.Module) -> Callable[[nn.Module, dict], torch.Tensor]:
    """step_fn(model, batch) -> the loss of the batch (the index keys per-sample state)."""

    def step_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image, text = model(batch["images"], batch["input_ids"], batch["attention_mask"])
        return loss(image, text, batch["index"] if loss.stateful else None)

    return step_fn


# ------------------------------------------------------------------------------ evaluation


class Evaluation:
    """Retrieval (both ways) on the COCO-style set and zero-shot top-1/top-5 on the folder."""

    def __init__(self, cfg_data: DataOptions, image_size: int, tokenizer, max_tokens: int,
                 max_words: int, batch_size: int = 256, workers: int = 0) -> None:  # fmt: skip
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.batch_size, self.workers = batch_size, workers
        self.retrieval = None
        if cfg_data.eval_file and data_path(cfg_data, cfg_data.eval_file).is_file():
            self.retrieval = RetrievalEvalDataset(
                data_path(cfg_data, cfg_data.eval_file),
                data_path(cfg_data, cfg_data.eval_images),
                transform=eval_transform(image_size),
                max_words=max_words,
            )
        self.zeroshot = None
        if cfg_data.zeroshot_dir and data_path(cfg_data, cfg_data.zeroshot_dir).is_dir():
            self.zeroshot = ZeroShotFolder(
                data_path(cfg_data, cfg_data.zeroshot_dir), transform=zeroshot_transform(image_size)
            )
        self.templates = (
            IMAGENET_TEMPLATES if cfg_data.templates == "imagenet" else SIMPLE_TEMPLATES
        )

    @torch.no_grad()
    def encode_texts(self, model: DualEncoder, texts: list[str], device) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                texts[start : start + self.batch_size], padding="max_length", truncation=True,
                max_length=self.max_tokens, return_tensors="pt",
            )  # fmt: skip
            out.append(
                model.encode_text(
                    tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
                )
            )
        return nn.functional.normalize(torch.cat(out).float(), dim=-1)

    @torch.no_grad()
    def encode_images(self, model: DualEncoder, dataset, device) -> tuple[torch.Tensor, list]:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, num_workers=self.workers, shuffle=False
        )
        features, labels = [], []
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            if isinstance(batch, (list, tuple)) and len(batch) > 1:
                labels.append(batch[1])
            features.append(model.encode_image(images.to(device)))
        labels = torch.cat(labels) if labels else None
        return nn.functional.normalize(torch.cat(features).float(), dim=-1), labels

    def __call__(self, model: DualEncoder, step: int | None = None) -> dict[str, float]:
        device = next(model.parameters()).device
        metrics: dict[str, float] = {}
        if self.retrieval is not None:
            images, _ = self.encode_images(model, self.retrieval, device)
            texts = self.encode_texts(model, self.retrieval.texts, device)
            metrics |= retrieval_metrics(images, texts, self.retrieval.text_to_image.to(device))
        if self.zeroshot is not None:
            classifier = zero_shot_classifier(
                lambda prompts: self.encode_texts(model, prompts, device),
                self.zeroshot.class_names,
                self.templates,
            )
            images, labels = self.encode_images(model, self.zeroshot, device)
            accuracy = zero_shot_accuracy(images, classifier, labels.to(device))
            metrics |= {f"zeroshot_{k}": v for k, v in accuracy.items()}
        return metrics


def write_dataset_record(out: Path, record: dict[str, Any]) -> None:
    atomic_write_json(out / DATASET_FILE, record)
