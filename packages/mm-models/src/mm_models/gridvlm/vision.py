"""Vision encoders that give a sequence of tokens, and the projector to the LM width.

The vision-encoder interface of `GridVLM` is small: an `nn.Module` with int attributes
``width`` (token size) and ``num_tokens``, whose ``forward(visual_inputs)`` returns
``[B, num_tokens, width]``. `TimmTokenEncoder` (images) and `OneHotCellEncoder` (cell class
ids) are two; any module with the same three things plugs in (``encoder="custom"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from mm_models._weights import load_state_strict, load_timm_weights
from mm_models.gridvlm._checks import check_int

if TYPE_CHECKING:
    from mm_models.dual_encoder import DualEncoder

__all__ = ["DEFAULT_VIT", "PROJECTOR_KINDS", "OneHotCellEncoder", "Projector", "TimmTokenEncoder"]

DEFAULT_VIT = "vit_tiny_patch16_224"  # shrink it with img_size, patch_size, depth, embed_dim
PROJECTOR_KINDS = ("linear", "mlp")


class TimmTokenEncoder(nn.Module):
    """A timm model (random init, ``pretrained=False``) read out as tokens of forward_features.

    ``forward(pixel_values [B, in_chans, image_size, image_size]) -> [B, num_tokens, width]``.
    ViT-style outputs ``[B, prefix + N, C]`` lose their ``num_prefix_tokens`` (CLS, register)
    tokens; CNN feature maps ``[B, C, h, w]`` (or NHWC, e.g. Swin) become ``[B, h*w, C]``
    in row-major order. ``image_size`` is given to timm as ``img_size`` when the model takes
    one (ViTs; CNNs take any size). ``num_tokens``, ``width`` and ``grid_size`` (the token
    grid ``(h, w)``, None if unknown) are measured with one forward pass at construction.

    ``pretrained_path`` is a local state_dict file (.safetensors, or torch .pt/.pth/.bin,
    possibly DDP-prefixed or under "state_dict"/"model"); classifier keys are dropped, the rest
    must match exactly. ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``patch_size=9,
    depth=4, embed_dim=128, num_heads=4``).
    """

    def __init__(
        self,
        model_name: str,
        image_size: int,
        pretrained_path: str | os.PathLike[str] | None = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        import timm

        if not isinstance(model_name, str) or not timm.is_model(model_name):
            from mm_models.dual_encoder import _close_timm_names

            close = _close_timm_names(model_name) if isinstance(model_name, str) else []
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown timm model name {model_name!r}{hint}")
        check_int("image_size", image_size)
        reserved = sorted({"pretrained", "num_classes"} & timm_kwargs.keys())
        if reserved:
            raise ValueError(
                f"timm_kwargs may not set {reserved} (weights are never downloaded: use "
                "pretrained_path; the classifier is always removed)"
            )
        if "img_size" in timm_kwargs and timm_kwargs["img_size"] != image_size:
            raise ValueError(
                f"timm_kwargs img_size={timm_kwargs['img_size']!r} differs from "
                f"image_size={image_size}"
            )
        self.model_name = model_name
        self.image_size = image_size
        self.timm_kwargs = dict(timm_kwargs)
        self.in_chans = int(timm_kwargs.get("in_chans", 3))
        self.model = self._create(timm, model_name, image_size, self.timm_kwargs)
        if pretrained_path is not None:
            self._load(Path(pretrained_path).expanduser(), os.fspath(pretrained_path))
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        self.width, self.num_tokens, self.grid_size = self._probe()

    @staticmethod
    def _create(timm: Any, name: str, image_size: int, kwargs: dict[str, Any]) -> nn.Module:
        try:
            if "img_size" not in kwargs:
                try:
                    return timm.create_model(
                        name, pretrained=False, num_classes=0, img_size=image_size, **kwargs
                    )
                except TypeError as error:
                    if "img_size" not in str(error):
                        raise
            return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        except TypeError as error:
            raise ValueError(f"timm_kwargs {kwargs} do not fit {name!r}: {error}") from None

    def _load(self, path: Path, shown: str) -> None:
        if not path.is_file():
            raise ValueError(f"pretrained_path {shown!r} does not exist or is not a file")
        load_timm_weights(self.model, path, f"pretrained_path {shown!r} (timm {self.model_name!r})")

    def _tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        features = self.model.forward_features(pixel_values)
        if features.ndim == 3:
            grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
            return features[:, self.num_prefix_tokens :], tuple(grid) if grid else None
        if features.ndim == 4:
            if "NHWC" in str(getattr(self.model, "output_fmt", "NCHW")):
                return features.flatten(1, 2), (features.shape[1], features.shape[2])
            return features.flatten(2).transpose(1, 2), (features.shape[2], features.shape[3])
        raise ValueError(
            f"forward_features of timm {self.model_name!r} returned shape "
            f"{tuple(features.shape)}; expected [B, N, C] tokens or a [B, C, h, w] map"
        )

    def _probe(self) -> tuple[int, int, tuple[int, int] | None]:
        was_training = self.model.training
        param = next(self.model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        x = torch.zeros(1, self.in_chans, self.image_size, self.image_size, dtype=dtype)
        try:
            self.model.eval()  # no batch-norm statistics update, no dropout
            with torch.no_grad():
                tokens, grid = self._tokens(x.to(param.device if param is not None else "cpu"))
        finally:
            self.model.train(was_training)
        return int(tokens.shape[2]), int(tokens.shape[1]), grid

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, image_size, image_size] -> tokens [B, num_tokens, width]."""
        expected = (self.in_chans, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must be [batch, {', '.join(map(str, expected))}] "
                f"(image_size={self.image_size}), got {tuple(pixel_values.shape)}"
            )
        return self._tokens(pixel_values)[0]

    def config_fields(self) -> dict[str, Any]:
        """VLMConfig fields that rebuild this encoder (its weights travel in the checkpoint)."""
        return {
            "encoder": "timm",
            "encoder_name": self.model_name,
            "encoder_kwargs": {"image_size": self.image_size, **self.timm_kwargs},
        }

    @classmethod
    def from_dual_encoder(cls, dual: DualEncoder) -> TimmTokenEncoder:
        """The image tower of a trained `DualEncoder`, read out as tokens.

        Both build ``timm.create_model(image_model, pretrained=False, num_classes=0,
        **image_kwargs)``, so the tower's state_dict loads into ``encoder.model`` as is; the
        DualEncoder's pooling and ``image_proj`` are not used.
        """
        cfg = dual.config
        encoder = cls(cfg.image_model, cfg.image_size, **dict(getattr(cfg, "image_kwargs", {})))
        load_state_strict(
            encoder.model, dual.image_encoder.state_dict(), "the DualEncoder's image tower"
        )
        return encoder


