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

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runpy / importers

from identifiability_config import DataConfig

from mm_train import parse_config, save_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_config(DataConfig, argv, preset_dir=HERE / "presets" / "data", description=__doc__)
    from mm_data.identifiability import write_multimodal3dident  # after the flags are checked

    root = Path(cfg.out)
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
