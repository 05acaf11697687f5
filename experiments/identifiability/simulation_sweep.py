"""The numerical simulation's figure: R^2 per latent factor vs style-change probability, for
each combination of statistical dependence and content-dependent style (Daunhawer et al.,
ICLR 2023, section 5.1).

    uv run experiments/identifiability/simulation_sweep.py                 # reduced CPU sweep
    uv run experiments/identifiability/simulation_sweep.py --p-values 0.75 --steps 2000
    uv run experiments/identifiability/simulation_sweep.py --preset paper --device cuda \\
        --eval-preset paper --p-values 0.25,0.5,0.75,1.0

Trains apps/identifiability/train.py and evaluates it with eval.py for every setting; writes
OUT/simulation.csv (one row per run, encoder and target) and OUT/simulation_r2.png. Runs that
already have a results.csv are reused, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "identifiability"
SETTINGS = {  # name -> train.py flags
    "independent": [],
    "statistical": ["--statistical-dependence"],
    "causal": ["--content-dependent-style"],
    "statistical+causal": ["--statistical-dependence", "--content-dependent-style"],
}
TARGETS = ("c", "s", "m1")


def run_once(args: argparse.Namespace, setting: str, p: float) -> list[dict]:
    """Train and evaluate one setting (unless done before); its results.csv rows."""
    out = Path(args.out) / f"{setting.replace('+', '_')}-p{p:.2f}"
    results = out / "results.csv"
    if not results.is_file():
        train = [sys.executable, str(APP / "train.py"), "--preset", args.preset,
                 "--style-change-prob", str(p), *SETTINGS[setting], "--device", args.device,
                 "--seed", str(args.seed), "--out", str(out), "--resume", *args.extra]  # fmt: skip
        if args.steps:
            train += ["--steps", str(args.steps)]
        evaluate = [sys.executable, str(APP / "eval.py"), "--preset", args.eval_preset,
                    "--run", str(out), "--device", args.device]  # fmt: skip
        for cmd in (train, evaluate):
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    with results.open(newline="") as f:
        return [{"setting": setting, "style_change_prob": p, **row} for row in csv.DictReader(f)]


def plot(rows: list[dict], path: Path) -> None:
    """One panel per dependence setting: nonlinear R^2 of c, s, m1 vs style-change prob."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings), 3.4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for target, color in zip(TARGETS, ("tab:green", "tab:orange", "tab:blue")):
            for encoder, style in (("hz1", "-"), ("hz2", "--")):
                sel = [r for r in rows if r["setting"] == setting and r["target"] == target
                       and r["encoder"] == encoder]  # fmt: skip
                xs = [float(r["style_change_prob"]) for r in sel]
                ys = [float(r["r2_nonlinear"]) for r in sel]
                label = f"{target} from {encoder}"
                ax.plot(xs, ys, style, marker="o", color=color, label=label)
        ax.set_title(setting)
        ax.set_xlabel("style-change probability")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("nonlinear R$^2$ (test)")
    axes[0, -1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default", help="train.py preset")
    parser.add_argument("--eval-preset", default="default", help="eval.py preset")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated")
    parser.add_argument("--p-values", default="0.5,1.0", help="style-change probabilities")
    parser.add_argument("--steps", type=int, default=0, help="override the preset's steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/identifiability-sweep")
    parser.add_argument("extra", nargs="*", help="more train.py flags after --")
    args = parser.parse_args()
    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {list(SETTINGS)}")

    rows = []
    for setting in args.settings.split(","):
        for p in (float(x) for x in args.p_values.split(",")):
            rows += run_once(args, setting, p)
    out = Path(args.out)
    with (out / "simulation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "simulation_r2.png")
    print(f"wrote {out / 'simulation.csv'} and {out / 'simulation_r2.png'}")


if __name__ == "__main__":
    main()
