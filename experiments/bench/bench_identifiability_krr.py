"""Scalable kernel ridge (Nystroem + RidgeCV) vs exact kernel ridge (GridSearchCV) on the
identifiability simulation's evaluation step.

Daunhawer et al. (ICLR 2023) score encodings with exact RBF kernel ridge, GridSearchCV over
alpha in {1, .1, .01, .001} x gamma in logspace(-2, 2, 4), 3-fold CV, fit on 20,480 samples
and scored on 20,480 more. That is 48 CV fits on 13,653 samples plus one refit on 20,480,
each an O(n^3) Cholesky. This script compares it with `mm_eval`'s scalable regressor
(`kind="kernel_ridge_nystroem"`).

Data: latents from `mm_data.identifiability.LatentModel` (content-dependent style, so that
style is partly predictable); "encodings" = a fixed random invertible MLP of the content c
plus 2% Gaussian noise (what an ideal content encoder looks like up to an invertible map).
Targets: c (R^2 near 1), s (in between), m1 (near 0).

Parts:
1. at --grid-n (default 4,096 fit + 4,096 score): the full exact grid vs scalable, R^2 and
   times per target;
2. at --n (default 20,480): scalable R^2 and time per target; exact kernel ridge refit once
   at --n with the (alpha, gamma) that the full grid chose at --grid-n (R^2 of exact KRR at
   20,480), timed; one CV-fold fit at 2/3 --n (fit 13,653, score 6,827) timed; the exact
   grid's time is extrapolated as 16 x 3 x t(CV fold) + t(refit), per target. With
   --full-exact the full grid is run at --n instead (hours on 2 cores).

    uv run python experiments/bench/bench_identifiability_krr.py            # ~30 min
    uv run python experiments/bench/bench_identifiability_krr.py --n 4096 --grid-n 2048
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from mm_data.identifiability import InvertibleMLP, LatentConfig, LatentModel
from mm_eval.identifiability import (
    KRR_ALPHAS,
    KRR_GAMMAS,
    NYSTROEM_COMPONENTS,
    evaluate_prediction,
    fit_predict_scaled_targets,
    kernel_ridge_grid,
    nystroem_kernel_ridge,
    standardize,
)

TARGETS = ("c", "s", "m1")


def simulate(n: int, seed: int, noise: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fit and score sets: encodings f(c) + noise and the latents c, s, m1."""
    model = LatentModel(LatentConfig(content_dependent_style=True, seed=seed))
    g = torch.Generator().manual_seed(seed + 1)
    encoder = InvertibleMLP(5, generator=g, threshold_seed=seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("z", *TARGETS)}
    for _ in range(2):
        batch = model.sample(n)
        with torch.no_grad():
            h = encoder(batch.c)
        h = h + noise * h.std(dim=0) * torch.randn(h.shape, generator=g)
        out["z"].append(h.numpy())
        for t in TARGETS:
            out[t].append(getattr(batch, t).numpy())
    return {k: (v[0], v[1]) for k, v in out.items()}


def r2(y, pred) -> float:
    return float(r2_score(y, pred, multioutput="uniform_average"))


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c


def timed_r2(zf, yf, zs, ys, fit):
    """Standardise on zf, fit every scaled target with `fit(y, a, b) -> prediction on b`,
    score R^2 on zs; the whole of it timed. Returns (r2, clock)."""
    with Clock() as clock:
        a, b = standardize(zf, zs)
        pred = fit_predict_scaled_targets(fit, a, yf, b)
    return r2(ys, pred), clock


def run_scalable(zf, yf, zs, ys, components: int, seed: int):
    info = {}

    def fit(y, a, b):
        pred, found = nystroem_kernel_ridge(a, y, b, n_components=components, seed=seed)
        info.update(found)
        return pred

    return (*timed_r2(zf, yf, zs, ys, fit), info)


def run_exact_grid(zf, yf, zs, ys):
    info = {}

    def fit(y, a, b):
        pred, found = kernel_ridge_grid(a, y, b)
        info.update(found)
        return pred

    return (*timed_r2(zf, yf, zs, ys, fit), info)


def run_exact_single(zf, yf, zs, ys, alpha: float, gamma: float):
    """One exact kernel ridge fit (one grid point) on all of zf, scored on zs."""

    def fit(y, a, b):
        return KernelRidge(kernel="rbf", alpha=alpha, gamma=gamma).fit(a, y).predict(b)

    return timed_r2(zf, yf, zs, ys, fit)


