"""The alignment study end to end: the synthetic sweep over data seeds, the demos, the sweep.

    uv run experiments/alignment/run_all.py --out runs/alignment-study
    uv run experiments/alignment/run_all.py --data-seeds 0 --skip demos,sweep

For each data seed (labels, heterogeneity maps): apps/alignment/emergence.py at its
default preset in OUT/emergence-s<seed>/ (a finished run is skipped, an unfinished one
resumed). Then the pipeline demos (perturb.py --demo, mmimdb.py --demo) and a clip_weight
sweep (clip_finetune.py --sweep, Ray). Writes OUT/emergence.md and OUT/emergence.csv
(rho of max alignment vs U per metric and D_phi: mean, std over data seeds, each seed)
and OUT/emergence_rho.png (rho per D_phi with std error bars).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "alignment"
METRICS = ("mutual_knn", "unbiased_cka")
DPHI = (1, 3, 5)
SWEEP = ("0", "0.1", "0.25", "0.5", "1", "2", "5", "10")


def _run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def emergence(out: Path, seed: int, extra: list[str]) -> dict:
    run = out / f"emergence-s{seed}"
    if not (run / "alignment.csv").is_file():
        command = [sys.executable, str(APP / "emergence.py"), "--seed", str(seed), "--out", str(run),
                   *extra]  # fmt: skip
        _run([*command, "--resume"] if (run / "config.json").is_file() else command)
    return json.loads((run / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/alignment-study")
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip", default="", help="comma-separated: demos, sweep")
    parser.add_argument("extra", nargs="*", help="more emergence.py flags after --")
    args = parser.parse_args()
    out = Path(args.out)
    skip = {s for s in args.skip.split(",") if s}
    results = {seed: emergence(out, seed, args.extra) for seed in args.data_seeds}

    from mm_eval.identifiability import write_results_csv
    from mm_train import atomic_write_text

    rows = []
    for metric in METRICS:
        for d in DPHI:
            values = [r[f"rho_{metric}_dphi{d}"] for r in results.values()]
            rows.append({"metric": metric, "dphi": d, "rho_mean": statistics.fmean(values),
                         "rho_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                         **{f"rho_seed{s}": v for s, v in zip(results, values)}})  # fmt: skip
    write_results_csv(rows, out / "emergence.csv")
    lines = ["| metric | D_phi | rho(max alignment, U): mean +- std | per data seed |",
             "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        seeds = " ".join(f"{r[f'rho_seed{s}']:+.3f}" for s in results)
        lines.append(f"| {r['metric']} | {r['dphi']} | {r['rho_mean']:+.3f} +- {r['rho_std']:.3f}"
                     f" | {seeds} |")  # fmt: skip
    atomic_write_text(out / "emergence.md", "\n".join(lines) + "\n")
    plot(rows, out / "emergence_rho.png")
    print("\n".join(lines))
    if "demos" not in skip:
        for script in ("perturb", "mmimdb"):
            target = out / f"{script}-demo"
            if not (target / "summary.json").is_file():
                _run([sys.executable, str(APP / f"{script}.py"), "--demo", "--overwrite",
                      "--out", str(target)])  # fmt: skip
    if "sweep" not in skip:
        _run([sys.executable, str(APP / "clip_finetune.py"), "--sweep", *SWEEP,
              "--out", str(out / "clip-sweep")])  # fmt: skip


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for k, metric in enumerate(METRICS):
        mine = [r for r in rows if r["metric"] == metric]
        ax.errorbar([r["dphi"] + 0.1 * k for r in mine], [r["rho_mean"] for r in mine],
                    yerr=[r["rho_std"] for r in mine], fmt="o-", capsize=3, label=metric)  # fmt: skip
    ax.axhline(-0.8, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("heterogeneity D_phi")
    ax.set_ylabel("Spearman rho(max alignment, U)")
    ax.set_ylim(-1.05, 0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
