"""A CLIP-style dual encoder: a timm image tower and a Hugging Face text tower, built offline.

Image: `timm.create_model(image_model, pretrained=False, num_classes=0)` (pooled features of
size `num_features`) -> `image_proj` Linear(num_features -> embed_dim, no bias). Text: a Hugging
Face encoder (`AutoModel`), the first ([CLS]) token of `last_hidden_state` -> `text_proj`
Linear(hidden_size -> embed_dim, no bias). Outputs are L2-normalised when `normalize` is set;
there is no temperature (the contrastive loss owns it). Nothing is ever downloaded: image
weights come from a local state_dict file, text weights from a local `save_pretrained`
directory, otherwise both towers start from random weights.

    config = DualEncoderConfig(image_model="resnet18", image_size=224,
                               text_model={"vocab_size": len(tok), "n_layers": 4}, embed_dim=256)
    model = DualEncoder(config, tokenizer=tok)
    image_emb, text_emb = model(images, batch["input_ids"], batch["attention_mask"])
    model.save_pretrained("runs/clip"); model = DualEncoder.from_pretrained("runs/clip")
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from mm_models._weights import load_timm_weights

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

__all__ = ["DualEncoder", "DualEncoderConfig"]

CONFIG_FILE = "dual_encoder_config.json"
WEIGHTS_FILE = "dual_encoder.pt"
TEXT_CONFIG_DIR = "text_config"
_FORMAT = "mm_models.DualEncoder"
_FORMAT_VERSION = 1


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass
class DualEncoderConfig:
    """Settings of a DualEncoder; JSON-serialisable (saved next to the weights)."""

    image_model: str = "resnet50"  # any timm model name
    image_weights: str | None = None  # local timm state_dict (.pth/.pt/.bin/.safetensors)
    image_size: int = 256  # images must be [B, 3, image_size, image_size]
    text_model: str | dict[str, Any] = "distilbert"  # local HF dir, model type, or overrides
    embed_dim: int = 256
    normalize: bool = True
    # keyword arguments of timm.create_model, e.g. {"img_size": 48, "patch_size": 8,
    # "depth": 4, "embed_dim": 128} for a small ViT
    image_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.image_model, str) or not self.image_model:
            raise ValueError(f"image_model must be a timm model name, got {self.image_model!r}")
        if isinstance(self.image_weights, os.PathLike):
            self.image_weights = os.fspath(self.image_weights)
        if self.image_weights is not None and not isinstance(self.image_weights, str):
            raise ValueError(
                f"image_weights must be a file path or None, got {self.image_weights!r}"
            )
        _check_positive_int("image_size", self.image_size)
        _check_positive_int("embed_dim", self.embed_dim)
        if isinstance(self.text_model, os.PathLike):
            self.text_model = os.fspath(self.text_model)
        elif isinstance(self.text_model, Mapping):
            self.text_model = dict(self.text_model)
        if not isinstance(self.text_model, str | dict) or self.text_model == "":
            raise ValueError(
                "text_model must be a local model directory, a model type such as 'distilbert' "
                f"or a dict of config overrides, got {self.text_model!r}"
            )
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be a bool, got {self.normalize!r}")
        if not isinstance(self.image_kwargs, Mapping):
            raise ValueError(f"image_kwargs must be a dict, got {self.image_kwargs!r}")
        self.image_kwargs = dict(self.image_kwargs)
        reserved = {"pretrained", "num_classes"} & set(self.image_kwargs)
        if reserved:
            raise ValueError(f"image_kwargs may not set {sorted(reserved)} (the encoder sets them)")


# ---------------------------------------------------------------------------- image tower


def _close_timm_names(name: str, n: int = 5) -> list[str]:
    """A few timm model names that look like name (fuzzy matches first, then *name* ones)."""
    import timm

    fuzzy = difflib.get_close_matches(name, timm.list_models(), n=n, cutoff=0.6)
    return list(dict.fromkeys(fuzzy + timm.list_models(f"*{name}*")[:n]))[:n]


def _load_image_weights(model: nn.Module, path_str: str, model_name: str) -> None:
    """Load a local timm checkpoint into model strictly, after dropping the classifier keys."""
    path = Path(path_str).expanduser()
    if not path.exists():
        raise ValueError(f"image_weights file {path_str!r} does not exist")
    if not path.is_file():
        raise ValueError(f"image_weights {path_str!r} is not a file")
    load_timm_weights(
        model, path, f"image_weights {path_str!r} (timm model {model_name!r}, classifier dropped)"
    )


def _build_image_encoder(
    name: str, weights: str | None, kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """timm model without its classifier (pooled features), random or local weights;
    ``kwargs`` go to ``timm.create_model`` (a TypeError there names the bad one)."""
    import timm  # here, not at module level: importing timm is slow on a cold CPU

    if not timm.is_model(name):
        close = _close_timm_names(name)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown timm model name {name!r}{hint}")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, **dict(kwargs or {}))
    except TypeError as exc:
        raise ValueError(f"image_kwargs {dict(kwargs or {})} do not fit {name!r}: {exc}") from None
    if weights is not None:
        _load_image_weights(model, weights, name)
    return model


# ----------------------------------------------------------------------------- text tower


def _spec_config(model_type: str, overrides: Mapping[str, Any]) -> PretrainedConfig:
    """A Hugging Face config of model_type with overrides; unknown keys raise ValueError."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    unknown = sorted(key for key in overrides if not hasattr(default, key))
    if unknown:
        raise ValueError(f"text_model: unknown {model_type} config keys {unknown}")
    return AutoConfig.for_model(model_type, **overrides)