def fmt_t(clock) -> str:
    return f"{clock.wall:.1f} s (cpu {clock.cpu:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_480, help="fit = score set size")
    parser.add_argument("--grid-n", type=int, default=4096, help="size for the full grid")
    parser.add_argument("--components", type=int, default=NYSTROEM_COMPONENTS)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (both sides)")
    parser.add_argument("--full-exact", action="store_true", help="full exact grid at --n")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument(
        "--oracle-alphas",
        action="store_true",
        help="also refit exact KRR at --n for every grid alpha (at the chosen gamma) and "
        "report the best test R^2: an upper bound on what the grid could pick at that gamma",
    )
    args = parser.parse_args()
    targets = args.targets.split(",")
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        print(f"# threads={args.threads} components={args.components} noise={args.noise}")
        print(f"## Part 1: full exact grid vs scalable at n = {args.grid_n}\n")
        data = simulate(args.grid_n, args.seed, args.noise)
        zf, zs = data["z"]
        print(
            "| target | r2 linear | r2 exact KRR (grid) | r2 scalable | diff | exact time "
            "| scalable time | speed-up (wall) | exact params | scalable params |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        chosen = {}
        for t in targets:
            yf, ys = data[t]
            lin = evaluate_prediction(zf, yf, zs, ys, kind="linear")
            r_ex, c_ex, p_ex = run_exact_grid(zf, yf, zs, ys)
            r_sc, c_sc, p_sc = run_scalable(zf, yf, zs, ys, args.components, args.seed)
            chosen[t] = p_ex
            print(
                f"| {t} | {lin:.4f} | {r_ex:.4f} | {r_sc:.4f} | {r_sc - r_ex:+.4f} | "
                f"{fmt_t(c_ex)} | {fmt_t(c_sc)} | {c_ex.wall / c_sc.wall:.1f}x | "
                f"a={p_ex['alpha']:g}, g={p_ex['gamma']:.3g} | "
                f"a={p_sc['alpha']:g}, g={p_sc['gamma']:.3g} |",
                flush=True,
            )

        print(f"\n## Part 2: n = {args.n} fit + {args.n} score\n")
        data = simulate(args.n, args.seed + 100, args.noise)
        zf, zs = data["z"]
        t_cv = None
        if not args.full_exact:
            # One CV-fold fit at 2/3 n (the grid's unit of work), timed once: same cost per target.
            k = (2 * args.n) // 3
            p = chosen[targets[0]]
            _, t_cv = run_exact_single(
                zf[:k],
                data[targets[0]][0][:k],
                zf[k:],
                data[targets[0]][0][k:],
                p["alpha"],
                p["gamma"],
            )
            print(f"one CV-fold exact fit (fit {k}, score {args.n - k}): {fmt_t(t_cv)}\n")
        n_fits = len(KRR_ALPHAS) * len(KRR_GAMMAS) * 3
        print(
            "| target | r2 exact KRR | r2 scalable | diff | exact time | scalable time "
            "| speed-up (wall) | speed-up (cpu) | exact | scalable params |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for t in targets:
            yf, ys = data[t]
            r_sc, c_sc, p_sc = run_scalable(zf, yf, zs, ys, args.components, args.seed)
            if args.full_exact:
                r_ex, c_ex, p_ex = run_exact_grid(zf, yf, zs, ys)
                wall, cpu, how = c_ex.wall, c_ex.cpu, "full grid"
            else:
                p_ex = chosen[t]
                r_ex, c_ref = run_exact_single(zf, yf, zs, ys, p_ex["alpha"], p_ex["gamma"])
                wall = n_fits * t_cv.wall + c_ref.wall
                cpu = n_fits * t_cv.cpu + c_ref.cpu
                how = (
                    f"refit {c_ref.wall:.0f} s + {n_fits} x CV fold {t_cv.wall:.0f} s "
                    f"(extrapolated); params from grid at n={args.grid_n}"
                )
            if args.oracle_alphas:
                oracle = {
                    a: r_ex
                    if a == p_ex["alpha"]
                    else run_exact_single(zf, yf, zs, ys, a, p_ex["gamma"])[0]
                    for a in KRR_ALPHAS
                }
                print(f"  {t}: exact R^2 per alpha at gamma={p_ex['gamma']:.3g}: {oracle}")
                how += f"; best alpha in hindsight: R^2 {max(oracle.values()):.4f}"
            print(
                f"| {t} | {r_ex:.4f} | {r_sc:.4f} | {r_sc - r_ex:+.4f} | {wall:.0f} s "
                f"(cpu {cpu:.0f} s) | {fmt_t(c_sc)} | {wall / c_sc.wall:.0f}x | "
                f"{cpu / c_sc.cpu:.0f}x | {how} | "
                f"a={p_sc['alpha']:g}, g={p_sc['gamma']:.3g} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
