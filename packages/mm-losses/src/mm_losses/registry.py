"""Name -> loss-class registry: a new loss is one module plus one ``@register`` line."""

from __future__ import annotations

from collections.abc import Callable

import torch

_REGISTRY: dict[str, type[torch.nn.Module]] = {}


def register(name: str) -> Callable[[type[torch.nn.Module]], type[torch.nn.Module]]:
    """Class decorator that makes a loss buildable as ``mm_losses.build(name, ...)``."""

    def decorator(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"loss name {name!r} is already registered to {_REGISTRY[name]}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def available() -> list[str]:
    """Sorted names of every registered loss."""
    return sorted(_REGISTRY)


def get(name: str) -> type[torch.nn.Module]:
    """The loss class registered under ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def build(name: str, **kwargs) -> torch.nn.Module:
    """Construct the loss registered under ``name`` with keyword arguments ``kwargs``."""
    cls = get(name)
    try:
        return cls(**kwargs)
    except TypeError as err:  # unknown keyword: name the loss and the bad argument
        raise ValueError(f"cannot build loss {name!r}: {err}") from err
