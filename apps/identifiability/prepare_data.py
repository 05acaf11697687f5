"""Generate an image/text corpus in the Multimodal3DIdent on-disk layout (procedural 2D stand-in).

    uv run apps/identifiability/prepare_data.py --out data/m3di-small     # CPU-preset corpus
    uv run apps/identifiability/prepare_data.py --preset paper --out data/m3di   # 125k/10k/10k

Per split (train, val, test), aligned by index: images/<i>.png, text/text_raw.txt,
latents_image.csv and latents_text.csv, with the real data set's columns and factor roles
(shape and position shared, colour dependent, rotations/spotlight/background image-specific,
phrasing text-specific). train.py --experiment imgtxt reads it, or the real archive, with
--datapath.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mm_data.identifiability import write_multimodal3dident
from mm_train import parse_config, save_config

HERE = Path(__file__).resolve().parent


@dataclass
class DataConfig:
    """Flags of prepare_data.py."""

    out: str = field(default="data/m3di-small", metadata={"help": "root directory to write"})
    n_train: int = field(default=10_000, metadata={"help": "training pairs"})
    n_val: int = field(default=1_000, metadata={"help": "validation pairs (predictors are fit)"})
    n_test: int = field(default=1_000, metadata={"help": "test pairs (predictors are scored)"})
    image_size: int = field(default=64, metadata={"help": "image side in pixels (real: 224)"})
    seed: int = field(default=0, metadata={"help": "seed of the latents (each split its own)"})
    overwrite: bool = field(
        default=False, metadata={"help": "write into --out even if it already holds a corpus"}
    )


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_config(DataConfig, argv, preset_dir=HERE / "presets" / "data", description=__doc__)
    for name in ("n_train", "n_val", "n_test", "image_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    root = Path(cfg.out)
    if (root / "train" / "latents_image.csv").exists() and not cfg.overwrite:
        raise FileExistsError(f"{root} already holds a corpus; pass --overwrite to replace it")
    started = time.perf_counter()
    write_multimodal3dident(
        root, cfg.n_train, cfg.n_val, cfg.n_test, image_size=cfg.image_size, seed=cfg.seed
    )
    save_config(cfg, root / "prepare_config.json")
    total = cfg.n_train + cfg.n_val + cfg.n_test
    print(f"wrote {total} pairs to {root} in {time.perf_counter() - started:.0f} s")
    return root


if __name__ == "__main__":
    main()
