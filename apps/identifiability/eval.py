"""Evaluate a trained identifiability run: how well do the encodings predict each latent factor?

    uv run apps/identifiability/eval.py --run runs/identifiability
    uv run apps/identifiability/eval.py --run DIR --nonlinear kernel_ridge   # exact KRR (O(n^3))
    uv run apps/identifiability/eval.py --preset paper --run DIR             # 20,480 + 20,480

Predictors are fit on a validation set and scored on a test set; encodings are standardised
with the validation statistics (Daunhawer et al., ICLR 2023, sections 5.1-5.2).

- mlp runs: the saved mixing functions (DIR/mixing.pt) and encoders are reloaded, fresh val
  and test latents drawn; for each encoder (hz1 = g1(f1(z1)), hz2 = g2(f2(z2))) and target
  (c, s, s_tilde, m1, m2) DIR/results.csv holds r2_linear and r2_nonlinear.
- imgtxt runs: the val and test splits of the data directory; per modality and factor,
  continuous factors get r2_linreg / r2_krreg, discrete ones acc_logreg / acc_mlp, and
  `chance` is the score of a predictor that ignores the encoding.

Writes DIR/results.csv, DIR/results_heatmap.png and DIR/eval_summary.json (flat keys), and
copies the headline numbers into DIR/summary.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runpy / importers

from identifiability_config import EvalConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(EvalConfig, argv, preset_dir=HERE / "presets" / "eval", description=__doc__)
    from identifiability_evaluation import evaluate  # torch, scikit-learn load after the flags

    return evaluate(cfg)


if __name__ == "__main__":
    main()
