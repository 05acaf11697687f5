"""Every layer's features of a language model or a ViT, for alignment measurements.

- `lm_features(model, tokenizer, texts)`: a Hugging Face causal LM's hidden states of
  every layer (the embedding output included), mean over each text's tokens with the
  attention mask ("avg" pooling) -> [N, layers + 1, width]; and each text's bits per byte
  (sum of the next-token cross-entropies in nats x log2(e) / UTF-8 bytes), the LM's
  score on the captions.
- `vit_features(model, images)`: a timm ViT's residual stream after every block, the CLS
  token -> [N, blocks, width].
- `save_features` / `load_features`: one ``.pt`` file per model and data set, with the
  sample ids' hash stored beside the tensor, so features of different samples (or of the
  same samples in another order) are never compared.

Models come from local paths (`load_lm`; `load_vit` builds a timm ViT from its name and
loads a local state_dict); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "ids_hash",
    "lm_features",
    "load_features",
    "load_lm",
    "load_vit",
    "save_features",
    "vit_features",
]

FORMAT = "mm-features/1"


def ids_hash(ids: Sequence[str]) -> str:
    """SHA-256 of the sample ids in order (what a features file is checked by)."""
    digest = hashlib.sha256()
    for sample_id in ids:
        digest.update(str(sample_id).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _batches(n: int, batch_size: int, desc: str, progress: bool) -> Iterable[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", total=math.ceil(n / batch_size))
    for start in starts:
        yield slice(start, min(start + batch_size, n))


def load_lm(path: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer) of a causal LM saved with ``save_pretrained`` in ``path``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"language model path {path} has no config.json (save_pretrained)")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path)).to(device).eval()
    return model, tokenizer


def load_vit(name: str, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A timm ViT built from its name (no download), with local weights when given."""
    import timm

    from mm_models._weights import load_state_strict, read_state_dict

    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as error:  # timm: unknown model
        raise ValueError(f"timm model {name!r}: {error}") from error
    if weights:
        path = Path(weights)
        state = read_state_dict(path, f"ViT weights {str(path)!r}")
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        load_state_strict(model, state, f"ViT weights {str(path)!r}")
    return model.eval()


@torch.no_grad()
def lm_features(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 16,
    max_length: int = 256,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, layers + 1, width] float32, bits per byte [N]) of ``texts``."""
    if not texts:
        raise ValueError("texts is empty")
    device = next(model.parameters()).device
    tokenizer.padding_side = "right"
    pooled, bpb = [], []
    for rows in _batches(len(texts), batch_size, "LM features", progress):
        chunk = list(texts[rows])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length).to(device)  # fmt: skip
        out = model(**enc, output_hidden_states=True)
        mask = enc["attention_mask"].float()
        weights = (mask / mask.sum(dim=1, keepdim=True).clamp(min=1))[:, :, None]
        pooled.append(torch.stack([(h.float() * weights).sum(dim=1) for h in out.hidden_states],
                                  dim=1).cpu())  # fmt: skip
        logits = out.logits[:, :-1].float()
        targets = enc["input_ids"][:, 1:]
        nats = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        nats = (nats * mask[:, 1:]).sum(dim=1)
        n_bytes = torch.tensor([max(len(t.encode("utf-8")), 1) for t in chunk], device=device)
        bpb.append((nats / math.log(2) / n_bytes).cpu())
    return torch.cat(pooled), torch.cat(bpb)


@torch.no_grad()
def vit_features(
    model: nn.Module,
    images: torch.Tensor | Callable[[slice], torch.Tensor],
    n: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> torch.Tensor:
    """CLS token of the residual stream after every block of a timm ViT: [N, blocks, width].

    ``images``: a tensor [N, 3, H, W] (already normalised for the model) or a function
    ``rows -> tensor`` with ``n`` samples (to read large folders batch by batch).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks):
        raise ValueError(f"{type(model).__name__} has no .blocks: not a timm ViT")
    if getattr(model, "cls_token", None) is None:
        raise ValueError(f"{type(model).__name__} has no CLS token (class_token=False)")
    if isinstance(images, torch.Tensor):
        n, source = len(images), (lambda rows: images[rows])
    elif n is None:
        raise ValueError("give n (the sample count) when images is a function")
    else:
        source = images
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _i, out: captured.append(out[:, 0]))
               for b in blocks]  # fmt: skip
    feats = []
    try:
        for rows in _batches(n, batch_size, "ViT features", progress):
            captured.clear()
            model.forward_features(source(rows).to(device))
            feats.append(torch.stack(captured, dim=1).float().cpu())
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(feats)


def save_features(path: str | Path, feats: torch.Tensor, ids: Sequence[str], **meta: Any) -> Path:
    """Write ``{"feats", "ids_hash", "n", meta...}`` to ``path`` (atomically)."""
    if feats.ndim != 3:
        raise ValueError(f"feats must be [N, layers, width], got {tuple(feats.shape)}")
    if len(ids) != len(feats):
        raise ValueError(f"{len(ids)} ids for {len(feats)} feature rows")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"format": FORMAT, "feats": feats.contiguous(), "ids_hash": ids_hash(ids),
               "n": len(ids), **meta}  # fmt: skip
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_features(path: str | Path) -> dict[str, Any]:
    """A features file written by `save_features` (checked)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"features file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"features file {path} is not readable: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"features file {path} is not an {FORMAT} file (save_features)")
    feats = payload["feats"]
    if feats.ndim != 3 or len(feats) != payload["n"]:
        raise ValueError(f"features file {path}: feats {tuple(feats.shape)} for n = {payload['n']}")
    if not torch.isfinite(feats).all():
        raise ValueError(f"features file {path} holds NaN or inf features")
    return payload
