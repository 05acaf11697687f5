"""Write the synthetic image-caption corpus (and optionally WebDataset shards of it).

    uv run apps/sogclr/prepare_data.py                                  # data/sogclr-synthetic
    uv run apps/sogclr/prepare_data.py --data.root data/big --data.synthetic-train 100000
    uv run apps/sogclr/prepare_data.py --shards data/sogclr-synthetic/shards

The corpus is in exactly the formats of the real data (train.json, COCO-style eval.json,
an ImageFolder zeroshot/ tree with classnames.txt): rendered scenes of 1-3 coloured
shapes at named positions with compositional captions. train.py generates it on first
use; this script writes it ahead of time, larger, or as shards.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sogclr_config import PrepareConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_config(PrepareConfig, argv, preset_dir=None, description=__doc__)
    from mm_data.imagetext import write_synthetic_corpus, write_webdataset_shards

    root = Path(cfg.data.root)
    if (root / cfg.data.train_file).is_file() and not cfg.overwrite:
        raise SystemExit(f"error: --data.root {root} already holds a corpus; pass --overwrite")
    started = time.perf_counter()
    write_synthetic_corpus(
        root,
        n_train=cfg.data.synthetic_train,
        n_eval=cfg.data.synthetic_eval,
        n_zeroshot_per_class=cfg.data.synthetic_zeroshot,
        image_size=cfg.data.synthetic_size,
        seed=cfg.data.synthetic_seed,
        overwrite=cfg.overwrite,
    )
    print(f"wrote the corpus to {root} in {time.perf_counter() - started:.0f} s")
    if cfg.shards:
        shards = write_webdataset_shards(
            root / cfg.data.train_file, root / cfg.data.train_images, cfg.shards,
            samples_per_shard=cfg.samples_per_shard,
        )  # fmt: skip
        print(f"wrote {len(shards)} shards to {cfg.shards}")
    return root


if __name__ == "__main__":
    main()
