"""Train every loss (or a batch-size sweep) with the same budget and compare retrieval and
zero-shot accuracy, mean +- std over seeds.

    uv run experiments/sogclr/compare.py --out runs/sogclr-compare                 # 9 losses x 3 seeds
    uv run experiments/sogclr/compare.py --losses clip,sogclr,isogclr \\
        --batch-sizes 16,32,64,128 --out runs/sogclr-batch                           # the sweep

Each run is apps/sogclr/train.py (default preset unless --preset) in OUT/<loss>-b<B>-s<seed>
with --resume: a finished run (summary.json present) is skipped, an interrupted one
continues. Writes OUT/results.csv (one row per run), OUT/table.md and OUT/table.csv (mean,
std and n per loss and batch size), OUT/summary.json (flat keys <metric>_<loss>_b<B>_mean
and _std) and a plot: OUT/losses.png (one bar per loss with std error bars) or, with
several batch sizes, OUT/batch_sweep.png (r_mean vs batch size per loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOSSES = (
    "clip", "sogclr", "isogclr", "info_sogclr", "hybrid_sogclr", "vicreg", "cyclip", "onlineclr",
    "siglip",
)  # fmt: skip
METRICS = ("r_mean", "txt_r1", "img_r1", "zeroshot_top1", "zeroshot_top5")


def run_once(args: argparse.Namespace, loss: str, batch: int, seed: int) -> dict:
    """Train (unless done before) one configuration; its summary.json."""
    out = Path(args.out) / f"{loss}-b{batch}-s{seed}"
    summary = out / "summary.json"
    if not summary.is_file():
        command = [
            sys.executable, str(ROOT / "apps/sogclr/train.py"), "--preset", args.preset,
            "--loss", loss, "--batch-size", str(batch), "--seed", str(seed),
            "--device", args.device, "--out", str(out), "--resume", *args.extra,
        ]  # fmt: skip
        if args.epochs:
            command += ["--epochs", str(args.epochs)]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads(summary.read_text())


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean, std (n-1) and n per (loss, batch size) for every metric."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["loss"], row["batch_size"]), []).append(row)
    table = []
    for (loss, batch), runs in groups.items():
        entry = {"loss": loss, "batch_size": batch, "n": len(runs)}
        for metric in METRICS:
            values = [float(r[metric]) for r in runs if r.get(metric) is not None]
            if values:
                entry[f"{metric}_mean"] = statistics.fmean(values)
                entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append(entry)
    return table


def markdown(table: list[dict]) -> str:
    """The table as Markdown, mean +- std (n seeds)."""
    lines = [
        "| loss | batch | " + " | ".join(METRICS) + " | seeds |",
        "|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for row in table:
        cells = [
            f"{row[f'{m}_mean']:.2f} +- {row[f'{m}_std']:.2f}" if f"{m}_mean" in row else "-"
            for m in METRICS
        ]
        lines.append(
            f"| {row['loss']} | {row['batch_size']} | " + " | ".join(cells) + f" | {row['n']} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: list[dict], path: Path, sweep: bool) -> None:
    """Bars per loss with std error bars, or r_mean vs batch size per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if sweep:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for loss in dict.fromkeys(r["loss"] for r in table):
            sel = sorted((r for r in table if r["loss"] == loss), key=lambda r: r["batch_size"])
            ax.errorbar(
                [r["batch_size"] for r in sel], [r["r_mean_mean"] for r in sel],
                yerr=[r["r_mean_std"] for r in sel], marker="o", capsize=3, label=loss,
            )  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("retrieval r_mean (%)")
        ax.legend()
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        names = [r["loss"] for r in table]
        for ax, metric in zip(axes, ("r_mean", "zeroshot_top1")):
            ax.bar(
                names, [r.get(f"{metric}_mean", 0.0) for r in table],
                yerr=[r.get(f"{metric}_std", 0.0) for r in table], capsize=3, color="tab:blue",
            )  # fmt: skip
            ax.set_ylabel(f"{metric} (%)")
            ax.tick_params(axis="x", rotation=45)
    for ax in fig.axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated")
    parser.add_argument("--batch-sizes", default="32", help="comma-separated, per process")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=0, help="override the preset's epochs")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel (each with --threads 1 when > 1)"
    )
    parser.add_argument("--out", default="runs/sogclr-compare")
    parser.add_argument("extra", nargs="*", help="more train.py flags after --")
    args = parser.parse_args()
    losses = args.losses.split(",")
    unknown = sorted(set(losses) - set(LOSSES))
    if unknown:
        parser.error(f"--losses: unknown {unknown}; choose from {', '.join(LOSSES)}")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    if args.jobs > 1:
        args.extra = [*args.extra, "--threads", "1", "--workers", "1"]
    grid = [(loss, batch, seed) for batch in batches for loss in losses for seed in seeds]
    # the first run writes the synthetic corpus (if missing): alone, so parallel runs do not race
    first = run_once(args, *grid[0])
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # threads wait on subprocesses
        summaries = [first, *pool.map(lambda job: run_once(args, *job), grid[1:])]
    rows = [
        {"loss": loss, "batch_size": batch, "seed": seed, **{m: s.get(m) for m in METRICS}}
        for (loss, batch, seed), s in zip(grid, summaries)
    ]
    out = Path(args.out)
    from mm_eval.identifiability import write_results_csv
    from mm_train import atomic_write_json, atomic_write_text

    table = aggregate(rows)
    write_results_csv(rows, out / "results.csv")
    write_results_csv(table, out / "table.csv")
    atomic_write_text(out / "table.md", markdown(table))
    flat = {
        f"{metric}_{r['loss']}_b{r['batch_size']}_{stat}": r[f"{metric}_{stat}"]
        for r in table
        for metric in METRICS
        for stat in ("mean", "std")
        if f"{metric}_{stat}" in r
    }
    atomic_write_json(out / "summary.json", flat)
    sweep = len(batches) > 1
    plot(table, out / ("batch_sweep.png" if sweep else "losses.png"), sweep)
    print(markdown(table))
    print(f"wrote {out / 'table.md'}, {out / 'results.csv'} and the plot")


if __name__ == "__main__":
    main()