def _resolve_text_config(spec: str | dict[str, Any]) -> PretrainedConfig | Path:
    """A config to build a random text model from, or the local directory to load one from."""
    from transformers import CONFIG_MAPPING

    if isinstance(spec, dict):
        overrides = dict(spec)
        model_type = overrides.pop("model_type", "distilbert")
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"text_model: unknown model_type {model_type!r}")
        return _spec_config(model_type, overrides)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"text_model directory {spec!r} has no config.json "
                "(save the model with save_pretrained)"
            )
        return path
    if path.exists():
        raise ValueError(f"text_model {spec!r} is a file, not a save_pretrained directory")
    if spec in CONFIG_MAPPING:
        return _spec_config(spec, {})
    raise ValueError(
        f"text_model path {spec!r} does not exist (give a local save_pretrained directory, a "
        "model type such as 'distilbert', or a dict of config overrides; nothing is downloaded)"
    )


def _build_text_encoder(spec: str | dict[str, Any], config: PretrainedConfig | None) -> nn.Module:
    """Hugging Face encoder from config, else from spec (random weights or a local directory)."""
    from transformers import AutoModel

    source = config if config is not None else _resolve_text_config(spec)
    if not isinstance(source, Path):
        return AutoModel.from_config(source)
    try:
        model = AutoModel.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"text_model directory {str(source)!r} could not be loaded: {error}"
        ) from error
    return model.float()


# ---------------------------------------------------------------------------------- model


