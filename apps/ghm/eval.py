"""Evaluate GHM runs against exact Bayes (belief propagation), on common random numbers.

    uv run apps/ghm/eval.py --bayes --preset paper --task clip --p 0.2 --out DIR
    uv run apps/ghm/eval.py --run runs/ghm --out DIR        # held-out risk vs Bayes, any task;
        # dns runs: mse_to_bayes_mean, nwp runs: kl_to_bayes (+ kl_by_position.csv/png)
    uv run apps/ghm/eval.py --run runs/ghm --zero-shot --out DIR   # clip: risk vs M, A/M + B
    uv run apps/ghm/eval.py --run runs/ghm --ood --out DIR    # test p sweep vs Bayes and
                                                              # misspecified BP, any task
    uv run apps/ghm/eval.py --run runs/ghm --compare runs/ghm-shallow --out DIR
        # several runs of one task and tree on the same samples, with the paired
        # difference to --run and its standard error

Writes DIR/summary.json (flat keys), CSV tables and PNG plots.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ghm_config import EvalConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(EvalConfig, argv, preset_dir=HERE / "presets" / "eval", description=__doc__)
    from ghm_evaluation import evaluate  # torch and the models load after the flags are checked

    return evaluate(cfg)


if __name__ == "__main__":
    main()
