"""The depth effect of the GHM paper on CPU: deep vs shallow transformers vs additive evidence.

Trains the CLIP task on the `depth` preset of apps/ghm (a tree where adding up leaf
evidence is far from Bayes) for every variant, seed and p, then scores every trained
model, exact BP and the additive baseline (the best tempered naive-Bayes root posterior,
its alpha fitted on separate samples) on the same held-out samples of each p:

    uv run experiments/ghm/depth_effect.py --seeds 0,1,2 --out runs/depth   # 9 runs of 48000 steps
    uv run experiments/ghm/depth_effect.py --seeds 0 --variants standard,shallow -- --steps 6000

Any subset of variants can be scored; the paired difference to standard (and the
`*_minus_standard` keys) needs standard in the same call. The held-out samples depend only
on the tree and p, so a variant scored alone later sees the same samples.

At the preset's 48000 steps a run takes 40 (shallow) to 75 (guided) minutes of one core,
the 9 runs about 4.5 hours of two cores; `-- --steps N` trades the budget for time.

Finished runs are reused and stopped ones resumed, so an interrupted call continues.
Writes OUT/summary.json (flat keys at the first p: `standard_excess`, `shallow_excess`,
`guided_excess`, `additive_excess`: held-out excess over Bayes relative to Bayes, means
over seeds; `shallow_minus_standard` and its paired standard error, in risk units),
OUT/depth_effect_runs.csv (one row per run), OUT/depth_effect.csv (per p and model:
mean +- std over seeds), OUT/depth_effect.md and OUT/depth_effect.png (excess vs p with
+-1 SE bands).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "apps" / "ghm"))

from _runs import train_once  # noqa: E402

MODELS = ("standard", "shallow", "guided")


def parse_list(parser: argparse.ArgumentParser, text: str, cast, flag: str) -> list:
    """A comma-separated list; bad or empty input exits 2 (parser.error) naming the flag."""
    try:
        values = [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"{flag} {text!r}: expected a comma-separated list")
    if not values:
        parser.error(f"{flag} {text!r}: empty")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument(
        "--p-values", default="0.3", help="flip probabilities (first: summary; the preset's p)"
    )
    parser.add_argument("--variants", default=",".join(MODELS), help="of " + ",".join(MODELS))
    parser.add_argument("--preset", default="depth", help="apps/ghm preset to train")
    parser.add_argument("--samples", type=int, default=20_000, help="held-out samples per p")
    parser.add_argument("--fit-samples", type=int, default=4_000, help="to fit the alpha")
    parser.add_argument("--jobs", type=int, default=2, help="training runs side by side")
    parser.add_argument("--device", default="cpu", help="device of training and scoring")
    parser.add_argument("--out", default="runs/depth", help="output folder")
    parser.add_argument("extra", nargs="*", help="more train.py flags, after --")
    args = parser.parse_args(argv)
    args.seeds = parse_list(parser, args.seeds, int, "--seeds")
    args.p_values = parse_list(parser, args.p_values, float, "--p-values")
    args.variants = parse_list(parser, args.variants, str, "--variants")
    for v in args.variants:
        if v not in MODELS:
            parser.error(f"--variants: {v!r} is not one of {MODELS}")
    for p in args.p_values:
        if not 0.0 <= p <= 1.0:
            parser.error(f"--p-values: {p} is not in [0, 1]")
    for name in ("samples", "fit_samples", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    return args


def run_dir(args, p: float, variant: str, seed: int) -> Path:
    return Path(args.out) / "runs" / f"p{p:.2f}-{variant}-seed{seed}"


def train_all(args) -> None:
    """Every (p, variant, seed) run, --jobs at a time, with progress and an ETA."""
    jobs = [(p, v, s) for p in args.p_values for v in args.variants for s in args.seeds]
    start, done = time.monotonic(), 0

    def one(job):
        p, variant, seed = job
        flags = ["--preset", args.preset, "--task", "clip", "--variant", variant, "--p", str(p),
                 "--seed", str(seed), "--device", args.device, *args.extra]  # fmt: skip
        out = run_dir(args, p, variant, seed)
        return train_once(out, flags, log=out.with_suffix(".log"))

    todo = [job for job in jobs if not (run_dir(args, *job) / "summary.json").is_file()]
    if len(todo) < len(jobs):
        print(f"{len(jobs) - len(todo)} of {len(jobs)} runs finished before; reusing them")
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for job, _ in zip(todo, pool.map(one, todo), strict=True):
            done += 1
            elapsed = time.monotonic() - start
            eta = elapsed / done * (len(todo) - done)
            print(
                f"[{done}/{len(todo)}] trained p={job[0]} {job[1]} seed {job[2]} | "
                f"elapsed {elapsed / 60:.1f} min | eta {eta / 60:.1f} min",
                flush=True,
            )


def score_all(args) -> list[dict]:
    """One row per (p, model, seed): held-out risk, excess over Bayes and, for every model
    but standard, the paired difference to the standard run of the same seed."""
    import torch
    from ghm_evaluation import batch_scores
    from ghm_tasks import build_ghm, load_run

    from mm_data.ghm import (
        additive_clip_losses,
        bayes_clip_losses,
        best_additive_alpha,
        sample_clip,
        standard_error,
    )

    device = torch.device(args.device)
    rows = []
    for p in args.p_values:
        runs = {(v, s): load_run(run_dir(args, p, v, s), device) for v in args.variants
                for s in args.seeds}  # fmt: skip
        cfg = next(iter(runs.values()))[0]
        ghm = build_ghm(cfg, device)
        gen = torch.Generator(device=device).manual_seed(10_000)
        alpha = best_additive_alpha(ghm, args.fit_samples, gen, k=cfg.num_negatives)
        batches = [sample_clip(ghm, min(1000, args.samples - i), gen, k=cfg.num_negatives)
                   for i in range(0, args.samples, 1000)]  # fmt: skip
        bayes = torch.cat([bayes_clip_losses(ghm, b).double() for b in batches])
        losses = {"additive": torch.cat([additive_clip_losses(ghm, b, alpha) for b in batches])}
        for (variant, seed), (run_cfg, model, clip) in runs.items():
            losses[(variant, seed)] = torch.cat(
                [batch_scores(run_cfg, model, clip, ghm, b)["model"] for b in batches]
            )
        b = float(bayes.mean())
        for key, loss in losses.items():
            variant, seed = key if isinstance(key, tuple) else (key, None)
            row = {"p": p, "model": variant, "seed": "" if seed is None else seed,
                   "risk": float(loss.mean()), "bayes_risk": b,
                   "excess": float(loss.mean()) - b, "excess_se": standard_error(loss - bayes),
                   "relative_excess": (float(loss.mean()) - b) / b,
                   "alpha": alpha if seed is None else ""}  # fmt: skip
            if seed is not None and variant != "standard" and ("standard", seed) in losses:
                diff = loss - losses[("standard", seed)]
                row["minus_standard"], row["minus_standard_se"] = (
                    float(diff.mean()),
                    standard_error(diff),
                )
            rows.append(row)
            print(f"p={p} {variant} seed {row['seed']}: excess {100 * row['relative_excess']:.1f}%")
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """Per (p, model): mean and std over seeds of the relative excess, its standard error
    (over seeds, or the held-out one for the seed-free additive baseline), and the mean
    paired difference to standard with the standard error of that mean (held-out noise
    of the per-seed differences combined, sqrt(sum se^2) / n)."""
    table = []
    for p in dict.fromkeys(r["p"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows if r["p"] == p):
            sel = [r for r in rows if r["p"] == p and r["model"] == model]
            rel = [r["relative_excess"] for r in sel]
            mean = statistics.fmean(rel)
            std = statistics.stdev(rel) if len(rel) > 1 else 0.0
            # over seeds; one seed: the held-out standard error of the excess
            se = (
                std / math.sqrt(len(rel))
                if len(rel) > 1
                else sel[0]["excess_se"] / sel[0]["bayes_risk"]
            )
            entry = {"p": p, "model": model, "seeds": len(sel), "relative_excess": mean,
                     "relative_excess_std": std, "relative_excess_se": se,
                     "bayes_risk": sel[0]["bayes_risk"]}  # fmt: skip
            if "minus_standard" in sel[0]:
                entry["minus_standard"] = statistics.fmean(r["minus_standard"] for r in sel)
                entry["minus_standard_se"] = math.sqrt(
                    sum(r["minus_standard_se"] ** 2 for r in sel)
                ) / len(sel)
                entry["minus_standard_min_z"] = min(
                    r["minus_standard"] / r["minus_standard_se"] if r["minus_standard_se"] > 0
                    else math.nan
                    for r in sel
                )  # fmt: skip
            table.append(entry)
    return table


def markdown(table: list[dict]) -> str:
    lines = [
        "| p | Bayes CLIP | model | held-out excess over Bayes (mean +- std over seeds) | "
        "minus standard, paired (mean +- SE) | smallest per-seed z |",
        "|---|---|---|---|---|---|",
    ]
    for e in table:
        diff = (
            f"{e['minus_standard']:+.4f} +- {e['minus_standard_se']:.4f}"
            if "minus_standard" in e
            else "-"
        )
        z = f"{e['minus_standard_min_z']:.1f}" if "minus_standard" in e else "-"
        spread = f" +- {100 * e['relative_excess_std']:.1f}%" if e["seeds"] > 1 else ""
        lines.append(
            f"| {e['p']} | {e['bayes_risk']:.4f} | {e['model']} | "
            f"{100 * e['relative_excess']:.1f}%{spread} | {diff} | {z} |"
        )
    return "\n".join(lines) + "\n"


def plot_one_p(path: Path, rows: list[dict], table: list[dict]) -> None:
    """One p: per model its seeds (dots) and their mean +- 1 SE over seeds (bar), with the
    additive excess and half of it (the depth target) as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    models = [e for e in table if e["model"] != "additive"]
    additive = next((e for e in table if e["model"] == "additive"), None)
    for i, e in enumerate(models):
        seeds = [100 * r["relative_excess"] for r in rows if r["model"] == e["model"]]
        ax.scatter([i] * len(seeds), seeds, s=14, color="0.5", zorder=3)
        ax.errorbar(i + 0.12, 100 * e["relative_excess"], yerr=100 * e["relative_excess_se"],
                    fmt="o", capsize=4, color=f"C{i}", zorder=4)  # fmt: skip
    if additive is not None:
        level = 100 * additive["relative_excess"]
        ax.axhline(level, color="k", lw=1, label=f"additive evidence ({level:.1f}%)")
        ax.axhline(level / 2, color="k", lw=1, ls="--", label="half the additive excess")
    ax.set_xticks(range(len(models)), [e["model"] for e in models])
    ax.set_xlim(-0.5, len(models) - 0.5)
    ax.set_ylim(0, 1.12 * max(100 * r["relative_excess"] for r in rows))
    ax.set_ylabel("held-out CLIP excess over Bayes (%)")
    ax.set_title(f"p = {table[0]['p']}: seeds (grey), mean +- 1 SE", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_all(args)
    rows = score_all(args)
    table = aggregate(rows)

    from ghm_evaluation import plot

    from mm_eval.identifiability import write_results_csv
    from mm_train import atomic_write_json

    write_results_csv(rows, out / "depth_effect_runs.csv")
    write_results_csv(table, out / "depth_effect.csv")
    text = markdown(table)
    (out / "depth_effect.md").write_text(text)
    if len(args.p_values) == 1:
        plot_one_p(out / "depth_effect.png", rows, table)
    else:
        models = list(dict.fromkeys(e["model"] for e in table))
        series = {
            m: (
                [100 * e["relative_excess"] for e in table if e["model"] == m],
                [100 * e["relative_excess_se"] for e in table if e["model"] == m],
            )
            for m in models
        }
        plot(out / "depth_effect.png", args.p_values, series, "flip probability p",
             "held-out CLIP excess over Bayes (%)")  # fmt: skip
    first = args.p_values[0]
    summary = {"p": first, "seeds": args.seeds, "samples": args.samples}
    for e in table:
        if e["p"] == first:
            summary[f"{e['model']}_excess"] = e["relative_excess"]
            summary[f"{e['model']}_excess_std"] = e["relative_excess_std"]
            if "minus_standard" in e:
                summary[f"{e['model']}_minus_standard"] = e["minus_standard"]
                summary[f"{e['model']}_minus_standard_se"] = e["minus_standard_se"]
    atomic_write_json(out / "summary.json", summary)
    print(text)
    print(f"wrote {out / 'summary.json'}, {out / 'depth_effect.md'}, {out / 'depth_effect.png'}")
    return summary


if __name__ == "__main__":
    main()