class OneHotCellEncoder(nn.Module):
    """The vision-token ablation: one token per grid cell, the one-hot code of its class.

    ``forward(cell_ids)``: long ``[B, rows*cols]`` (row-major) or ``[B, rows, cols]``, values in
    ``0..num_classes-1`` -> float ``[B, rows*cols, num_classes]``. No parameters: the
    projector (``num_classes -> n_embd``) is what learns.

    ``positions=True`` appends the one-hot code of the cell's position (row-major index), so
    a token is ``[B, rows*cols, num_classes + rows*cols]``: the class and where it is, the
    two things a ViT token over the cell carries (its content and its position embedding).
    """

    def __init__(self, num_classes: int, rows: int, cols: int, positions: bool = False) -> None:
        super().__init__()
        check_int("num_classes", num_classes)
        check_int("rows", rows)
        check_int("cols", cols)
        if not isinstance(positions, bool):
            raise ValueError(f"positions must be a bool, got {positions!r}")
        self.num_classes, self.rows, self.cols = num_classes, rows, cols
        self.positions = positions
        self.width = num_classes + (rows * cols if positions else 0)
        self.num_tokens = rows * cols
        self.grid_size = (rows, cols)

    def forward(self, cell_ids: torch.Tensor) -> torch.Tensor:
        """Cell class ids -> one-hot tokens [B, rows*cols, num_classes] (float32)."""
        if (
            cell_ids.dtype.is_floating_point
            or cell_ids.dtype.is_complex
            or cell_ids.dtype == torch.bool
        ):
            raise ValueError(f"cell_ids must be an integer tensor, got {cell_ids.dtype}")
        if cell_ids.ndim == 3 and tuple(cell_ids.shape[1:]) == (self.rows, self.cols):
            cell_ids = cell_ids.flatten(1)
        if cell_ids.ndim != 2 or cell_ids.shape[1] != self.num_tokens:
            raise ValueError(
                f"cell_ids must be [batch, {self.num_tokens}] (rows*cols = {self.rows}*"
                f"{self.cols}) or [batch, {self.rows}, {self.cols}], got {tuple(cell_ids.shape)}"
            )
        if cell_ids.numel() and (cell_ids.min() < 0 or cell_ids.max() >= self.num_classes):
            raise ValueError(
                f"cell_ids must be in [0, {self.num_classes}) (num_classes), got "
                f"[{int(cell_ids.min())}, {int(cell_ids.max())}]"
            )
        tokens = F.one_hot(cell_ids.long(), self.num_classes).float()
        if self.positions:
            where = torch.eye(self.num_tokens, device=tokens.device).expand(len(tokens), -1, -1)
            tokens = torch.cat([tokens, where], dim=-1)
        return tokens

    def config_fields(self) -> dict[str, Any]:
        """VLMConfig fields that rebuild this encoder."""
        return {
            "encoder": "onehot",
            "encoder_kwargs": {
                "num_classes": self.num_classes,
                "rows": self.rows,
                "cols": self.cols,
                "positions": self.positions,
            },
        }


class Projector(nn.Module):
    """Vision tokens [..., in_features] -> LM embeddings [..., out_features].

    ``kind="linear"``: one Linear; ``kind="mlp"``: Linear(in, out), GELU, Linear(out, out)
    (LLaVA-1.5's projector). Inputs are cast to the projector's dtype.
    """

    def __init__(self, kind: str, in_features: int, out_features: int) -> None:
        super().__init__()
        if kind not in PROJECTOR_KINDS:
            raise ValueError(f"projector kind must be one of {PROJECTOR_KINDS}, got {kind!r}")
        check_int("in_features", in_features)
        check_int("out_features", out_features)
        self.kind, self.in_features, self.out_features = kind, in_features, out_features
        if kind == "linear":
            self.net = nn.Sequential(nn.Linear(in_features, out_features))
        else:
            self.net = nn.Sequential(
                nn.Linear(in_features, out_features),
                nn.GELU(),
                nn.Linear(out_features, out_features),
            )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] != self.in_features:
            raise ValueError(
                f"vision token width {tokens.shape[-1]} does not match the projector's input "
                f"width {self.in_features}"
            )
        return self.net(tokens.to(self.net[0].weight.dtype))
