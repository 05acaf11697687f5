"""GridVLM: LLaVA-style [projected vision tokens] + [text tokens] into a causal LM."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mm_models._weights import load_state_strict
from mm_models.gridvlm._checks import check_bool, check_int, read_state, save_state
from mm_models.gridvlm.lm import LMConfig, build_lm
from mm_models.gridvlm.vision import (
    DEFAULT_VIT,
    PROJECTOR_KINDS,
    OneHotCellEncoder,
    Projector,
    TimmTokenEncoder,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel
    from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

__all__ = ["ENCODER_KINDS", "GridVLM", "VLMConfig", "build_vision_encoder"]

ENCODER_KINDS = ("timm", "onehot", "custom")
COMPONENTS = ("lm", "vision", "projector")
CONFIG_FILE = "config.json"
LM_DIR = "lm"
VISION_FILE = "vision.safetensors"
PROJECTOR_FILE = "projector.safetensors"
_FORMAT = "mm_models.GridVLM"
_FORMAT_VERSION = 1
IGNORE_INDEX = -100


@dataclass
class VLMConfig:
    """How a GridVLM is put together (the LM's size lives in its own HF config); JSON-able.

    ``encoder``: "timm" (`TimmTokenEncoder(encoder_name, **encoder_kwargs)`; encoder_kwargs
    must hold ``image_size`` and may hold timm options and ``pretrained_path``), "onehot"
    (`OneHotCellEncoder(**encoder_kwargs)`: ``num_classes``, ``rows``, ``cols``, ``positions``) or "custom"
    (a module passed as ``vision=``, also to `GridVLM.from_pretrained`). Encoders give their
    own fields with ``encoder.config_fields()``. ``freeze_*`` turn off ``requires_grad`` of
    that component (its train/eval mode is left alone).
    """

    encoder: str = "timm"
    encoder_name: str = DEFAULT_VIT  # timm model name (encoder="timm")
    encoder_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    projector: str = "mlp"  # "linear" or "mlp"
    freeze_lm: bool = False
    freeze_vision: bool = False
    freeze_projector: bool = False

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_KINDS:
            raise ValueError(f"encoder must be one of {ENCODER_KINDS}, got {self.encoder!r}")
        if not isinstance(self.encoder_name, str) or not self.encoder_name:
            raise ValueError(f"encoder_name must be a timm model name, got {self.encoder_name!r}")
        if not isinstance(self.encoder_kwargs, Mapping):
            raise ValueError(f"encoder_kwargs must be a dict, got {self.encoder_kwargs!r}")
        kwargs = dict(self.encoder_kwargs)
        if isinstance(kwargs.get("pretrained_path"), os.PathLike):
            kwargs["pretrained_path"] = os.fspath(kwargs["pretrained_path"])
        try:
            json.dumps(kwargs)
        except TypeError as error:
            raise ValueError(f"encoder_kwargs must be JSON-serialisable: {error}") from None
        self.encoder_kwargs = kwargs
        if self.projector not in PROJECTOR_KINDS:
            raise ValueError(f"projector must be one of {PROJECTOR_KINDS}, got {self.projector!r}")
        for name in ("freeze_lm", "freeze_vision", "freeze_projector"):
            check_bool(name, getattr(self, name))


def build_vision_encoder(config: VLMConfig) -> nn.Module:
    """The vision encoder config describes (random init, or pretrained_path for timm)."""
    kwargs = dict(config.encoder_kwargs)
    if config.encoder == "timm":
        image_size = kwargs.pop("image_size", None)
        if image_size is None:
            raise ValueError("encoder='timm' needs encoder_kwargs['image_size']")
        return TimmTokenEncoder(config.encoder_name, image_size, **kwargs)
    if config.encoder == "onehot":
        try:
            return OneHotCellEncoder(**kwargs)
        except TypeError:
            raise ValueError(
                "encoder='onehot' needs encoder_kwargs with num_classes, rows, cols and "
                "optionally positions, "
                f"got {kwargs}"
            ) from None
    raise ValueError("encoder='custom' cannot be built from the config: pass vision=<module>")


def _vision_shape(vision: nn.Module) -> tuple[int, int]:
    """(width, num_tokens) of a vision encoder, checked."""
    width, num_tokens = getattr(vision, "width", None), getattr(vision, "num_tokens", None)
    for name, value in (("width", width), ("num_tokens", num_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"the vision encoder ({type(vision).__name__}) needs a positive int attribute "
                f"{name}, got {value!r}"
            )
    return width, num_tokens


def _max_positions(lm: nn.Module) -> int | None:
    config = lm.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


class GridVLM(nn.Module):
    """``vision`` -> ``projector`` -> tokens placed before the text embeddings of ``lm``.

    ``lm`` is a plain causal LM (`GPT2LMHeadModel` from `build_lm`, or one loaded from a
    text-only stage with ``from_pretrained``); text-only evaluation uses ``model.lm``
    directly. Sequences are ``[N image tokens][text]``; the image tokens are always attended,
    positions come from the attention mask (so padding on either side gives the same
    logits at real tokens), and the loss covers the text labels only.
    """

    def __init__(
        self,
        config: VLMConfig,
        lm: PreTrainedModel | LMConfig,
        vision: nn.Module | None = None,
        projector: Projector | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, VLMConfig):
            raise ValueError(f"config must be a VLMConfig, got {type(config).__name__}")
        if isinstance(lm, LMConfig):
            lm = build_lm(lm)
        if not hasattr(lm, "get_input_embeddings") or not hasattr(lm, "generate"):
            raise ValueError(f"lm must be a Hugging Face causal LM, got {type(lm).__name__}")
        if vision is None:
            vision = build_vision_encoder(config)
        width, num_tokens = _vision_shape(vision)
        hidden = lm.get_input_embeddings().embedding_dim
        if projector is None:
            projector = Projector(config.projector, width, hidden)
        elif not isinstance(projector, Projector):
            raise ValueError(f"projector must be a Projector, got {type(projector).__name__}")
        if projector.in_features != width:
            raise ValueError(
                f"vision encoder width {width} does not match the projector's input width "
                f"{projector.in_features}"
            )
        if projector.out_features != hidden:
            raise ValueError(
                f"projector output width {projector.out_features} does not match the LM's "
                f"embedding width {hidden}"
            )
        max_positions = _max_positions(lm)
        if max_positions is not None and num_tokens >= max_positions:
            raise ValueError(
                f"the vision encoder's {num_tokens} tokens leave no room for text in the LM's "
                f"{max_positions} positions"
            )
        self.config = config
        self.vision = vision
        self.projector = projector
        self.lm = lm
        self._apply_freezing()

    # ------------------------------------------------------------------ properties, freezing

    @property
    def num_image_tokens(self) -> int:
        return int(self.vision.num_tokens)

    @property
    def eos_token_id(self) -> int | list[int] | None:
        return self.lm.config.eos_token_id

    @property
    def pad_token_id(self) -> int | None:
        pad = self.lm.config.pad_token_id
        if pad is None:
            eos = self.eos_token_id
            pad = eos[0] if isinstance(eos, list) else eos
        return pad

    def _apply_freezing(self) -> None:
        for name in COMPONENTS:
            frozen = getattr(self.config, f"freeze_{name}")
            for param in getattr(self, name).parameters():
                param.requires_grad_(not frozen)

    def set_frozen(
        self, *, lm: bool | None = None, vision: bool | None = None, projector: bool | None = None
    ) -> None:
        """Freeze (True) or unfreeze (False) components; None leaves one as it is."""
        changes = {
            f"freeze_{name}": value
            for name, value in (("lm", lm), ("vision", vision), ("projector", projector))
            if value is not None
        }
        self.config = dataclasses.replace(self.config, **changes)
        self._apply_freezing()

    def param_groups_by_component(
        self, trainable_only: bool = True
    ) -> dict[str, list[nn.Parameter]]:
        """{"lm": [...], "vision": [...], "projector": [...]} for per-component learning rates.

        With ``trainable_only`` a frozen component gives an empty list (leave it out of the
        optimizer). Tied parameters (GPT-2's input/output embedding) appear once.
        """
        return {
            name: [
                p for p in getattr(self, name).parameters() if p.requires_grad or not trainable_only
            ]
            for name in COMPONENTS
        }

    # ------------------------------------------------------------------------- inputs

    def _check_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            not isinstance(input_ids, torch.Tensor)
            or input_ids.ndim != 2
            or input_ids.dtype.is_floating_point
            or input_ids.dtype == torch.bool
        ):
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else None
            raise ValueError(f"input_ids must be an integer tensor [batch, length], got {shape}")
        if attention_mask is None:
            return torch.ones_like(input_ids, dtype=torch.long)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                f"shape {tuple(input_ids.shape)}"
            )
        return attention_mask.long()

    def _check_length(self, length: int, what: str) -> None:
        max_positions = _max_positions(self.lm)
        if max_positions is not None and length > max_positions:
            raise ValueError(
                f"{what} is {length} positions, more than the LM's n_positions {max_positions}"
            )

    def embed(
        self,
        visual_inputs: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_embeds [B, N+L, d], attention_mask [B, N+L]): image tokens, then the text.

        The text is used as given (right-padded for training); the N image positions get
        mask 1. ``visual_inputs`` is whatever the vision encoder takes (pixels, cell ids).
        """
        mask = self._check_text(input_ids, attention_mask)
        batch = input_ids.shape[0]
        if not isinstance(visual_inputs, torch.Tensor) or visual_inputs.ndim < 1:
            raise ValueError("visual_inputs must be a tensor with a batch dimension")
        if visual_inputs.shape[0] != batch:
            raise ValueError(
                f"batch sizes differ: visual_inputs has {visual_inputs.shape[0]}, input_ids "
                f"has {batch}"
            )
        tokens = self.vision(visual_inputs)
        if tokens.ndim != 3 or tokens.shape[0] != batch:
            raise ValueError(
                f"the vision encoder must return [batch={batch}, tokens, width], got "
                f"{tuple(tokens.shape)}"
            )
        if tokens.shape[-1] != self.projector.in_features:
            raise ValueError(
                f"vision encoder width {tokens.shape[-1]} does not match the projector's input "
                f"width {self.projector.in_features}"
            )
        text = self.lm.get_input_embeddings()(input_ids)
        image = self.projector(tokens).to(text.dtype)
        image_mask = mask.new_ones(batch, image.shape[1])
        return torch.cat([image, text], dim=1), torch.cat([image_mask, mask], dim=1)

    @staticmethod
    def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
        """0, 1, 2, ... over the attended positions (0 at padding), as `generate` makes them."""
        positions = attention_mask.long().cumsum(-1) - 1
        return positions.masked_fill(attention_mask == 0, 0)

    # ------------------------------------------------------------------------- forward

    def forward(
        self,
        visual_inputs: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> CausalLMOutputWithCrossAttentions:
        """The LM's output over [image tokens][text]; ``loss`` over the text labels only.

        ``labels`` [B, L] align with ``input_ids`` (-100 = no loss, e.g. prompt and padding;
        the LM shifts them: logits at position t predict label t+1). The logits cover all
        N+L positions; text position j is at N+j.
        """
        embeds, mask = self.embed(visual_inputs, input_ids, attention_mask)
        self._check_length(embeds.shape[1], "image tokens + text")
        full_labels = None
        if labels is not None:
            if labels.shape != input_ids.shape or labels.dtype.is_floating_point:
                raise ValueError(
                    f"labels must be integer and shaped like input_ids {tuple(input_ids.shape)}, "
                    f"got {labels.dtype} {tuple(labels.shape)}"
                )
            n_image = embeds.shape[1] - input_ids.shape[1]
            ignore = labels.new_full((labels.shape[0], n_image), IGNORE_INDEX)
            full_labels = torch.cat([ignore, labels], dim=1).long()
        return self.lm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=self.position_ids(mask),
            labels=full_labels,
            use_cache=False,
        )

    @staticmethod
    def left_align(
        inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move every row's padding to the front, keeping the order of its real positions."""
        order = torch.sort(attention_mask, dim=1, stable=True).indices  # zeros (padding) first
        gather = order.unsqueeze(-1).expand(-1, -1, inputs_embeds.shape[-1])
        return inputs_embeds.gather(1, gather), attention_mask.gather(1, order)

    @torch.no_grad()
    def generate_answers(
        self,
        visual_inputs: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 5,
    ) -> torch.Tensor:
        """Greedy answers: the new token ids [B, max_new_tokens] (after eos: pad ids).

        Prompts may be padded on either side: each row becomes [padding][image][real text]
        (left padding, so every row's next token is at the end) before ``lm.generate``
        (greedy, KV cache); positions skip the padding, so a batch gives the answers each
        prompt gets alone. Call ``model.eval()`` first if the LM has dropout.
        """
        check_int("max_new_tokens", max_new_tokens)
        embeds, mask = self.embed(visual_inputs, input_ids, attention_mask)
        longest = int(mask.sum(dim=1).max())
        self._check_length(longest + max_new_tokens, "image tokens + prompt + max_new_tokens")
        embeds, mask = self.left_align(embeds, mask)
        pad = self.pad_token_id
        new = self.lm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=self.eos_token_id,
        )
        if new.shape[1] < max_new_tokens:  # every row stopped at eos early
            fill = new.new_full((new.shape[0], max_new_tokens - new.shape[1]), pad)
            new = torch.cat([new, fill], dim=1)
        return new

    # ------------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write config.json, lm/ (``lm.save_pretrained``), vision/projector safetensors."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = dataclasses.asdict(self.config)
        config["encoder_kwargs"].pop("pretrained_path", None)  # the weights are saved here
        width, num_tokens = _vision_shape(self.vision)
        vision_info = {
            "class": type(self.vision).__name__,
            "width": width,
            "num_tokens": num_tokens,
        }
        payload = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": config,
            "vision": vision_info,
        }
        (out / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        self.lm.save_pretrained(str(out / LM_DIR))
        save_state(self.vision, out / VISION_FILE, {k: str(v) for k, v in vision_info.items()})
        projector_info = {
            "kind": self.projector.kind,
            "in_features": str(self.projector.in_features),
            "out_features": str(self.projector.out_features),
        }
        save_state(self.projector, out / PROJECTOR_FILE, projector_info)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], vision: nn.Module | None = None
    ) -> GridVLM:
        """Rebuild a saved GridVLM on the CPU, offline, in eval mode.

        The vision encoder is rebuilt from the config, or ``vision`` (required for
        encoder="custom") receives the saved weights; a vision module or checkpoint of
        another width raises ValueError naming both widths.
        """
        from transformers import AutoModelForCausalLM

        src = Path(directory).expanduser()
        if not src.is_dir():
            raise ValueError(f"GridVLM directory {str(directory)!r} does not exist")
        for name in (CONFIG_FILE, VISION_FILE, PROJECTOR_FILE, f"{LM_DIR}/config.json"):
            if not (src / name).is_file():
                raise ValueError(
                    f"{str(directory)!r} is not a GridVLM directory: {name} is missing"
                )
        payload = json.loads((src / CONFIG_FILE).read_text())
        if payload.get("format") != _FORMAT or payload.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{str(src / CONFIG_FILE)!r} is not a {_FORMAT} config of version {_FORMAT_VERSION}"
            )
        config = VLMConfig(**payload["config"])
        if vision is None:
            if config.encoder == "custom":
                raise ValueError(
                    f"{str(directory)!r} was saved with a custom vision encoder "
                    f"({payload['vision']['class']}); pass vision=<module of that kind>"
                )
            vision = build_vision_encoder(config)
        vision_state, vision_meta = read_state(src / VISION_FILE)
        saved_width = int(vision_meta.get("width", payload["vision"]["width"]))
        width, _ = _vision_shape(vision)
        if saved_width != width:
            raise ValueError(
                f"the vision checkpoint in {str(directory)!r} has width {saved_width}, but the "
                f"vision encoder has width {width}"
            )
        load_state_strict(vision, vision_state, f"vision checkpoint {str(src / VISION_FILE)!r}")
        projector_state, meta = read_state(src / PROJECTOR_FILE)
        projector = Projector(meta["kind"], int(meta["in_features"]), int(meta["out_features"]))
        load_state_strict(projector, projector_state, f"projector checkpoint in {str(directory)!r}")
        lm = AutoModelForCausalLM.from_pretrained(str(src / LM_DIR), local_files_only=True)
        return cls(config, lm=lm, vision=vision, projector=projector).eval()
