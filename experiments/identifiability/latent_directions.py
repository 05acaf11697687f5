"""Which latent directions a trained simulation encoder keeps: linear R^2 per direction.

    uv run experiments/identifiability/latent_directions.py --run runs/ident

For each encoder (hz1, hz2) of an `--experiment mlp` run, the linear R^2 of
- every eigendirection of the content covariance Sigma_c (weakest first), and
- every generalised eigendirection u_k of (Sigma_s, Sigma_a) (most invariant first, with
  corr(u_k.s, u_k.s~) = sqrt(r_k / (1 + r_k)); see latent_oracle.py),
fitted on `--samples` fresh pairs and scored on as many more. With a 5-dim code, a result
such as content (0.00, 0.21, 0.88, 0.97, 0.98) and style (0.9, 0.9, 0, 0, 0) says that the
two weakest content directions were traded for the two most invariant style directions.
Writes RUN/directions.csv (encoder, block, direction, variance, invariance, r2_linear).
Style directions ignore content-dependent style (B c is left out of Sigma_s).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "apps" / "identifiability"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from identifiability_tasks import (  # noqa: E402
    IdentifiabilityConfig,
    load_trained_simulation,
    mixed_views,
)
from latent_oracle import style_directions  # noqa: E402

from mm_data.identifiability import LatentModel  # noqa: E402
from mm_eval.identifiability import evaluate_prediction, write_results_csv  # noqa: E402
from mm_train import load_config  # noqa: E402


def content_directions(model: LatentModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(variances ascending, unit eigenvectors as columns) of the content covariance."""
    return torch.linalg.eigh(model.covariance("c"))


def direction_r2(
    h_fit: np.ndarray, y_fit: np.ndarray, h_test: np.ndarray, y_test: np.ndarray, u: np.ndarray
) -> list[float]:
    """Linear R^2 of each projection y @ u[:, k] from h (fit on *_fit, scored on *_test)."""
    if u.ndim != 2 or u.shape[0] != y_fit.shape[1]:
        raise ValueError(f"directions must be [{y_fit.shape[1]}, K], got {list(u.shape)}")
    return [
        evaluate_prediction(h_fit, y_fit @ u[:, [k]], h_test, y_test @ u[:, [k]], "linear")
        for k in range(u.shape[1])
    ]


def analyse(run: Path, samples: int = 20_000, seed: int = 123) -> list[dict]:
    """Rows (encoder, block, direction, variance, invariance, r2_linear) of one mlp run."""
    cfg = load_config(IdentifiabilityConfig, Path(run) / "config.json")
    if cfg.experiment != "mlp":
        raise ValueError(f"{run}: experiment is {cfg.experiment!r}; directions need an mlp run")
    if samples < 10:
        raise ValueError(f"--samples must be >= 10, got {samples}")
    latents, f1, f2, encoders = load_trained_simulation(run, cfg)
    encoders.eval()
    generator = torch.Generator().manual_seed(seed)
    fit_batch, *fit_x = mixed_views(latents, f1, f2, samples, generator)
    test_batch, *test_x = mixed_views(latents, f1, f2, samples, generator)
    blocks = {}
    if cfg.content_n:
        var_c, u_c = content_directions(latents)
        blocks["c"] = ("c", var_c, [math.nan] * len(var_c), u_c)
    if cfg.style_n:
        r, u_s = style_directions(latents)
        corr = [math.sqrt(v / (1 + v)) for v in r.tolist()]
        var_s = ((u_s.T @ latents.covariance("s")) * u_s.T).sum(1)
        blocks["s"] = ("s", var_s, corr, u_s)
    rows = []
    with torch.no_grad():
        for name, encoder, view in (("hz1", encoders.g1, 0), ("hz2", encoders.g2, 1)):
            h_fit = encoder(fit_x[view]).double().numpy()
            h_test = encoder(test_x[view]).double().numpy()
            for block, (target, variance, invariance, u) in blocks.items():
                y_fit = getattr(fit_batch, target).double().numpy()
                y_test = getattr(test_batch, target).double().numpy()
                r2 = direction_r2(h_fit, y_fit, h_test, y_test, u.numpy())
                for k, value in enumerate(r2):
                    rows.append({
                        "encoder": name, "block": block, "direction": k,
                        "variance": float(variance[k]), "invariance": invariance[k],
                        "r2_linear": value,
                    })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a train.py --experiment mlp output directory")
    parser.add_argument("--samples", type=int, default=20_000, help="fit and test samples each")
    parser.add_argument("--seed", type=int, default=123, help="seed of the fresh samples")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run = Path(args.run)
    rows = analyse(run, args.samples, args.seed)
    for block, label in (("c", "content eigendirections, weakest first"),
                         ("s", "style directions, most invariant first")):  # fmt: skip
        sel = [r for r in rows if r["block"] == block]
        if not sel:
            continue
        first = [r for r in sel if r["encoder"] == "hz1"]
        print(f"{label}")
        print("  variance   " + " ".join(f"{r['variance']:7.3f}" for r in first))
        if block == "s":
            print("  corr(s,s~) " + " ".join(f"{r['invariance']:7.3f}" for r in first))
        for encoder in ("hz1", "hz2"):
            values = [r["r2_linear"] for r in sel if r["encoder"] == encoder]
            print(f"  R2 {encoder}     " + " ".join(f"{v:7.3f}" for v in values))
    write_results_csv(rows, run / "directions.csv")
    print(f"wrote {run / 'directions.csv'}")
    return rows


if __name__ == "__main__":
    main()
