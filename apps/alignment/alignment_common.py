"""What the alignment app's measurement scripts share: errors, output checks, the feature
cache and the small demo models."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# the demo ViT: small enough for CPU seconds, CLS token and every block kept
DEMO_VIT = ("vit_tiny_patch16_224", "", {"img_size": 32, "patch_size": 8, "embed_dim": 32,
                                         "depth": 3, "num_heads": 2})  # fmt: skip


def fail(message: str) -> None:
    """Print ``error: message`` and exit with status 2 (bad input, nothing written)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def refuse_existing(out: Path, names: Sequence[str], overwrite: bool) -> None:
    """Exit 2 when ``out`` already holds results and ``--overwrite`` was not given."""
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        fail(f"--out {out} already holds {', '.join(existing)}; pass --overwrite to replace them")


def cached_features(folder: Path, key: str, ids: Sequence[str], compute: Callable[[], Any]):
    """Features ``folder/<key>.pt`` when they hold these ids in this order, else computed
    (and saved with the ids' hash)."""
    from mm_models.features import ids_hash, load_features, save_features

    path = folder / f"{key}.pt"
    if path.is_file():
        payload = load_features(path)
        if payload["ids_hash"] == ids_hash(ids):
            return payload["feats"]
    feats = compute()
    save_features(path, feats, ids, key=key)
    return feats


def demo_models(out: Path, captions: list[str]) -> list[str]:
    """Three small random-init GPT-2 folders (widths 16/32/64, a BPE trained on captions)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from mm_models.gridvlm import train_bpe_tokenizer

    paths = []
    for k, width in enumerate((16, 32, 64)):
        folder = out / "models" / f"gpt2-w{width}"
        if not (folder / "config.json").is_file():
            tokenizer = train_bpe_tokenizer(captions, vocab_size=400, out_dir=folder)
            torch.manual_seed(k)
            config = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=2, n_head=2,
                                n_positions=128)  # fmt: skip
            GPT2LMHeadModel(config).save_pretrained(folder)
        paths.append(str(folder))
    return paths


def vit_specs(specs: Sequence[str]) -> list[tuple[str, str, dict]]:
    """``NAME`` or ``NAME:WEIGHTS`` flags -> (name, weights, timm kwargs)."""
    return [(s.partition(":")[0], s.partition(":")[2], {}) for s in specs]


def vision_features(vits, load_image, n: int, ids, folder: Path, device, image_size: int,
                    batch_size: int) -> dict[str, Any]:  # fmt: skip
    """{label: CLS features [n, blocks, width]} of every ViT spec on images 0..n-1
    (``load_image(i)`` -> PIL), resized and centre-cropped to ``image_size``, ImageNet
    normalised; cached in ``folder`` by the ids' hash."""
    import torch
    import torchvision.transforms as T

    from mm_models.features import load_vit, vit_features

    norm = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(),
                      T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])  # fmt: skip

    def images(rows: slice) -> torch.Tensor:
        return torch.stack([norm(load_image(i)) for i in range(n)[rows]])

    out = {}
    for k, (name, weights, kwargs) in enumerate(vits):
        label = f"{name}-{k}" if len(vits) > 1 else name

        def compute(_n=name, _w=weights, _kw=kwargs):
            model = load_vit(_n, _w or None, **_kw).to(device)
            return vit_features(model, images, n=n, batch_size=batch_size)

        out[label] = cached_features(folder, f"vit-{label}", ids, compute)
    return out


def finish_plot(fig, ax, path: Path, legend: bool = True) -> None:
    """Grid, legend, tight layout, PNG at 120 dpi, figure closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# movies per split of the generated MM-IMDb miniature a missing --data-root gets
MINIATURE_MOVIES = 256


def start_measurement(cfg, tables: Sequence[str]):
    """(out folder, device) of a measurement script: refuses a used --out, sets threads."""
    import torch

    from mm_train import resolve_device

    out = Path(cfg.out)
    refuse_existing(out, tables, cfg.overwrite)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return out, resolve_device(cfg.device)
