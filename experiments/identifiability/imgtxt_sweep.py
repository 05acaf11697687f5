"""The image/text figure: prediction of every factor from each modality's encoding vs the
encoding size (Daunhawer et al., ICLR 2023, section 5.2).

    uv run apps/identifiability/prepare_data.py --out data/m3di-small      # once
    uv run experiments/identifiability/imgtxt_sweep.py                     # reduced CPU sweep
    uv run experiments/identifiability/imgtxt_sweep.py --preset paper_imgtxt --device cuda \\
        --datapath data/m3di --sizes 2,4,6,8,10

Trains apps/identifiability/train.py (imgtxt) and evaluates it with eval.py for every encoding
size; writes OUT/imgtxt.csv and OUT/imgtxt_factors.png (discrete factors: MLP accuracy with
chance dotted; continuous factors: kernel ridge R^2). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "identifiability"


def run_once(args: argparse.Namespace, size: int) -> list[dict]:
    """Train and evaluate one encoding size (unless done before); its results.csv rows."""
    out = Path(args.out) / f"enc{size}"
    results = out / "results.csv"
    if not results.is_file():
        train = [sys.executable, str(APP / "train.py"), "--preset", args.preset,
                 "--encoding-size", str(size), "--device", args.device, "--out", str(out), "--resume",
                 *args.extra]  # fmt: skip
        if args.datapath:
            train += ["--datapath", args.datapath]
        if args.steps:
            train += ["--steps", str(args.steps)]
        evaluate = [sys.executable, str(APP / "eval.py"), "--run", str(out),
                    "--device", args.device]  # fmt: skip
        for cmd in (train, evaluate):
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    with results.open(newline="") as f:
        return [{"encoding_size": size, **row} for row in csv.DictReader(f)]


def score(row: dict) -> float:
    """The nonlinear predictor's score: MLP accuracy (discrete) or kernel ridge R^2."""
    return float(row["acc_mlp"] if row["factor_type"] == "discrete" else row["r2_krreg"])


def plot(rows: list[dict], path: Path) -> None:
    """Two panels per modality: discrete factors (accuracy) and continuous factors (R^2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (("image", "discrete"), ("image", "continuous"), ("text", "discrete"))
    for ax, (modality, kind) in zip(axes, panels):
        names = list(dict.fromkeys(
            r["factor_name"] for r in rows if r["modality"] == modality and r["factor_type"] == kind
        ))  # fmt: skip
        for name in names:
            sel = [r for r in rows if r["modality"] == modality and r["factor_name"] == name]
            xs = [int(r["encoding_size"]) for r in sel]
            line = ax.plot(xs, [score(r) for r in sel], marker="o", label=name)[0]
            if kind == "discrete":
                ax.plot(xs, [float(r["chance"]) for r in sel], ":", color=line.get_color())
        ax.set_title(
            f"{modality}: {kind} ({'MLP accuracy' if kind == 'discrete' else 'KRR R$^2$'})"
        )
        ax.set_xlabel("encoding size")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="imgtxt", help="train.py preset")
    parser.add_argument("--datapath", default="", help="data root; empty = the preset's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default="2,4,8", help="encoding sizes")
    parser.add_argument("--steps", type=int, default=0, help="override the preset's steps")
    parser.add_argument("--out", default="runs/identifiability-imgtxt-sweep")
    parser.add_argument("extra", nargs="*", help="more train.py flags after --")
    args = parser.parse_args()

    rows = []
    for size in (int(x) for x in args.sizes.split(",")):
        rows += run_once(args, size)
    out = Path(args.out)
    with (out / "imgtxt.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "imgtxt_factors.png")
    print(f"wrote {out / 'imgtxt.csv'} and {out / 'imgtxt_factors.png'}")


if __name__ == "__main__":
    main()