class DualEncoder(nn.Module):
    """Image and text towers projected to a shared embed_dim space (CLIP-style, no temperature)."""

    def __init__(
        self,
        config: DualEncoderConfig | None = None,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        text_config: PretrainedConfig | None = None,
    ) -> None:
        """Build both towers; text_config (a HF config) overrides config.text_model if given."""
        super().__init__()
        self.config = config = config if config is not None else DualEncoderConfig()
        if not isinstance(config, DualEncoderConfig):
            raise ValueError(f"config must be a DualEncoderConfig, got {type(config).__name__}")
        self.image_encoder = _build_image_encoder(
            config.image_model, config.image_weights, config.image_kwargs
        )
        self.text_encoder = _build_text_encoder(config.text_model, text_config)
        text_vocab = self.text_encoder.config.vocab_size
        if tokenizer is not None and len(tokenizer) > text_vocab:
            raise ValueError(
                f"text model vocab_size {text_vocab} is smaller than the tokenizer's "
                f"{len(tokenizer)}; set text_model={{'vocab_size': {len(tokenizer)}, ...}}"
            )
        self.image_features = int(self.image_encoder.num_features)
        self.text_features = int(self.text_encoder.config.hidden_size)
        self.image_proj = nn.Linear(self.image_features, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text_features, config.embed_dim, bias=False)

    @property
    def embed_dim(self) -> int:
        """Size of both embeddings."""
        return self.config.embed_dim

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part (image_encoder, image_proj, text_encoder, text_proj), for per-part LRs."""
        names = ("image_encoder", "image_proj", "text_encoder", "text_proj")
        return {name: list(getattr(self, name).parameters()) for name in names}

    def _finish(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=-1) if self.config.normalize else features

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] (S = config.image_size) -> embeddings [B, embed_dim]."""
        size = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(
                f"encode_image expects images of shape [batch, 3, {size}, {size}] "
                f"(config.image_size={size}), got {tuple(images.shape)}"
            )
        return self._finish(self.image_proj(self.image_encoder(images)))

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token ids [B, L] (+ mask, 1 = real token) -> embeddings [B, embed_dim] from token 0."""
        if (
            input_ids.ndim != 2
            or input_ids.dtype.is_floating_point
            or input_ids.dtype == torch.bool
        ):
            raise ValueError(
                f"input_ids must be integer [batch, length], got {input_ids.dtype} "
                f"{tuple(input_ids.shape)}"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                f"shape {tuple(input_ids.shape)}"
            )
        text_config = self.text_encoder.config
        max_length = getattr(text_config, "max_position_embeddings", None)
        if max_length is not None and input_ids.shape[1] > max_length:
            raise ValueError(
                f"input_ids length {input_ids.shape[1]} exceeds the text model's "
                f"max_position_embeddings {max_length}"
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= text_config.vocab_size):
            raise ValueError(
                f"input_ids must be in [0, {text_config.vocab_size}) (the text model's "
                f"vocab_size), got [{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self._finish(self.text_proj(hidden.last_hidden_state[:, 0]))

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image_embeddings, text_embeddings), each [B, embed_dim]."""
        return self.encode_image(images), self.encode_text(input_ids, attention_mask)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write the config (JSON), the text model's HF config and the weights to directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
        }
        (out / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        self.text_encoder.config.save_pretrained(str(out / TEXT_CONFIG_DIR))
        state = {key: value.detach().cpu().contiguous() for key, value in self.state_dict().items()}
        torch.save(state, out / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> DualEncoder:
        """Rebuild a model written by save_pretrained on the CPU, offline (no original files needed)."""
        from transformers import AutoConfig

        src = Path(directory).expanduser()
        if not src.is_dir():
            raise ValueError(f"DualEncoder directory {str(directory)!r} does not exist")
        for name in (CONFIG_FILE, WEIGHTS_FILE, f"{TEXT_CONFIG_DIR}/config.json"):
            if not (src / name).is_file():
                raise ValueError(
                    f"{str(directory)!r} is not a DualEncoder directory: {name} is missing"
                )
        payload = json.loads((src / CONFIG_FILE).read_text())
        if payload.get("format") != _FORMAT or payload.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{str(src / CONFIG_FILE)!r} is not a {_FORMAT} config of version {_FORMAT_VERSION}"
            )
        # the image weights are in the checkpoint: the original file is not needed any more
        config = dataclasses.replace(DualEncoderConfig(**payload["config"]), image_weights=None)
        text_config = AutoConfig.from_pretrained(str(src / TEXT_CONFIG_DIR), local_files_only=True)
        model = cls(config, text_config=text_config)
        state = torch.load(src / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return model
