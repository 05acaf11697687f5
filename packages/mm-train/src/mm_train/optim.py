"""AdamW with parameter groups: no decay on 1-D parameters, per-module lr scales, frozen skipped.

The grouping follows the usual recipe for transformers and CLIP-style models: weight decay
only on matrices and convolution kernels; biases, normalisation weights and scalar
parameters (e.g. a learnable temperature) are not decayed. A module-name prefix can carry a
learning-rate scale (``{"text_encoder": 0.1}`` trains the text tower 10x slower); the
scale is stored in each group as ``lr_scale`` and schedules in :mod:`mm_train.schedules`
preserve it. Parameters with ``requires_grad=False`` are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def _scale_for(name: str, lr_scales: Mapping[str, float]) -> tuple[str, float]:
    """Return the longest prefix of ``name`` (at a dot boundary) in ``lr_scales``, and its scale."""
    best = ""
    for prefix in lr_scales:
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return best, float(lr_scales[best]) if best else 1.0


def _no_decay_names(model: nn.Module, extra: Iterable[str]) -> set[str]:
    """Names of parameters that get no weight decay: 1-D, biases, norm-layer params, ``extra``."""
    names = set(extra)
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if param.ndim <= 1 or param_name == "bias" or isinstance(module, _NORM_TYPES):
                names.add(full)
    return names


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    lr_scales: Mapping[str, float] | None = None,
    no_decay: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Split trainable parameters into (decay, no-decay) x lr-scale groups for an optimizer."""
    lr_scales = dict(lr_scales or {})
    for prefix, scale in lr_scales.items():
        if scale < 0:
            raise ValueError(f"lr_scales[{prefix!r}] must be >= 0, got {scale}")
    module_names = {name for name, _ in model.named_modules()}
    unknown = [p for p in lr_scales if p not in module_names]
    if unknown:
        raise ValueError(f"lr_scales names no module of the model: {unknown}")
    skip_decay = _no_decay_names(model, no_decay)
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        prefix, scale = _scale_for(name, lr_scales)
        decay = name not in skip_decay and weight_decay > 0
        key = (prefix, decay)
        if key not in groups:
            label = ("decay" if decay else "no_decay") + (f":{prefix}" if prefix else "")
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * scale,
                "lr_scale": scale,
                "group_name": label,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    return list(groups.values())


def build_adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lr_scales: Mapping[str, float] | None = None,
    no_decay: Iterable[str] = (),
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` of ``model`` (fused kernel by default when on CUDA)."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    groups = param_groups(
        model, lr=lr, weight_decay=weight_decay, lr_scales=lr_scales, no_decay=no_decay
    )
    if fused is None:  # the fused CUDA kernel is faster and exact enough; CPU uses foreach
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
