"""Reading local weight files and loading them strictly, with errors that list what differs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (.safetensors or torch): a state_dict, or a dict holding
    one under ``state_dict`` / ``model``; a ``module.`` prefix (DDP) is dropped. ``what``
    names the file in errors (e.g. "image_weights 'x.pt'")."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # a dependency of both timm and transformers

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"{what} is not a readable torch checkpoint: {error}") from error
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{what} does not hold a state_dict of tensors")
    prefix = "module."  # saved from a DistributedDataParallel wrapper
    if state and all(key.startswith(prefix) for key in state):
        state = {key[len(prefix) :]: value for key, value in state.items()}
    return dict(state)


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """module.load_state_dict(state, strict=True), with a ValueError listing the mismatches."""
    own = module.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own.keys() & state.keys()
        if state[key].shape != own[key].shape
    )
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(items)}): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
            for label, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", shapes),
            )
            if items
        ]
        raise ValueError(f"{what} does not match the module: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


def load_timm_weights(model: nn.Module, path: Path, what: str) -> None:
    """A local checkpoint into a timm model built with num_classes=0: the classifier keys
    of the checkpoint (timm's ``pretrained_cfg["classifier"]``) are dropped, the rest must fit."""
    state = read_state_dict(path, what)
    own = model.state_dict()
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)}
    load_state_strict(model, state, what)
